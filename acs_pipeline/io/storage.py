"""The storage root, a local directory or ``s3://bucket/prefix``: atomic writes, reads, listing.

Every write is atomic, so a crash leaves the previous good output readable:

* local: a temporary file in the destination directory, ``fsync``, then ``os.replace``;
* S3: one ``PutObject`` (or a multipart upload, which also becomes visible only when complete).

Credentials come from the standard AWS chain (environment, shared files, profiles, roles); the
endpoint and region are arguments. Also holds the S3 helpers shared with :mod:`rawsource`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

import boto3
import pyarrow.fs as pafs
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

__all__ = [
    "ObjectNotFoundError",
    "Storage",
    "StorageError",
    "describe_s3_error",
    "make_s3_client",
    "parse_s3_uri",
    "s3_error_code",
    "sha256_bytes",
    "sha256_file",
]

_TMP_SUFFIX = ".acs-tmp"
_CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0

# The process umask, read once, so that atomically written files get ordinary permissions
# (mkstemp creates them 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# The IAM permission each S3 operation needs, for error messages.
_PERMISSION = {
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
}


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the reason."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The requested key does not exist under the storage root."""


# --------------------------------------------------------------------------- S3 helpers


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``('bucket', 'a/b')``; raises ValueError for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URI: {uri!r}")
    return parsed.netloc, parsed.path.strip("/")


def make_s3_client(
    endpoint_url: str | None,
    region: str | None,
    *,
    max_attempts: int = 5,
    max_pool_connections: int = 10,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
) -> Any:
    """A boto3 S3 client: standard retry mode (throttling, 5xx, connection errors), short timeouts.

    ``max_attempts`` counts every attempt, the first included (botocore's ``total_max_attempts``).

    Credentials are resolved by boto3's default chain when the first request is signed.
    """
    config = Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``'NoSuchKey'``, ``'404'`` for HEAD), else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def describe_s3_error(exc: BaseException, *, uri: str, endpoint: str, operation: str) -> str:
    """One clear sentence for a botocore failure: what, where, and which permission or setting."""
    where = f"{operation} {uri} (endpoint {endpoint})"
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, S3UploadFailedError) and isinstance(inner, BotoCoreError | ClientError):
        exc = inner  # boto3's transfer manager wraps the real error
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"{where}: no usable AWS credentials found (looked at AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the shared credentials and config files, "
            f"container and instance roles): {exc}"
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return f"{where}: S3 endpoint {endpoint} is unreachable: {exc}"
    if isinstance(exc, ReadTimeoutError):
        return f"{where}: S3 endpoint {endpoint} timed out: {exc}"
    code = s3_error_code(exc)
    if code is None:
        return f"{where}: {type(exc).__name__}: {exc}"
    permission = _PERMISSION.get(operation, f"s3:{operation}")
    bucket = urlparse(uri).netloc
    reasons = {
        "NoSuchBucket": f"bucket {bucket!r} does not exist",
        "AccessDenied": f"access denied: needs permission {permission}",
        "403": f"access denied (HTTP 403): needs permission {permission}",
        "AllAccessDisabled": f"access to bucket {bucket!r} is disabled",
        "InvalidAccessKeyId": "credentials rejected: the access key id is unknown to the endpoint",
        "SignatureDoesNotMatch": "credentials rejected: the secret key does not match",
        "ExpiredToken": "credentials rejected: the session token has expired",
        "InvalidToken": "credentials rejected: the session token is invalid",
        "NoSuchKey": "no such object",
        "404": "no such object (HTTP 404)",
    }
    reason = reasons.get(code, f"{code}: {exc}")
    return f"{where}: {reason}"


# --------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --------------------------------------------------------------------------- local helpers


def _check_rel(rel: str, *, allow_empty: bool = False) -> str:
    """Validate a relative key: posix, no absolute path, no ``..``; returns it without ``./``."""
    if not isinstance(rel, str):
        raise StorageError(f"storage key must be a string, got {type(rel).__name__}")
    if rel == "" and allow_empty:
        return rel
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or ".." in parts or not parts:
        raise StorageError(f"invalid storage key {rel!r}: expected a relative posix path")
    trailing = "/" if rel.endswith("/") else ""
    return "/".join(p for p in parts if p != ".") + trailing


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (no-op where directories cannot be opened)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _atomic_local_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temporary sibling; replace it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- Storage


