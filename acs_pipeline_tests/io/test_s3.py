"""The S3 backend against a moto server on loopback: pagination, retries, ranged reads, and
errors that name the bucket, prefix, endpoint and permission."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import botocore.credentials
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials

from acs_pipeline.io.objects import (
    ObjectNotFoundError,
    StorageAccessError,
    StorageError,
    TransientStorageError,
)
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.faulty_s3 import FaultyS3Proxy
from acs_pipeline_tests.s3_fixtures import s3_client, upload_tree


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FakeRaw:
    """The raw HTTP body of a canned botocore response."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def read(self, amt: int | None = None, **_kw) -> bytes:
        end = len(self._data) if amt is None else min(len(self._data), self._pos + amt)
        chunk, self._pos = self._data[self._pos : end], end
        return chunk

    def stream(self, *_a, **_kw):
        yield self.read()

    def close(self) -> None:
        pass


def _error_response(request, status: int, code: str) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _FakeRaw(body))


def _inject(client, operation: str, responses: list) -> list[int]:
    """Answer the next calls of ``operation`` with ``responses`` (None = real request); returns
    a one-element list counting every attempt that reached the wire."""
    calls = [0]
    queue = list(responses)

    def handler(request, **_kw):
        calls[0] += 1
        if queue:
            make = queue.pop(0)
            return make(request) if make else None
        return None

    client.meta.events.register(f"before-send.s3.{operation}", handler)
    return calls


def test_s3_listing_is_paginated(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    for i in range(120):
        (tmp_path / "d" / f"{i % 7:02x}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / f"{i % 7:02x}" / f"{i:04d}.npz").write_bytes(b"x" * i)
    upload_tree(s3_server, s3_bucket, "root", tmp_path / "d")
    src = Storage(f"s3://{s3_bucket}/root", endpoint_url=s3_server, page_size=50)
    calls = _inject(src.client, "ListObjectsV2", [])
    objects = src.list_objects()
    assert calls[0] == 3  # 50 + 50 + 20
    assert len(objects) == 120
    assert [o.key for o in objects] == sorted(o.key for o in objects)
    assert sum(o.size for o in objects) == sum(range(120))


def test_footer_is_one_get(s3_server: str, s3_bucket: str) -> None:
    st = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    with st.open_write("t.parquet") as f:
        pq.write_table(pa.table({"a": np.random.default_rng(0).random(20_000)}), f)  # 160 kB
    calls: list[str] = []
    st.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    with st.open_read("t.parquet") as f:
        assert pq.read_metadata(f).num_rows == 20_000
    assert calls == ["GetObject"]  # the last 64 KiB, with the size in its Content-Range
    with st.open_read("t.parquet") as f:
        assert f.read(4) == b"PAR1" and calls == ["GetObject"] * 3  # a ranged GET


def test_5xx_and_throttling_are_retried(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=b"payload")
    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=4)
    calls = _inject(
        src.client,
        "GetObject",
        [
            lambda r: _error_response(r, 500, "InternalError"),
            lambda r: _error_response(r, 503, "SlowDown"),
        ],
    )
    assert src.read_bytes("k.npz") == b"payload"
    assert calls[0] == 3

    src2 = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=2)
    calls2 = _inject(
        src2.client, "GetObject", [lambda r: _error_response(r, 500, "InternalError")] * 3
    )
    with pytest.raises(StorageError, match="GetObject s3://.*/p/k.npz.*InternalError"):
        src2.read_bytes("k.npz")
    assert calls2[0] == 2


def test_no_such_key_is_not_retried(s3_server: str, s3_bucket: str) -> None:
    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=5)
    calls = _inject(src.client, "GetObject", [])
    with pytest.raises(ObjectNotFoundError, match="absent.npz"):
        src.read_bytes("absent.npz")
    assert calls[0] == 1


def test_broken_body_is_read_again(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=b"0123456789")

    def truncated(request) -> AWSResponse:
        headers = {"Content-Length": "10", "ETag": '"x"'}
        return AWSResponse(request.url, 200, headers, _FakeRaw(b"01234"))

    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=3, backoff_s=0.01)
    calls = _inject(src.client, "GetObject", [truncated, truncated])
    assert src.read_bytes("k.npz") == b"0123456789"
    assert calls[0] == 3

    src2 = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=2, backoff_s=0.01)
    _inject(src2.client, "GetObject", [truncated, truncated, truncated])
    [(key, result)] = list(src2.read_many(["k.npz"]))
    assert key == "k.npz"
    assert isinstance(result, StorageError)
    assert "k.npz" in str(result) and "failed 2 times" in str(result)
    assert "IncompleteReadError" in str(result)


