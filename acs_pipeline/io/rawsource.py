"""The raw dataset (a local directory or ``s3://bucket/prefix``): listing and concurrent reads.

S3 goes through boto3 with botocore's standard retry mode (throttling, 5xx and connection errors,
exponential backoff with jitter) and short connect timeouts, so a wrong endpoint fails in seconds.
A body that breaks off while it is streamed (which botocore does not retry) is read again a
bounded number of times. Every failure is a :class:`RawSourceError` whose message names the
object or prefix, the endpoint and the reason (missing bucket, denied permission, no credentials,
unreachable endpoint).
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import botocore.exceptions as bce
import urllib3.exceptions

from acs_pipeline.io.storage import describe_s3_error, make_s3_client, parse_s3_uri, s3_error_code

__all__ = ["MissingObjectError", "RawObject", "RawSource", "RawSourceError"]

# Failures while streaming a body: botocore has already returned the response, so it does not
# retry them; we do.
_TRANSIENT_READ_ERRORS: tuple[type[BaseException], ...] = (
    bce.IncompleteReadError,
    bce.ResponseStreamingError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)
_NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")
_MAX_BACKOFF_S = 5.0


class RawSourceError(RuntimeError):
    """The raw dataset cannot be listed or read; the message says where and why."""


class MissingObjectError(RawSourceError):
    """An object is missing (e.g. deleted between listing and reading)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class RawObject:
    """One raw object: key relative to the dataset root, size in bytes, and a change tag.

    ``etag`` is the S3 ETag (quotes removed) or ``f'{size}-{mtime_ns}'`` for local files.
    """

    key: str
    size: int
    etag: str


def _check_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or "\\" in key or ".." in parts:
        raise RawSourceError(f"invalid raw object key {key!r}: expected a relative posix path")
    return key