class Storage:
    """A storage root (local directory or ``s3://bucket/prefix``) addressed by relative keys.

    Keys are posix paths relative to the root, e.g. ``'tensors/ecg_3by4/shard=ab.parquet'``.
    For atomic Parquet writes use ``with storage.open_write(rel) as f: pq.write_table(t, f)``;
    :meth:`pyarrow_fs` is meant for reads (pyarrow's local writes are not atomic).
    """

    def __init__(self, root: str, *, endpoint_url: str | None = None, region: str | None = None):
        if not root:
            raise StorageError("storage root is empty")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.is_s3 = root.startswith("s3://")
        self._client: Any = None
        if self.is_s3:
            try:
                self.bucket, self.prefix = parse_s3_uri(root)
            except ValueError as exc:
                raise StorageError(str(exc)) from None
            self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        else:
            if root.startswith("file://"):
                root = urlparse(root).path
            self.bucket, self.prefix = "", ""
            self._root_path = Path(root).expanduser().absolute()
            self.root = str(self._root_path)

    def __repr__(self) -> str:
        return f"Storage({self.root!r}, endpoint_url={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # boto3 clients do not pickle; rebuilt lazily
        return state

    # ---- addressing

    @property
    def client(self) -> Any:
        """The boto3 S3 client (S3 roots only), created on first use."""
        if not self.is_s3:
            raise StorageError(f"{self.root} is a local root: it has no S3 client")
        if self._client is None:
            self._client = make_s3_client(self.endpoint_url, self.region)
        return self._client

    def _key(self, rel: str) -> str:
        rel = _check_rel(rel)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _path(self, rel: str) -> Path:
        return self._root_path / _check_rel(rel)

    def uri(self, rel: str) -> str:
        """Absolute path (local) or ``s3://`` URI of a relative key."""
        if self.is_s3:
            return f"s3://{self.bucket}/{self._key(rel)}"
        return str(self._path(rel))

    def local_path(self, rel: str) -> Path | None:
        """The local file path of ``rel`` for local roots (parents created), None on S3."""
        if self.is_s3:
            return None
        path = self._path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _fail(self, exc: BaseException, uri: str, operation: str) -> StorageError:
        endpoint = self.client.meta.endpoint_url
        message = describe_s3_error(exc, uri=uri, endpoint=endpoint, operation=operation)
        if s3_error_code(exc) in ("NoSuchKey", "404"):
            return ObjectNotFoundError(message)
        return StorageError(message)

    # ---- writes

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` to ``rel`` atomically; returns the URI."""
        if not self.is_s3:
            with _atomic_local_file(self._path(rel)) as f:
                f.write(data)
            return self.uri(rel)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, self.uri(rel), "PutObject") from exc
        return self.uri(rel)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary file to stream into; published atomically only when the block succeeds.

        On S3 the data is buffered in a local temporary file and uploaded on success.
        """
        if not self.is_s3:
            with _atomic_local_file(self._path(rel)) as f:
                yield f
            return
        key = self._key(rel)
        with tempfile.TemporaryFile(suffix=_TMP_SUFFIX) as f:
            yield f
            f.flush()
            f.seek(0)
            try:
                self.client.upload_fileobj(f, self.bucket, key)
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                raise self._fail(exc, self.uri(rel), "PutObject") from exc

    def put_file(self, rel: str, local: str | os.PathLike[str]) -> str:
        """Publish a finished local file (e.g. a Lightning checkpoint) at ``rel`` atomically."""
        local = Path(local)
        if not local.is_file():
            raise StorageError(f"cannot store {local} as {self.uri(rel)}: not a file")
        if not self.is_s3:
            target = self._path(rel)
            if target.exists() and os.path.samefile(target, local):
                return self.uri(rel)
            with _atomic_local_file(target) as f, open(local, "rb") as src:
                shutil.copyfileobj(src, f, _CHUNK)
            return self.uri(rel)
        try:
            self.client.upload_file(str(local), self.bucket, self._key(rel))
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._fail(exc, self.uri(rel), "PutObject") from exc
        return self.uri(rel)

    # ---- reads

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of ``rel``; ``ObjectNotFoundError`` if it does not exist."""
        if not self.is_s3:
            try:
                return self._path(rel).read_bytes()
            except FileNotFoundError:
                raise ObjectNotFoundError(f"no such file: {self.uri(rel)}") from None
            except OSError as exc:
                raise StorageError(f"cannot read {self.uri(rel)}: {exc}") from exc
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"]
            try:  # not `with body`: that yields the raw stream without the length check
                return body.read()
            finally:
                body.close()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, self.uri(rel), "GetObject") from exc

    def get_file(self, rel: str, local: str | os.PathLike[str]) -> Path:
        """Copy ``rel`` to the local path ``local`` (atomically); returns ``local``."""
        local = Path(local)
        if not self.is_s3:
            source = self._path(rel)
            if not source.is_file():
                raise ObjectNotFoundError(f"no such file: {self.uri(rel)}")
            if local.exists() and os.path.samefile(source, local):
                return local
            with _atomic_local_file(local) as f, open(source, "rb") as src:
                shutil.copyfileobj(src, f, _CHUNK)
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=_TMP_SUFFIX)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(rel), tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, local)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, self.uri(rel), "GetObject") from exc
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        return local

    def _head(self, rel: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
        except ClientError as exc:
            if s3_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(exc, self.uri(rel), "HeadObject") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, self.uri(rel), "HeadObject") from exc

    def exists(self, rel: str) -> bool:
        """Whether the object/file ``rel`` exists."""
        if not self.is_s3:
            return self._path(rel).is_file()
        return self._head(rel) is not None

    def size(self, rel: str) -> int:
        """Size in bytes of ``rel``; ``ObjectNotFoundError`` if it does not exist."""
        if not self.is_s3:
            try:
                return self._path(rel).stat().st_size
            except FileNotFoundError:
                raise ObjectNotFoundError(f"no such file: {self.uri(rel)}") from None
        head = self._head(rel)
        if head is None:
            raise ObjectNotFoundError(f"HeadObject {self.uri(rel)}: no such object")
        return int(head["ContentLength"])

    def delete(self, rel: str) -> None:
        """Delete ``rel``; deleting a missing key is not an error.

        Locally, folders the deletion leaves empty are removed too (as on S3, a prefix
        without keys does not exist).
        """
        if not self.is_s3:
            path = self._path(rel)
            with suppress(FileNotFoundError):
                path.unlink()
            root = self._root_path
            for parent in path.parents:
                if parent == root or root not in parent.parents:
                    break
                try:
                    parent.rmdir()
                except OSError:  # not empty (or already gone)
                    break
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, self.uri(rel), "DeleteObject") from exc

    def list(self, prefix: str = "") -> list[str]:
        """Sorted relative keys starting with ``prefix`` (a plain string prefix, as on S3).

        Temporary files of writes in flight are not listed.
        """
        prefix = _check_rel(prefix, allow_empty=True) if prefix else ""
        if not self.is_s3:
            return self._list_local(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if not key.endswith("/"):
                        keys.append(key[len(base) :])
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"{self.root}/{prefix}", "ListObjectsV2") from exc
        return sorted(keys)

    def _list_local(self, prefix: str) -> list[str]:
        head, _, _ = prefix.rpartition("/")
        start = self._root_path / head if head else self._root_path
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self._root_path).as_posix()
            for name in files:
                if name.endswith(_TMP_SUFFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # ---- pyarrow

    def pyarrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """``(filesystem, base)`` for ``pyarrow.parquet``: read ``f'{base}/{rel}'`` from it.

        On S3 the filesystem uses the same endpoint, region and (boto3-resolved) credentials.
        """
        if not self.is_s3:
            self._root_path.mkdir(parents=True, exist_ok=True)
            return pafs.LocalFileSystem(), self.root
        credentials = boto3.session.Session(region_name=self.region).get_credentials()
        if credentials is None:
            raise StorageError(
                describe_s3_error(
                    NoCredentialsError(),
                    uri=self.root,
                    endpoint=self.client.meta.endpoint_url,
                    operation="S3FileSystem",
                )
            )
        frozen = credentials.get_frozen_credentials()
        endpoint = urlparse(self.client.meta.endpoint_url)
        custom = not endpoint.netloc.endswith(".amazonaws.com")
        fs = pafs.S3FileSystem(
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token,
            region=self.client.meta.region_name,
            scheme=endpoint.scheme or "https",
            endpoint_override=endpoint.netloc if custom else None,
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=READ_TIMEOUT_S,
        )
        return fs, f"{self.bucket}/{self.prefix}".rstrip("/")