def test_wrong_bucket_is_named(s3_server: str) -> None:
    src = Storage("s3://acs-missing-bucket/ed-bwh-ecg/v1", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="bucket 'acs-missing-bucket' does not exist"):
        src.check()
    with pytest.raises(StorageError, match="acs-missing-bucket"):
        src.list_objects()


def test_empty_prefix_fails_check(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="ed-bwh-ecg/v2/x", Body=b"1")
    with pytest.raises(StorageError, match=f"s3://{s3_bucket}/ed-bwh-ecg/v1 .*no objects"):
        Storage(f"s3://{s3_bucket}/ed-bwh-ecg/v1", endpoint_url=s3_server).check()


def test_access_denied_names_the_permission(s3_server: str, s3_bucket: str) -> None:
    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    _inject(src.client, "ListObjectsV2", [lambda r: _error_response(r, 403, "AccessDenied")])
    with pytest.raises(StorageError, match=f"s3://{s3_bucket}/p.*s3:ListBucket"):
        src.list_objects()


def test_unreachable_endpoint_fails_fast(s3_bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=endpoint)
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"endpoint {endpoint} is unreachable"):
        src.check()
    assert time.monotonic() - start < 5
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"{endpoint} is unreachable"):
        src.read_bytes("k.npz")
    assert time.monotonic() - start < 10


