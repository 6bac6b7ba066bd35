"""Storage on both backends (local, and S3 on a moto server on loopback): round trips,
atomicity, listing, reads."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acs_pipeline.io.objects import ObjectNotFoundError, StorageError, StoredObject
from acs_pipeline.io.storage import Storage, sha256_bytes, sha256_file
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
def source(request: pytest.FixtureRequest, dataset) -> tuple[Storage, dict[str, bytes]]:
    root, files = dataset
    if request.param == "local":
        return Storage(str(root), max_workers=3), files
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    upload_tree(endpoint, bucket, PREFIX, root)
    s3_client(endpoint).put_object(Bucket=bucket, Key="ed-bwh-ecg/v1-other/x.npz", Body=b"x")
    return Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=endpoint, max_workers=3), files


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Storage(f"s3://{bucket}/runs/r1/", endpoint_url=endpoint, region="us-east-1")


def _leftovers(storage: Storage) -> list[str]:
    """Every file or object physically present under the root, temporaries included."""
    if storage.is_s3:
        pages = s3_client(storage.endpoint_url).get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in pages.paginate(Bucket=storage.bucket)
            for item in page.get("Contents", [])
        )
    root = Path(storage.root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_root_and_uri(storage: Storage, tmp_path: Path) -> None:
    rel = "tensors/ecg_3by4/shard=ab.parquet"
    if storage.is_s3:
        assert storage.root == f"s3://{storage.bucket}/runs/r1"
        assert storage.uri(rel) == f"s3://{storage.bucket}/runs/r1/{rel}"
        assert storage.local_path(rel) is None
    else:
        assert storage.root == str(tmp_path / "root")
        assert storage.uri(rel) == str(tmp_path / "root" / rel)
        assert storage.local_path(rel) == tmp_path / "root" / rel
        assert (tmp_path / "root" / "tensors" / "ecg_3by4").is_dir()


def test_write_bytes_round_trip(storage: Storage) -> None:
    data = bytes(range(256)) * 10
    uri = storage.write_bytes("tables/a.bin", data)
    assert uri == storage.uri("tables/a.bin")
    assert storage.read_bytes("tables/a.bin") == data
    assert storage.exists("tables/a.bin")
    assert not storage.exists("tables/b.bin")
    assert storage.size("tables/a.bin") == 2560
    storage.write_bytes("tables/a.bin", b"v2")
    assert storage.read_bytes("tables/a.bin") == b"v2"
    assert _leftovers(storage) == [("runs/r1/" if storage.is_s3 else "") + "tables/a.bin"]


def test_open_write_round_trip(storage: Storage) -> None:
    with storage.open_write("models/m/last.ckpt") as f:
        for i in range(5):
            f.write(bytes([i]) * 1000)
    assert storage.read_bytes("models/m/last.ckpt") == b"".join(bytes([i]) * 1000 for i in range(5))


def test_open_write_exception_keeps_previous_content(storage: Storage) -> None:
    storage.write_bytes("reports/r.html", b"good")
    with pytest.raises(RuntimeError, match="crash"), storage.open_write("reports/r.html") as f:
        f.write(b"partial garbage")
        raise RuntimeError("crash")
    assert storage.read_bytes("reports/r.html") == b"good"
    with pytest.raises(RuntimeError), storage.open_write("reports/new.html") as f:
        f.write(b"x")
        raise RuntimeError("crash")
    assert not storage.exists("reports/new.html")
    assert _leftovers(storage) == [("runs/r1/" if storage.is_s3 else "") + "reports/r.html"]


def test_put_and_get_file(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "work" / "best.ckpt"
    src.parent.mkdir()
    payload = os.urandom(300_000)
    src.write_bytes(payload)
    uri = storage.put_file("models/s4/acs/best.ckpt", src)
    assert uri == storage.uri("models/s4/acs/best.ckpt")
    assert storage.read_bytes("models/s4/acs/best.ckpt") == payload
    out = storage.get_file("models/s4/acs/best.ckpt", tmp_path / "dl" / "copy.ckpt")
    assert out == tmp_path / "dl" / "copy.ckpt"
    assert sha256_file(out) == sha256_bytes(payload)
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.ckpt"]
    with pytest.raises(ObjectNotFoundError, match="nothing.ckpt"):
        storage.get_file("models/nothing.ckpt", tmp_path / "dl" / "n.ckpt")
    assert not (tmp_path / "dl" / "n.ckpt").exists()
    with pytest.raises(StorageError, match="not a file"):
        storage.put_file("models/x", tmp_path / "missing")


def test_list_is_a_sorted_string_prefix(storage: Storage) -> None:
    for rel in ["a/b/2.bin", "a/b/1.bin", "a/c.bin", "ab.bin", "z.bin"]:
        storage.write_bytes(rel, rel.encode())
    assert storage.list("a/") == ["a/b/1.bin", "a/b/2.bin", "a/c.bin"]
    assert storage.list("a") == ["a/b/1.bin", "a/b/2.bin", "a/c.bin", "ab.bin"]
    assert storage.list("a/b/1") == ["a/b/1.bin"]
    assert storage.list("") == ["a/b/1.bin", "a/b/2.bin", "a/c.bin", "ab.bin", "z.bin"]
    assert storage.list("nothing/") == []


def test_delete_and_missing(storage: Storage) -> None:
    storage.write_bytes("d/x", b"1")
    storage.delete("d/x")
    assert not storage.exists("d/x")
    storage.delete("d/x")  # idempotent
    with pytest.raises(ObjectNotFoundError, match="d/x") as info:
        storage.read_bytes("d/x")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ObjectNotFoundError):
        storage.size("d/x")


def test_parquet_round_trip_and_footer(storage: Storage) -> None:
    table = pa.table({"ecg_id": ["ecg0000000001", "ecg0000000002"], "y": [0.5, 1.5]})
    with storage.open_write("tables/atomic.parquet") as f:
        pq.write_table(table, f)
    assert pq.read_table(pa.BufferReader(storage.read_bytes("tables/atomic.parquet"))).equals(
        table)
    with storage.open_read("tables/atomic.parquet") as f:
        assert pq.read_metadata(f).num_rows == 2
        f.seek(0)
        assert f.read(4) == b"PAR1"
        f.seek(-4, io.SEEK_END)
        assert f.read() == b"PAR1" and f.read(1) == b""
    with pytest.raises(ObjectNotFoundError):
        storage.open_read("tables/missing.parquet")
    assert storage.list("tables/") == ["tables/atomic.parquet"]


def test_invalid_keys_are_rejected(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    for bad in ["../escape", "/abs/path", "", "a/../../b", "a\\b"]:
        with pytest.raises(StorageError, match="invalid storage key"):
            storage.write_bytes(bad, b"x")
    assert storage.uri("./a/b") == str(tmp_path / "a" / "b")


def test_bad_s3_root() -> None:
    with pytest.raises(StorageError, match="s3://bucket"):
        Storage("s3://")


def test_s3_storage_pickles(storage: Storage) -> None:
    storage.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.read_bytes("k") == b"v"


def test_sha256() -> None:
    assert (
        sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_list_sorted_with_sizes_and_etags(source) -> None:
    src, files = source
    objects = src.list_objects()
    assert [o.key for o in objects] == sorted(files)
    assert {o.key: o.size for o in objects} == {k: len(v) for k, v in files.items()}
    for o in objects:
        if src.is_s3:
            assert o.etag == hashlib.md5(files[o.key]).hexdigest()
        else:
            st = (Path(src.root) / o.key).stat()
            assert o.etag == f"{st.st_size}-{st.st_mtime_ns}"
    npz = src.list_objects("ecg-waveforms-npz/", suffix=".npz")
    assert [o.key for o in npz] == sorted(k for k in files if k.endswith(".npz"))
    assert [o.key for o in src.list_objects("ecg-waveforms-npz/3d/")] == [
        "ecg-waveforms-npz/3d/3d00000001.npz",
        "ecg-waveforms-npz/3d/3df45120a4.npz",
    ]
    ecg = sorted(k for k in files if k.startswith("ecg-"))
    assert [o.key for o in src.list_objects("ecg-")] == ecg
    assert src.list_objects(suffix=".csv") == [o for o in objects if o.key.endswith(".csv")]
    assert src.list_objects("nothing/") == []
    assert isinstance(objects[0], StoredObject)
    src.check()


def test_read_and_exists(source) -> None:
    src, files = source
    key = "ecg-waveforms-npz/3d/3df45120a4.npz"
    assert src.read_bytes(key) == files[key]
    assert src.exists(key)
    assert not src.exists("ecg-waveforms-npz/3d/0000000000.npz")
    with pytest.raises(ObjectNotFoundError, match="0000000000.npz") as info:
        src.read_bytes("ecg-waveforms-npz/3d/0000000000.npz")
    assert info.value.key == "ecg-waveforms-npz/3d/0000000000.npz"
    with pytest.raises(StorageError, match="invalid storage key"):
        src.read_bytes("../secret")


def test_read_many_reports_a_deleted_object_and_keeps_order(source) -> None:
    src, files = source
    keys = [o.key for o in src.list_objects(suffix=".npz")]
    gone = keys[1]
    if src.is_s3:
        s3_client(src.endpoint_url).delete_object(Bucket=src.bucket, Key=f"{PREFIX}/{gone}")
    else:
        (Path(src.root) / gone).unlink()
    results = list(src.read_many(keys))
    assert [k for k, _ in results] == keys
    for key, result in results:
        if key == gone:
            assert isinstance(result, ObjectNotFoundError)
            assert result.key == gone and gone in str(result)
        else:
            assert result == files[key]


def test_read_many_bounds_reads_in_flight(dataset) -> None:
    root, files = dataset
    src = Storage(str(root), max_workers=2)
    started = [0]
    lock = threading.Lock()
    original = src.read_bytes

    def counting_read(key: str) -> bytes:
        with lock:
            started[0] += 1
        return original(key)

    src.read_bytes = counting_read  # type: ignore[method-assign]
    keys = sorted(files) * 10
    consumed = 0
    for key, data in src.read_many(keys):
        time.sleep(0.002)
        consumed += 1
        assert data == files[key]
        assert started[0] - consumed <= 2 * src.max_workers
    assert consumed == len(keys) == started[0]
