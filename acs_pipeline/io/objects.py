"""What the storage backends share: relative keys, listed objects and the errors they raise.

Errors come in three kinds, because each calls for a different reaction:

- content: :class:`ObjectNotFoundError` -- this one object is missing; a caller that reads many
  files records it against that file (quarantine) and goes on;
- transient: :class:`TransientStorageError` -- throttling, 5xx, a connection reset, a timeout,
  still failing after the client's own retries; the operation may succeed later, so nothing may
  be recorded as done and the caller fails (a retry of the step, or the next run, reads again);
- access: :class:`StorageAccessError` -- denied, unknown or expired credentials, no such bucket;
  no retry can help: fail at once, naming bucket and prefix.

Anything else is a plain :class:`StorageError` (a bad key, a bad request): not retried either.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

TMP_SUFFIX = ".acs-tmp"  # temporary files of writes in flight (never listed)
READ_TIMEOUT_S = 30.0  # how long an S3 read waits for data (the default of Storage)


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI (or endpoint) and the reason."""


class TransientStorageError(StorageError):
    """A fault that may clear (throttling, 5xx, reset connection, timeout) outlasted the retries."""


class StorageAccessError(StorageError):
    """Permanent: access denied, bad or expired credentials, missing bucket. Never retried."""

    def __init__(self, message: str, bucket: str = "", prefix: str = ""):
        super().__init__(message)
        self.bucket, self.prefix = bucket, prefix


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The requested key does not exist (for example deleted between listing and reading)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class StoredObject:
    """One object: key relative to the root, size in bytes, and a change tag.

    ``etag`` is the S3 ETag (quotes removed) or ``f'{size}-{mtime_ns}'`` for local files.
    """

    key: str
    size: int
    etag: str


class FreshLock:
    """A lock that pickles as a new, unlocked one (for objects sent to worker processes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __reduce__(self) -> tuple[type[FreshLock], tuple[()]]:
        return FreshLock, ()


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Validate a relative key (posix, not absolute, no ``..``); returns it without ``./``."""
    if not isinstance(key, str):
        raise StorageError(f"storage key must be a string, got {type(key).__name__}")
    if key == "" and allow_empty:
        return key
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or "\\" in key or ".." in parts or not parts:
        raise StorageError(f"invalid storage key {key!r}: expected a relative posix path")
    trailing = "/" if key.endswith("/") else ""
    return "/".join(p for p in parts if p != ".") + trailing