def test_missing_credentials_are_explained(
    s3_server: str, s3_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none" / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    src = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    start = time.monotonic()
    with pytest.raises(StorageError, match="no usable AWS credentials"):
        src.check()
    assert time.monotonic() - start < 5
    storage = Storage(f"s3://{s3_bucket}/out", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="no usable AWS credentials"):
        storage.write_bytes("a", b"1")
    with pytest.raises(StorageError, match="no usable AWS credentials"):
        storage.open_read("a.parquet")  # Parquet reads go through the same boto3 client


def test_missing_bucket_names_it(s3_server: str, tmp_path: Path) -> None:
    storage = Storage("s3://no-such-bucket-xyz/p", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-xyz' does not exist"):
        storage.write_bytes("a", b"1")
    (tmp_path / "f").write_bytes(b"1")
    with pytest.raises(StorageError, match="/p/a .*bucket 'no-such-bucket-xyz' does not exist"):
        storage.put_file("a", tmp_path / "f")
    with pytest.raises(StorageError, match="no-such-bucket-xyz"), storage.open_write("a") as f:
        f.write(b"1")
    with pytest.raises(StorageError, match="no-such-bucket-xyz"):
        storage.list("")


def test_expiring_credentials_are_refreshed(s3_server: str, s3_bucket: str, monkeypatch) -> None:
    """Credentials that expire (a task role's) are fetched again by the client, for Parquet
    reads too: nothing holds a frozen copy."""
    fetched: list[str] = []

    def fetch() -> dict[str, str]:
        fetched.append(f"token-{len(fetched)}")
        expiry = datetime.now(UTC) + timedelta(seconds=1)  # always inside the refresh window
        return {"access_key": "testing", "secret_key": "testing", "token": fetched[-1],
                "expiry_time": expiry.isoformat()}

    class Role(CredentialProvider):
        METHOD = "test-role"

        def load(self) -> RefreshableCredentials:
            return RefreshableCredentials.create_from_metadata(fetch(), fetch, self.METHOD)

    monkeypatch.setattr(botocore.credentials, "create_credential_resolver",
                        lambda session, **kw: CredentialResolver([Role()]))
    st = Storage(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    sent: list[str] = []

    def record(request, **_kw) -> None:
        sent.append(request.headers["X-Amz-Security-Token"])

    st.client.meta.events.register("before-send.s3", record)
    with st.open_write("t.parquet") as f:
        pq.write_table(pa.table({"a": [1, 2, 3]}), f)
    assert pq.read_table(pa.BufferReader(st.read_bytes("t.parquet"))).num_rows == 3
    with st.open_read("t.parquet") as f:
        assert pq.read_metadata(f).num_rows == 3
    assert len(sent) == 3 and len(set(sent)) == 3  # PUT, GET, GET of the last 64 KiB
    assert {t.decode() if isinstance(t, bytes) else t for t in sent} <= set(fetched)


# ---- through a fault-injecting proxy in front of the real server (acs_pipeline_tests.faulty_s3)


def _via(proxy: FaultyS3Proxy, bucket: str, **kwargs) -> Storage:
    kwargs = {"max_attempts": 4, "backoff_s": 0.01, **kwargs}
    return Storage(f"s3://{bucket}/p", endpoint_url=proxy.endpoint, **kwargs)


def test_proxy_transient_faults_are_retried_until_they_clear(
    faulty_s3: FaultyS3Proxy, s3_server: str, s3_bucket: str
) -> None:
    data = bytes(range(256)) * 64
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=data)
    src = _via(faulty_s3, s3_bucket, read_timeout_s=0.5)
    target = f"/{s3_bucket}/p/k.npz"
    for fault, times in [("slowdown", 1), ("error500", 3), ("reset", 3), ("stall", 1)]:
        faulty_s3.clear()
        faulty_s3.inject(fault, target, times=times)
        before = faulty_s3.count(target)
        assert src.read_bytes("k.npz") == data, fault
        assert faulty_s3.count(target) - before == times + 1, fault  # every fault, then success
        assert faulty_s3.count(target, outcome=fault) >= times


def test_proxy_persistent_transient_fault_is_transient_after_bounded_attempts(
    faulty_s3: FaultyS3Proxy, s3_server: str, s3_bucket: str
) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=b"x" * 1000)
    src = _via(faulty_s3, s3_bucket, max_attempts=3)
    target = f"/{s3_bucket}/p/k.npz"
    faulty_s3.inject("error500", target, times=100)
    with pytest.raises(TransientStorageError, match="k.npz.*InternalError.*3 attempts"):
        src.read_bytes("k.npz")
    assert faulty_s3.count(target) == 3
    faulty_s3.clear()
    faulty_s3.inject("reset", target, times=100)
    with pytest.raises(TransientStorageError, match="body read failed 3 times"):
        src.read_bytes("k.npz")
    assert faulty_s3.count(target) == 3 + 3
    [(key, result)] = list(src.read_many(["k.npz"]))  # returned to the caller, not raised
    assert isinstance(result, TransientStorageError)
    with pytest.raises(TransientStorageError):  # read_files raises it: nothing is recorded
        list(src.read_files(["k.npz"]))
    faulty_s3.inject("slowdown", f"/{s3_bucket}?list-type=2", times=100)
    with pytest.raises(TransientStorageError, match="ListObjectsV2.*SlowDown.*after 2 attempts"):
        src.check()  # the reachability check retries once
    assert faulty_s3.count(f"/{s3_bucket}?list-type=2") == 2


@pytest.mark.parametrize("fault, reason", [
    ("denied", "access denied: needs permission s3:GetObject"),
    ("expired", "session token has expired"),
    ("no_bucket", "does not exist"),
])
def test_proxy_access_faults_fail_at_once_naming_bucket_and_prefix(
    faulty_s3: FaultyS3Proxy, s3_server: str, s3_bucket: str, fault: str, reason: str
) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/ecg/aa/k.npz", Body=b"x")
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/ecg/ab/k.npz", Body=b"y")
    src = _via(faulty_s3, s3_bucket, max_attempts=5)
    faulty_s3.inject(fault, f"/{s3_bucket}/p/ecg/aa/", times=100)
    with pytest.raises(StorageAccessError, match=reason) as info:
        list(src.read_files(["ecg/ab/k.npz", "ecg/aa/k.npz"]))
    assert f"bucket {s3_bucket!r}, prefix 'p/ecg/aa/'" in str(info.value)
    assert (info.value.bucket, info.value.prefix) == (s3_bucket, "p/ecg/aa/")
    assert faulty_s3.count(f"/{s3_bucket}/p/ecg/aa/k.npz") == 1  # no retries
    faulty_s3.inject(fault, f"/{s3_bucket}?", times=100, method=None)  # the listing too
    with pytest.raises(StorageAccessError, match=f"ListObjectsV2 s3://{s3_bucket}/p"):
        src.check()
    assert faulty_s3.count(f"/{s3_bucket}?list-type=2") == 1


def test_proxy_missing_object_is_a_content_error(
    faulty_s3: FaultyS3Proxy, s3_bucket: str
) -> None:
    src = _via(faulty_s3, s3_bucket)
    [(key, result)] = list(src.read_files(["gone.npz"]))
    assert key == "gone.npz" and isinstance(result, ObjectNotFoundError)
    assert faulty_s3.count("/gone.npz") == 1
