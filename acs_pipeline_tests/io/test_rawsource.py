"""RawSource: local and S3 (moto server on loopback) listing, reads, retries and clear errors."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse

from acs_pipeline.io.rawsource import MissingObjectError, RawObject, RawSource, RawSourceError
from acs_pipeline.io.storage import Storage, StorageError
from acs_pipeline_tests.s3_fixtures import s3_client, upload_tree

IDS = ["3df45120a4", "3d00000001", "a1b2c3d4e5", "ff00ff00ff"]
PREFIX = "ed-bwh-ecg/v1"


def _write_dataset(root: Path) -> dict[str, bytes]:
    """A tiny dataset tree in the Nightingale layout; returns key -> content."""
    files = {
        f"ecg-waveforms-npz/{i[:2]}/{i}.npz": f"npz-{i}".encode() * (n + 1)
        for n, i in enumerate(IDS)
    }
    files["patient.csv"] = b"patient_ngsci_id,sex\npat00000001,F\n"
    files["ecg-metadata.csv"] = b"patient_ngsci_id,ecg_id,date\n"
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "v1"
    return root, _write_dataset(root)


@pytest.fixture(params=["local", "s3"])
def source(request: pytest.FixtureRequest, dataset) -> tuple[RawSource, dict[str, bytes]]:
    root, files = dataset
    if request.param == "local":
        return RawSource(str(root), max_workers=3), files
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    upload_tree(endpoint, bucket, PREFIX, root)
    s3_client(endpoint).put_object(Bucket=bucket, Key="ed-bwh-ecg/v1-other/x.npz", Body=b"x")
    return RawSource(f"s3://{bucket}/{PREFIX}", endpoint_url=endpoint, max_workers=3), files


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


# ---------------------------------------------------------------------------- listing


def test_list_sorted_with_sizes_and_etags(source) -> None:
    src, files = source
    objects = src.list()
    assert [o.key for o in objects] == sorted(files)
    assert {o.key: o.size for o in objects} == {k: len(v) for k, v in files.items()}
    for o in objects:
        if src.is_s3:
            assert o.etag == hashlib.md5(files[o.key]).hexdigest()
        else:
            st = (Path(src.root) / o.key).stat()
            assert o.etag == f"{st.st_size}-{st.st_mtime_ns}"
    npz = src.list("ecg-waveforms-npz/", suffix=".npz")
    assert [o.key for o in npz] == sorted(k for k in files if k.endswith(".npz"))
    assert [o.key for o in src.list("ecg-waveforms-npz/3d/")] == [
        "ecg-waveforms-npz/3d/3d00000001.npz",
        "ecg-waveforms-npz/3d/3df45120a4.npz",
    ]
    assert [o.key for o in src.list("ecg-")] == sorted(k for k in files if k.startswith("ecg-"))
    assert src.list(suffix=".csv") == [o for o in objects if o.key.endswith(".csv")]
    assert src.list("nothing/") == []
    assert isinstance(objects[0], RawObject)
    src.check()


def test_s3_listing_is_paginated(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    for i in range(120):
        (tmp_path / "d" / f"{i % 7:02x}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / f"{i % 7:02x}" / f"{i:04d}.npz").write_bytes(b"x" * i)
    upload_tree(s3_server, s3_bucket, "root", tmp_path / "d")
    src = RawSource(f"s3://{s3_bucket}/root", endpoint_url=s3_server, page_size=50)
    calls = _inject(src.client, "ListObjectsV2", [])
    objects = src.list()
    assert calls[0] == 3  # 50 + 50 + 20
    assert len(objects) == 120
    assert [o.key for o in objects] == sorted(o.key for o in objects)
    assert sum(o.size for o in objects) == sum(range(120))


# ---------------------------------------------------------------------------- reading


def test_read_and_exists(source) -> None:
    src, files = source
    key = "ecg-waveforms-npz/3d/3df45120a4.npz"
    assert src.read(key) == files[key]
    assert src.exists(key)
    assert not src.exists("ecg-waveforms-npz/3d/0000000000.npz")
    with pytest.raises(MissingObjectError, match="0000000000.npz") as info:
        src.read("ecg-waveforms-npz/3d/0000000000.npz")
    assert info.value.key == "ecg-waveforms-npz/3d/0000000000.npz"
    with pytest.raises(RawSourceError, match="invalid raw object key"):
        src.read("../secret")


def test_read_many_reports_a_deleted_object_and_keeps_order(source) -> None:
    src, files = source
    keys = [o.key for o in src.list(suffix=".npz")]
    gone = keys[1]
    if src.is_s3:
        s3_client(src.endpoint_url).delete_object(Bucket=src.bucket, Key=f"{PREFIX}/{gone}")
    else:
        (Path(src.root) / gone).unlink()
    results = list(src.read_many(keys))
    assert [k for k, _ in results] == keys
    for key, result in results:
        if key == gone:
            assert isinstance(result, MissingObjectError)
            assert result.key == gone and gone in str(result)
        else:
            assert result == files[key]


def test_read_many_bounds_reads_in_flight(dataset) -> None:
    root, files = dataset
    src = RawSource(str(root), max_workers=2)
    started = [0]
    lock = threading.Lock()
    original = src.read

    def counting_read(key: str) -> bytes:
        with lock:
            started[0] += 1
        return original(key)

    src.read = counting_read  # type: ignore[method-assign]
    keys = sorted(files) * 10
    consumed = 0
    for key, data in src.read_many(keys):
        time.sleep(0.002)
        consumed += 1
        assert data == files[key]
        assert started[0] - consumed <= 2 * src.max_workers
    assert consumed == len(keys) == started[0]


# ---------------------------------------------------------------------------- retries


def test_5xx_and_throttling_are_retried(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=b"payload")
    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=4)
    calls = _inject(
        src.client,
        "GetObject",
        [
            lambda r: _error_response(r, 500, "InternalError"),
            lambda r: _error_response(r, 503, "SlowDown"),
        ],
    )
    assert src.read("k.npz") == b"payload"
    assert calls[0] == 3

    src2 = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=2)
    calls2 = _inject(
        src2.client, "GetObject", [lambda r: _error_response(r, 500, "InternalError")] * 3
    )
    with pytest.raises(RawSourceError, match="GetObject s3://.*/p/k.npz.*InternalError"):
        src2.read("k.npz")
    assert calls2[0] == 2


def test_no_such_key_is_not_retried(s3_server: str, s3_bucket: str) -> None:
    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=5)
    calls = _inject(src.client, "GetObject", [])
    with pytest.raises(MissingObjectError, match="absent.npz"):
        src.read("absent.npz")
    assert calls[0] == 1


def test_broken_body_is_read_again(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="p/k.npz", Body=b"0123456789")

    def truncated(request) -> AWSResponse:
        headers = {"Content-Length": "10", "ETag": '"x"'}
        return AWSResponse(request.url, 200, headers, _FakeRaw(b"01234"))

    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=3, backoff_s=0.01)
    calls = _inject(src.client, "GetObject", [truncated, truncated])
    assert src.read("k.npz") == b"0123456789"
    assert calls[0] == 3

    src2 = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server, max_attempts=2, backoff_s=0.01)
    _inject(src2.client, "GetObject", [truncated, truncated, truncated])
    [(key, result)] = list(src2.read_many(["k.npz"]))
    assert key == "k.npz"
    assert isinstance(result, RawSourceError)
    assert "k.npz" in str(result) and "failed 2 times" in str(result)
    assert "IncompleteReadError" in str(result)


# ---------------------------------------------------------------------------- clear errors


def test_wrong_bucket_is_named(s3_server: str) -> None:
    src = RawSource("s3://acs-missing-bucket/ed-bwh-ecg/v1", endpoint_url=s3_server)
    with pytest.raises(RawSourceError, match="bucket 'acs-missing-bucket' does not exist"):
        src.check()
    with pytest.raises(RawSourceError, match="acs-missing-bucket"):
        src.list()


def test_empty_prefix_fails_check(s3_server: str, s3_bucket: str) -> None:
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="ed-bwh-ecg/v2/x", Body=b"1")
    with pytest.raises(RawSourceError, match=f"s3://{s3_bucket}/ed-bwh-ecg/v1 .*no objects"):
        RawSource(f"s3://{s3_bucket}/ed-bwh-ecg/v1", endpoint_url=s3_server).check()


def test_access_denied_names_the_permission(s3_server: str, s3_bucket: str) -> None:
    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    _inject(src.client, "ListObjectsV2", [lambda r: _error_response(r, 403, "AccessDenied")])
    with pytest.raises(RawSourceError, match=f"s3://{s3_bucket}/p.*s3:ListBucket"):
        src.list()


def test_unreachable_endpoint_fails_fast(s3_bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=endpoint)
    start = time.monotonic()
    with pytest.raises(RawSourceError, match=f"endpoint {endpoint} is unreachable"):
        src.check()
    assert time.monotonic() - start < 5
    start = time.monotonic()
    with pytest.raises(RawSourceError, match=f"{endpoint} is unreachable"):
        src.read("k.npz")
    assert time.monotonic() - start < 10


def test_missing_credentials_are_explained(
    s3_server: str, s3_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none" / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    src = RawSource(f"s3://{s3_bucket}/p", endpoint_url=s3_server)
    start = time.monotonic()
    with pytest.raises(RawSourceError, match="no usable AWS credentials"):
        src.check()
    assert time.monotonic() - start < 5
    storage = Storage(f"s3://{s3_bucket}/out", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="no usable AWS credentials"):
        storage.write_bytes("a", b"1")
    with pytest.raises(StorageError, match="no usable AWS credentials"):
        storage.pyarrow_fs()


def test_local_root_errors(tmp_path: Path) -> None:
    with pytest.raises(RawSourceError, match="not a directory"):
        RawSource(str(tmp_path / "missing")).check()
    with pytest.raises(RawSourceError, match="not a directory"):
        RawSource(str(tmp_path / "missing")).list()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RawSourceError, match="is empty"):
        RawSource(str(tmp_path / "empty")).check()
    with pytest.raises(RawSourceError, match="s3://"):
        RawSource("s3://")
