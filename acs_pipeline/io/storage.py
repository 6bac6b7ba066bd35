"""A root of objects, local directory or ``s3://bucket/prefix``, addressed by relative keys.

One class for the raw dataset and for the storage root (tensors, tables, checkpoints, reports):
atomic writes, reads (whole, ranged, or many concurrently), listing with sizes and change tags,
and clear errors. The work is done by :class:`~acs_pipeline.io.local.LocalBackend` or
:class:`~acs_pipeline.io.s3.S3Backend`.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from acs_pipeline.io.local import LocalBackend
from acs_pipeline.io.objects import (
    READ_TIMEOUT_S,
    FreshLock,
    ObjectNotFoundError,
    StorageError,
    StoredObject,
    check_key,
)

if TYPE_CHECKING:
    from acs_pipeline.io.s3 import S3Backend


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a local file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Storage:
    """A local directory or ``s3://bucket/prefix`` read and written by relative posix keys.

    Keys look like ``'tensors/ecg_3by4/shard=ab/part-0f.parquet'``. Writes are atomic: for
    Parquet use ``with storage.open_write(rel) as f: pq.write_table(t, f)``. ``max_workers``
    threads serve :meth:`read_many`; on S3, ``max_attempts`` bounds every request's attempts
    and ``read_timeout_s`` how long one waits for data. Errors are of the kinds described in
    :mod:`acs_pipeline.io.objects` (missing, transient, access).
    """

    def __init__(self, root: str, *, endpoint_url: str | None = None, region: str | None = None,
                 max_workers: int = 8, max_attempts: int = 5, page_size: int = 1000,
                 backoff_s: float = 0.2, read_timeout_s: float = READ_TIMEOUT_S):
        if max_workers < 1 or max_attempts < 1 or not 1 <= page_size <= 1000:
            raise ValueError("need max_workers >= 1, max_attempts >= 1, 1 <= page_size <= 1000")
        if not root:
            raise StorageError("storage root is empty")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.max_workers = max_workers
        self.is_s3 = root.startswith("s3://")
        self._backend: LocalBackend | S3Backend
        if self.is_s3:
            # imported here: boto3 takes 0.1 s to import, which local roots (and every
            # process that only loads the definitions) need not pay
            from acs_pipeline.io.s3 import S3Backend

            self._backend = S3Backend(
                root, endpoint_url=self.endpoint_url, region=self.region,
                max_attempts=max_attempts, max_pool_connections=max(max_workers, 10),
                page_size=page_size, backoff_s=backoff_s, read_timeout=read_timeout_s)
            self.bucket, self.prefix = self._backend.bucket, self._backend.prefix
        else:
            self._backend = LocalBackend(urlparse(root).path if root.startswith("file://")
                                         else root)
            self.bucket, self.prefix = "", ""
        self.root = self._backend.root
        self._pool: ThreadPoolExecutor | None = None
        self._lock = FreshLock()

    def __repr__(self) -> str:
        return f"Storage({self.root!r}, endpoint_url={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # threads do not pickle

    @property
    def client(self) -> Any:
        """The boto3 S3 client (S3 roots only), created on first use."""
        if not self.is_s3:
            raise StorageError(f"{self.root} is a local root: it has no S3 client")
        return self._backend.client

    # ---- addressing

    def uri(self, rel: str = "") -> str:
        """Absolute path (local) or ``s3://`` URI of a relative key, or of the root for ``''``."""
        return self._backend.uri(check_key(rel, allow_empty=True))

    def local_path(self, rel: str) -> Path | None:
        """The local file path of ``rel`` for local roots (parents created), None on S3."""
        if not isinstance(self._backend, LocalBackend):
            return None
        path = self._backend.file(check_key(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ---- writes

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` to ``rel`` atomically; returns the URI."""
        self._backend.write_bytes(check_key(rel), data)
        return self.uri(rel)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary file to stream into; published atomically only when the block succeeds
        (on S3 it is buffered in a local temporary file and uploaded on success)."""
        with self._backend.open_write(check_key(rel)) as f:
            yield f

    def put_file(self, rel: str, local: str | os.PathLike[str]) -> str:
        """Publish a finished local file (e.g. a Lightning checkpoint) at ``rel`` atomically."""
        local = Path(local)
        if not local.is_file():
            raise StorageError(f"cannot store {local} as {self.uri(rel)}: not a file")
        self._backend.put_file(check_key(rel), local)
        return self.uri(rel)

    # ---- reads

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of ``rel``; ``ObjectNotFoundError`` if it does not exist."""
        return self._backend.read_bytes(check_key(rel))

    def open_read(self, rel: str) -> IO[bytes]:
        """A seekable binary file of ``rel``; on S3 each read is a ranged GET (for Parquet
        footers; read whole objects with :meth:`read_bytes`)."""
        return self._backend.open_read(check_key(rel))

    def get_file(self, rel: str, local: str | os.PathLike[str]) -> Path:
        """Copy ``rel`` to the local path ``local`` (atomically); returns ``local``."""
        local = Path(local)
        self._backend.get_file(check_key(rel), local)
        return local

    def exists(self, rel: str) -> bool:
        """Whether the object/file ``rel`` exists."""
        return self._backend.exists(check_key(rel))

    def size(self, rel: str) -> int:
        """Size in bytes of ``rel``; ``ObjectNotFoundError`` if it does not exist."""
        return self._backend.size(check_key(rel))

    def delete(self, rel: str) -> None:
        """Delete ``rel``; deleting a missing key is not an error. Locally, folders the
        deletion leaves empty are removed too."""
        self._backend.delete(check_key(rel))

    def list_objects(self, prefix: str = "", suffix: str | None = None) -> list[StoredObject]:
        """Objects whose key starts with ``prefix`` (a plain string prefix, as on S3) and ends
        with ``suffix``, sorted by key, with size and ETag. Temporary files are not listed."""
        objects = self._backend.list(check_key(prefix, allow_empty=True))
        if suffix:
            objects = [o for o in objects if o.key.endswith(suffix)]
        return sorted(objects, key=lambda o: o.key)

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix``."""
        return [o.key for o in self.list_objects(prefix)]

    def check(self) -> None:
        """One cheap call proving the root is reachable, readable and not empty (a wrong
        endpoint, bucket, permission or missing credentials raise ``StorageError`` fast)."""
        self._backend.check()

    # ---- concurrent reads

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The reader threads, created on first use and kept."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="storage")
            return self._pool

    def _read_or_error(self, rel: str) -> bytes | Exception:
        try:
            return self.read_bytes(rel)
        except Exception as exc:  # returned to the caller, who quarantines the key
            return exc

    def read_files(self, keys: Sequence[str]
                   ) -> Iterator[tuple[str, bytes | ObjectNotFoundError]]:
        """:meth:`read_many` for files that must each be accounted for: a missing object comes
        back as its error (the caller quarantines that file); any other failure (transient
        after the retries, access, anything else) is raised, so no file is recorded as done, or
        as bad, because the store failed."""
        for key, result in self.read_many(keys):
            if isinstance(result, Exception) and not isinstance(result, ObjectNotFoundError):
                raise result
            yield key, result  # type: ignore[misc]

    def read_many(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Read ``keys`` concurrently (``max_workers`` threads), yielding ``(key, result)`` in
        input order. ``result`` is the bytes, or the exception for that key (not raised).

        At most ``2 * max_workers`` reads are in flight, so memory stays bounded however slowly
        the caller consumes the results.
        """
        window = 2 * self.max_workers
        pool = self.pool
        pending: deque[tuple[str, Future[bytes | Exception]]] = deque()
        it = iter(keys)
        try:
            for key in it:
                pending.append((key, pool.submit(self._read_or_error, key)))
                if len(pending) >= window:
                    break
            while pending:
                key, future = pending.popleft()
                next_key = next(it, None)
                if next_key is not None:
                    pending.append((next_key, pool.submit(self._read_or_error, next_key)))
                yield key, future.result()
        finally:  # a consumer that stops early leaves no reads queued
            for _, future in pending:
                future.cancel()
