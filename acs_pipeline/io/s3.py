"""The S3 backend of :class:`~acs_pipeline.io.storage.Storage`, through boto3.

Writes are one ``PutObject`` (or a multipart upload, which also becomes visible only when
complete). botocore's standard retry mode retries throttling, 5xx and connection errors with
exponential backoff and jitter; short connect timeouts make a wrong endpoint fail in seconds. A
body that breaks off while it is streamed (which botocore does not retry) is read again a
bounded number of times. Credentials come from boto3's default chain (environment, shared
files, profiles, container and instance roles) and refresh when they expire. Every failure is a
:class:`StorageError` whose message names the object or prefix, the endpoint and the reason, of
one of three kinds (see :mod:`acs_pipeline.io.objects`): a missing object
(:class:`ObjectNotFoundError`), a fault that outlasted the retries (:class:`TransientStorageError`)
or a permanent access fault (:class:`StorageAccessError`: denied, bad or expired credentials, no
such bucket), which botocore does not retry and whose message names the bucket and prefix.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from acs_pipeline.io.local import publish
from acs_pipeline.io.objects import (
    READ_TIMEOUT_S,
    TMP_SUFFIX,
    FreshLock,
    ObjectNotFoundError,
    StorageAccessError,
    StorageError,
    StoredObject,
    TransientStorageError,
)
from acs_pipeline.io.s3_errors import (
    CLIENT_ERRORS,
    NOT_FOUND_CODES,
    TRANSIENT_READ_ERRORS,
    UPLOAD_ERRORS,
    describe_s3_error,
    error_kind,
    s3_error_code,
)

CONNECT_TIMEOUT_S = 3.0
_MAX_BACKOFF_S = 5.0
_TAIL = 1 << 16  # bytes open_read fetches from the end: pyarrow reads a Parquet footer there


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``('bucket', 'a/b')``; raises ValueError for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URI: {uri!r}")
    return parsed.netloc, parsed.path.strip("/")


def make_s3_client(endpoint_url: str | None, region: str | None, *, max_attempts: int = 5,
                   max_pool_connections: int = 10, read_timeout: float = READ_TIMEOUT_S) -> Any:
    """A boto3 S3 client: standard retry mode, short timeouts, refreshable credentials.

    ``max_attempts`` counts every attempt, the first included (botocore's ``total_max_attempts``).
    """
    config = Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=min(CONNECT_TIMEOUT_S, read_timeout),
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


class S3Backend:
    """``s3://bucket/prefix`` addressed by validated relative keys; picklable (the client is
    rebuilt lazily in the new process)."""

    def __init__(self, root: str, *, endpoint_url: str | None, region: str | None,
                 max_attempts: int, max_pool_connections: int, page_size: int,
                 backoff_s: float, read_timeout: float = READ_TIMEOUT_S):
        try:
            self.bucket, self.prefix = parse_s3_uri(root)
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.base = f"{self.prefix}/" if self.prefix else ""
        self.endpoint_url, self.region = endpoint_url, region
        self.max_attempts, self.page_size, self.backoff_s = max_attempts, page_size, backoff_s
        self.max_pool_connections, self.read_timeout = max_pool_connections, read_timeout
        self._client: Any = None
        self._lock = FreshLock()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # boto3 clients do not pickle

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe), created on first use."""
        with self._lock:
            if self._client is None:
                self._client = make_s3_client(
                    self.endpoint_url, self.region, max_attempts=self.max_attempts,
                    max_pool_connections=self.max_pool_connections,
                    read_timeout=self.read_timeout)
            return self._client

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.base}{key}" if key else self.root

    def _fail(self, exc: BaseException, key: str, operation: str,
              client: Any = None) -> StorageError:
        """The failure as a :class:`StorageError` of its kind (missing, transient, access)."""
        client = client or self.client
        endpoint = client.meta.endpoint_url
        attempts = (client.meta.config.retries or {}).get("total_max_attempts", "all")
        message = describe_s3_error(exc, uri=self.uri(key), endpoint=endpoint,
                                    operation=operation)
        kind = error_kind(exc)
        if kind == "missing" and key:
            return ObjectNotFoundError(message, key)
        if kind == "access":
            folder = (self.base + key).rpartition("/")[0] if key else self.prefix
            prefix = f"{folder}/" if folder else ""
            return StorageAccessError(
                f"{message} [bucket {self.bucket!r}, prefix {prefix!r}; not retried: fix the "
                "credentials, permissions or bucket name]", self.bucket, prefix)
        if kind == "transient":
            return TransientStorageError(
                f"{message} [still failing after {attempts} attempts; transient, "
                "a later attempt may succeed]")
        return StorageError(message)

    # ---- writes

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.base + key, Body=data)
        except CLIENT_ERRORS as exc:
            raise self._fail(exc, key, "PutObject") from exc

    @contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """Buffer in a local temporary file; upload it when the block succeeds."""
        with tempfile.TemporaryFile(suffix=TMP_SUFFIX) as f:
            yield f
            f.flush()
            f.seek(0)
            try:
                self.client.upload_fileobj(f, self.bucket, self.base + key)
            except UPLOAD_ERRORS as exc:
                raise self._fail(exc, key, "PutObject") from exc

    def put_file(self, key: str, local: Path) -> None:
        try:
            self.client.upload_file(str(local), self.bucket, self.base + key)
        except UPLOAD_ERRORS as exc:
            raise self._fail(exc, key, "PutObject") from exc

    # ---- reads

    def read_bytes(self, key: str) -> bytes:
        return self._get(key)[0]

    def _get(self, key: str, byte_range: str | None = None) -> tuple[bytes, dict[str, Any]]:
        """The object's bytes (or a ``bytes=a-b`` range of them) and the response; a body that
        breaks off is read again, up to ``max_attempts`` times with backoff."""
        extra = {"Range": byte_range} if byte_range else {}
        last: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:  # botocore has retried throttling, 5xx and connection errors here already
                response = self.client.get_object(Bucket=self.bucket, Key=self.base + key,
                                                  **extra)
            except CLIENT_ERRORS as exc:
                raise self._fail(exc, key, "GetObject") from exc
            body = response["Body"]  # not `with body`: that yields the unverified raw stream
            try:
                return body.read(), response
            except TRANSIENT_READ_ERRORS as exc:
                last = exc
            finally:
                body.close()
            if attempt < self.max_attempts:
                delay = min(self.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                time.sleep(delay * (0.5 + random.random() / 2))
        raise TransientStorageError(
            f"GetObject {self.uri(key)} (endpoint {self.client.meta.endpoint_url}): body read "
            f"failed {self.max_attempts} times, last: {type(last).__name__}: {last}"
        )

    def open_read(self, key: str) -> IO[bytes]:
        """A seekable file whose first request fetches the object's last 64 KiB (and learns
        its size), so a Parquet footer costs one GET; other reads are ranged GETs."""
        tail, response = self._get(key, f"bytes=-{_TAIL}")
        content_range = response.get("ContentRange")  # absent when the whole object came back
        size = int(content_range.rpartition("/")[2]) if content_range else len(tail)
        return _RangedReader(self, key, size, tail)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.base + key, tmp)
            publish(tmp, local)
        except CLIENT_ERRORS as exc:
            raise self._fail(exc, key, "GetObject") from exc
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.base + key)
        except bce.ClientError as exc:
            if s3_error_code(exc) in NOT_FOUND_CODES:
                return None
            raise self._fail(exc, key, "HeadObject") from exc
        except bce.BotoCoreError as exc:
            raise self._fail(exc, key, "HeadObject") from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFoundError(f"HeadObject {self.uri(key)}: no such object", key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.base + key)
        except CLIENT_ERRORS as exc:
            raise self._fail(exc, key, "DeleteObject") from exc

    def list(self, prefix: str) -> list[StoredObject]:
        """Objects whose key starts with ``prefix`` (paginated ``ListObjectsV2``)."""
        objects = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.base + prefix,
                PaginationConfig={"PageSize": self.page_size})
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.base):]
                    if key and not key.endswith("/"):
                        etag = str(item.get("ETag", "")).strip('"')
                        objects.append(StoredObject(key, int(item["Size"]), etag))
        except CLIENT_ERRORS as exc:
            raise self._fail(exc, prefix, "ListObjectsV2") from exc
        return objects

    def check(self) -> None:
        """``ListObjectsV2`` with ``MaxKeys=1`` through a client that retries once."""
        client = make_s3_client(self.endpoint_url, self.region, max_attempts=2,
                                read_timeout=self.read_timeout)
        try:
            page = client.list_objects_v2(Bucket=self.bucket, Prefix=self.base, MaxKeys=1)
        except CLIENT_ERRORS as exc:
            raise self._fail(exc, "", "ListObjectsV2", client) from exc
        if not page.get("KeyCount", len(page.get("Contents", []))):
            raise StorageError(
                f"ListObjectsV2 {self.root} (endpoint {client.meta.endpoint_url}): no objects "
                "under this prefix; is the root right?"
            )


class _RangedReader(io.RawIOBase):
    """A seekable read-only file over one object: reads inside the fetched ``tail`` (the
    object's last bytes) cost nothing, others one ranged ``GetObject`` each."""

    def __init__(self, backend: S3Backend, key: str, size: int, tail: bytes):
        self._backend, self._key, self._size, self._pos = backend, key, size, 0
        self._tail, self._tail_at = tail, size - len(tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, start + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        if self._pos >= self._tail_at:
            at = self._pos - self._tail_at
            data = self._tail[at:at + n]
        else:
            data = self._backend._get(self._key, f"bytes={self._pos}-{self._pos + n - 1}")[0]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
