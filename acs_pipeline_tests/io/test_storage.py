"""Storage: local and S3 (moto server on loopback) round trips, atomicity, listing, pyarrow."""

from __future__ import annotations

import io
import os
import pickle
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acs_pipeline.io.storage import (
    ObjectNotFoundError,
    Storage,
    StorageError,
    sha256_bytes,
    sha256_file,
)
from acs_pipeline_tests.s3_fixtures import s3_client


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


def test_local_crash_during_rename_leaves_previous(tmp_path: Path, monkeypatch) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes("a/x.csv", b"old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        storage.write_bytes("a/x.csv", b"new")
    monkeypatch.undo()
    assert storage.read_bytes("a/x.csv") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.csv"]


def test_local_written_file_has_normal_permissions(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes("p.bin", b"1")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "p.bin").stat().st_mode) == 0o666 & ~umask


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


def test_delete_leaves_no_empty_folders_locally(tmp_path: Path) -> None:
    st = Storage(str(tmp_path / "root"))
    st.write_bytes("a/b/c/x", b"1")
    st.write_bytes("a/y", b"2")
    st.delete("a/b/c/x")
    assert not (tmp_path / "root/a/b").exists()  # emptied folders go, as prefixes on S3
    assert st.list("a/") == ["a/y"]
    st.delete("a/y")
    assert (tmp_path / "root").is_dir() and not (tmp_path / "root/a").exists()  # root stays


def test_parquet_through_pyarrow_fs(storage: Storage) -> None:
    table = pa.table({"ecg_id": ["ecg0000000001", "ecg0000000002"], "y": [0.5, 1.5]})
    fs, base = storage.pyarrow_fs()
    fs.create_dir(f"{base}/tables", recursive=True)  # needed locally; a marker object on S3
    pq.write_table(table, f"{base}/tables/direct.parquet", filesystem=fs)
    assert pq.read_table(f"{base}/tables/direct.parquet", filesystem=fs).equals(table)
    assert pq.read_table(io.BytesIO(storage.read_bytes("tables/direct.parquet"))).equals(table)
    with storage.open_write("tables/atomic.parquet") as f:
        pq.write_table(table, f)
    assert pq.read_table(f"{base}/tables/atomic.parquet", filesystem=fs).equals(table)
    assert storage.list("tables/") == ["tables/atomic.parquet", "tables/direct.parquet"]


def test_invalid_keys_are_rejected(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    for bad in ["../escape", "/abs/path", "", "a/../../b", "a\\b"]:
        with pytest.raises(StorageError, match="invalid storage key"):
            storage.write_bytes(bad, b"x")
    assert storage.uri("./a/b") == str(tmp_path / "a" / "b")


def test_bad_s3_root() -> None:
    with pytest.raises(StorageError, match="s3://bucket"):
        Storage("s3://")


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


def test_s3_storage_pickles(storage: Storage) -> None:
    storage.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.read_bytes("k") == b"v"


def test_sha256() -> None:
    assert (
        sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
