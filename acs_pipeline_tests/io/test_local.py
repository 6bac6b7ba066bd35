"""The local backend: atomic replace, permissions, empty folders, root checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from acs_pipeline.io.objects import StorageError
from acs_pipeline.io.storage import Storage


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


def test_delete_leaves_no_empty_folders_locally(tmp_path: Path) -> None:
    st = Storage(str(tmp_path / "root"))
    st.write_bytes("a/b/c/x", b"1")
    st.write_bytes("a/y", b"2")
    st.delete("a/b/c/x")
    assert not (tmp_path / "root/a/b").exists()  # emptied folders go, as prefixes on S3
    assert st.list("a/") == ["a/y"]
    st.delete("a/y")
    assert (tmp_path / "root").is_dir() and not (tmp_path / "root/a").exists()  # root stays


def test_local_root_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a directory"):
        Storage(str(tmp_path / "missing")).check()
    assert Storage(str(tmp_path / "missing")).list() == []  # like a prefix without keys on S3
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="is empty"):
        Storage(str(tmp_path / "empty")).check()
    with pytest.raises(StorageError, match="s3://"):
        Storage("s3://")