class RawSource:
    """A raw dataset root, local directory or ``s3://bucket/prefix``, read by relative keys."""

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_workers: int = 8,
        max_attempts: int = 5,
        page_size: int = 1000,
        backoff_s: float = 0.2,
    ):
        if max_workers < 1 or max_attempts < 1 or not 1 <= page_size <= 1000:
            raise ValueError("need max_workers >= 1, max_attempts >= 1, 1 <= page_size <= 1000")
        if not root:
            raise RawSourceError("raw dataset root is empty")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.max_workers = max_workers
        self.max_attempts = max_attempts
        self.page_size = page_size
        self.backoff_s = backoff_s
        self.is_s3 = root.startswith("s3://")
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if self.is_s3:
            try:
                self.bucket, self.prefix = parse_s3_uri(root)
            except ValueError as exc:
                raise RawSourceError(str(exc)) from None
            self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            self._base = f"{self.prefix}/" if self.prefix else ""
        else:
            self._root_path = Path(root).expanduser().absolute()
            self.root = str(self._root_path)

    def __repr__(self) -> str:
        return f"RawSource({self.root!r}, endpoint_url={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_pool"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The reader threads, created on first use and kept (one pool per source)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="rawsource")
            return self._pool

    # ---- S3 plumbing

    @property
    def client(self) -> Any:
        """The boto3 S3 client (S3 roots only; thread-safe), created on first use."""
        if not self.is_s3:
            raise RawSourceError(f"{self.root} is a local directory: it has no S3 client")
        with self._lock:
            if self._client is None:
                self._client = make_s3_client(
                    self.endpoint_url,
                    self.region,
                    max_attempts=self.max_attempts,
                    max_pool_connections=self.max_workers,
                )
            return self._client

    def uri(self, key: str = "") -> str:
        """Full URI (``s3://...``) or path of a key, or of the root for ``''``."""
        if not key:
            return self.root
        if self.is_s3:
            return f"s3://{self.bucket}/{self._base}{key}"
        return str(self._root_path / key)

    def _error(self, exc: BaseException, key: str, operation: str, client: Any = None) -> Exception:
        client = client or self.client
        message = describe_s3_error(
            exc, uri=self.uri(key), endpoint=client.meta.endpoint_url, operation=operation
        )
        if key and s3_error_code(exc) in _NOT_FOUND_CODES:
            return MissingObjectError(key, message)
        return RawSourceError(message)

    # ---- public API

    def check(self) -> None:
        """One cheap call proving the root is reachable, readable and not empty.

        S3: ``ListObjectsV2`` with ``MaxKeys=1`` through a client that retries once, so a wrong
        endpoint, bucket, permission or missing credentials raise :class:`RawSourceError` fast.
        """
        if not self.is_s3:
            if not self._root_path.is_dir():
                raise RawSourceError(f"raw dataset root {self.root} is not a directory")
            try:
                with os.scandir(self._root_path) as it:
                    empty = next(it, None) is None
            except OSError as exc:
                raise RawSourceError(f"cannot list raw dataset root {self.root}: {exc}") from exc
            if empty:
                raise RawSourceError(f"raw dataset root {self.root} is empty")
            return
        client = make_s3_client(self.endpoint_url, self.region, max_attempts=2)
        try:
            page = client.list_objects_v2(Bucket=self.bucket, Prefix=self._base, MaxKeys=1)
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise self._error(exc, "", "ListObjectsV2", client) from exc
        if not page.get("KeyCount", len(page.get("Contents", []))):
            raise RawSourceError(
                f"ListObjectsV2 {self.root} (endpoint {client.meta.endpoint_url}): no objects "
                "under this prefix; is the dataset root right?"
            )

    def list(self, prefix: str = "", suffix: str | None = None) -> list[RawObject]:
        """Objects whose key starts with ``prefix`` (and ends with ``suffix``), sorted by key."""
        if prefix:
            _check_key(prefix)
        objects = self._list_s3(prefix) if self.is_s3 else self._list_local(prefix)
        if suffix:
            objects = [o for o in objects if o.key.endswith(suffix)]
        return sorted(objects, key=lambda o: o.key)

    def _list_s3(self, prefix: str) -> list[RawObject]:
        objects = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self._base + prefix,
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._base) :]
                    if key and not key.endswith("/"):
                        etag = str(item.get("ETag", "")).strip('"')
                        objects.append(RawObject(key, int(item["Size"]), etag))
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise self._error(exc, "", "ListObjectsV2") from exc
        return objects

    def _list_local(self, prefix: str) -> list[RawObject]:
        if not self._root_path.is_dir():
            raise RawSourceError(f"raw dataset root {self.root} is not a directory")
        head = prefix.rpartition("/")[0]
        start = self._root_path / head if head else self._root_path
        objects: list[RawObject] = []
        # (directory, its key prefix): keys are built as strings, not Paths (3x faster listing)
        stack = [(str(start), f"{head}/" if head else "")] if start.is_dir() else []
        try:
            while stack:
                directory, base = stack.pop()
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir():
                            stack.append((entry.path, f"{base}{entry.name}/"))
                        elif entry.is_file():
                            key = base + entry.name
                            if key.startswith(prefix):
                                st = entry.stat()
                                objects.append(
                                    RawObject(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")
                                )
        except OSError as exc:
            raise RawSourceError(f"cannot list {self.uri(prefix)}: {exc}") from exc
        return objects

    def read(self, key: str) -> bytes:
        """The bytes of one object; :class:`MissingObjectError` if it is gone."""
        _check_key(key)
        if not self.is_s3:
            try:
                return (self._root_path / key).read_bytes()
            except FileNotFoundError:
                raise MissingObjectError(key, f"no such file: {self.uri(key)}") from None
            except OSError as exc:
                raise RawSourceError(f"cannot read {self.uri(key)}: {exc}") from exc
        return self._read_s3(key)

    def _read_s3(self, key: str) -> bytes:
        last: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:  # botocore has retried throttling, 5xx and connection errors here already
                response = self.client.get_object(Bucket=self.bucket, Key=self._base + key)
            except (bce.BotoCoreError, bce.ClientError) as exc:
                raise self._error(exc, key, "GetObject") from exc
            body = response["Body"]  # not `with body`: that yields the unverified raw stream
            try:
                return body.read()
            except _TRANSIENT_READ_ERRORS as exc:
                last = exc
            finally:
                body.close()
            if attempt < self.max_attempts:
                delay = min(self.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                time.sleep(delay * (0.5 + random.random() / 2))
        raise RawSourceError(
            f"GetObject {self.uri(key)} (endpoint {self.client.meta.endpoint_url}): body read "
            f"failed {self.max_attempts} times, last: {type(last).__name__}: {last}"
        )

    def _read_or_error(self, key: str) -> bytes | Exception:
        try:
            return self.read(key)
        except Exception as exc:  # returned to the caller, who quarantines the key
            return exc

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

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists."""
        _check_key(key)
        if not self.is_s3:
            return (self._root_path / key).is_file()
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._base + key)
        except bce.ClientError as exc:
            if s3_error_code(exc) in _NOT_FOUND_CODES:
                return False
            raise self._error(exc, key, "HeadObject") from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, key, "HeadObject") from exc
        return True
