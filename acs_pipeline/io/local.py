"""The local-directory backend of :class:`~acs_pipeline.io.storage.Storage`.

Every write goes through a temporary sibling, ``fsync`` and ``os.replace``, so a crash leaves the
previous file readable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from acs_pipeline.io.objects import (
    TMP_SUFFIX,
    ObjectNotFoundError,
    StorageAccessError,
    StorageError,
    StoredObject,
    TransientStorageError,
)

_CHUNK = 1 << 20

# The process umask, read once, so that atomically written files get ordinary permissions
# (mkstemp creates them 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (no-op where directories cannot be opened)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: str, path: Path) -> None:
    """Give the finished temporary file ``tmp`` ordinary permissions and move it to ``path``."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temporary sibling; replace it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def os_error(exc: OSError, what: str, path: Path) -> StorageError:
    """An ``OSError`` as a storage error of its kind: denied -> access, an I/O error (a network
    mount) -> transient, anything else (a folder where a file was expected) -> plain."""
    message = f"cannot {what} {path}: {exc}"
    if isinstance(exc, PermissionError):
        return StorageAccessError(message, "", str(path.parent))
    if isinstance(exc, TimeoutError | InterruptedError) or exc.errno in (5, 110, 116):
        return TransientStorageError(message)  # EIO, ETIMEDOUT, ESTALE
    return StorageError(message)


def _copy(source: Path, target: Path) -> None:
    if target.exists() and os.path.samefile(source, target):
        return
    with atomic_file(target) as f, open(source, "rb") as src:
        shutil.copyfileobj(src, f, _CHUNK)


class LocalBackend:
    """A local directory addressed by validated relative keys."""

    def __init__(self, root: str):
        self.path = Path(root).expanduser().absolute()
        self.root = str(self.path)

    def file(self, key: str) -> Path:
        return self.path / key

    def uri(self, key: str) -> str:
        return str(self.path / key) if key else self.root

    # ---- writes

    def write_bytes(self, key: str, data: bytes) -> None:
        with atomic_file(self.file(key)) as f:
            f.write(data)

    @contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        with atomic_file(self.file(key)) as f:
            yield f

    def put_file(self, key: str, local: Path) -> None:
        _copy(local, self.file(key))

    # ---- reads

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.file(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no such file: {self.uri(key)}", key) from None
        except OSError as exc:
            raise os_error(exc, "read", self.file(key)) from exc

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return open(self.file(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no such file: {self.uri(key)}", key) from None
        except OSError as exc:
            raise os_error(exc, "read", self.file(key)) from exc

    def get_file(self, key: str, local: Path) -> None:
        source = self.file(key)
        if not source.is_file():
            raise ObjectNotFoundError(f"no such file: {self.uri(key)}", key)
        _copy(source, local)

    def exists(self, key: str) -> bool:
        return self.file(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.file(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no such file: {self.uri(key)}", key) from None

    def delete(self, key: str) -> None:
        """Delete a file and the folders that leaves empty (as on S3, a prefix without keys
        does not exist); the root stays."""
        path = self.file(key)
        with suppress(FileNotFoundError):
            path.unlink()
        for parent in path.parents:
            if parent == self.path or self.path not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone)
                break

    def list(self, prefix: str) -> list[StoredObject]:
        """Files whose key starts with ``prefix`` (unsorted); none when the root is missing."""
        head = prefix.rpartition("/")[0]
        start = self.path / head if head else self.path
        objects: list[StoredObject] = []
        # (directory, its key prefix): keys are built as strings, not Paths (3x faster listing)
        stack = [(str(start), f"{head}/" if head else "")] if start.is_dir() else []
        try:
            while stack:
                directory, base = stack.pop()
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir():
                            stack.append((entry.path, f"{base}{entry.name}/"))
                        elif entry.is_file() and not entry.name.endswith(TMP_SUFFIX):
                            key = base + entry.name
                            if key.startswith(prefix):
                                st = entry.stat()
                                objects.append(
                                    StoredObject(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")
                                )
        except OSError as exc:
            raise os_error(exc, "list", Path(self.uri(prefix))) from exc
        return objects

    def check(self) -> None:
        if not self.path.is_dir():
            raise StorageError(f"root {self.root} is not a directory")
        try:
            with os.scandir(self.path) as it:
                empty = next(it, None) is None
        except OSError as exc:
            raise StorageError(f"cannot list root {self.root}: {exc}") from exc
        if empty:
            raise StorageError(f"root {self.root} is empty")
