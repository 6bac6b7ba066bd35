"""Shard updates: carried rows, compaction, interruption, separate processes."""

import json

import numpy as np
import pytest

from acs_pipeline.ingest import shards
from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.ingest.read import load_view
from acs_pipeline.ingest.views import ingest_view
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.ingest.raw_tree import beat_train, ingest_fresh, npz_bytes, run, write_tree


def test_interrupted_run_keeps_finished_shards(tmp_path, monkeypatch):
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = build_manifest(source)
    calls = []
    real = shards.build_shard

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "build_shard", flaky)
    with pytest.raises(RuntimeError):
        ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    monkeypatch.setattr(shards, "build_shard", real)
    rep = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    assert (rep.shards_reused, rep.shards_computed) == (2, 1)


def test_changed_and_removed_files_carry_the_other_rows(tmp_path):
    write_tree(tmp_path / "raw", n=12)
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    run(source, storage)
    # One file changes, one disappears (shards "aa" and "ab"): only the changed one is decoded,
    # the surviving rows and rejections of those shards are copied, not recomputed.
    changed = tmp_path / "raw/ecg-waveforms-npz/aa/aa00000003.npz"
    changed.write_bytes(npz_bytes(beat_train(np.random.default_rng(9))))
    (tmp_path / "raw/ecg-waveforms-npz/ab/ab00000004.npz").unlink()
    _, _, rep = run(source, storage)
    assert (rep.shards_computed, rep.shards_reused, rep.ecgs_computed) == (2, 1, 1)
    assert rep.rows_carried == (3 + 1) * 2  # per shard 3 good rows and 1 rejection
    _, fresh = ingest_fresh(tmp_path, "fresh")
    tset = load_view(storage, "ecg_3by4")
    assert tset.ecg_ids.tolist() == fresh.ecg_ids.tolist() == sorted(tset.ecg_ids.tolist())
    np.testing.assert_array_equal(tset.x, fresh.x)
    assert "ecgab00000004" not in tset.ecg_ids.tolist()
    # Nothing but live parts and the shard states remain on disk.
    files = sorted(p.name for p in (tmp_path / "store/tensors/ecg_3by4").rglob("*"))
    assert len([f for f in files if f.endswith(".parquet")]) == rep.parts == 3


def test_small_additions_compact_after_max_parts(tmp_path):
    write_tree(tmp_path / "raw", n=3)
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = build_manifest(source)
    ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1", max_parts=3)
    rng = np.random.default_rng(3)
    parts = []
    for i in range(4):
        new = tmp_path / f"raw/ecg-waveforms-npz/aa/aa7777777{i}.npz"
        new.write_bytes(npz_bytes(beat_train(rng)))
        manifest, _ = build_manifest(source)
        rep = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                          max_parts=3)
        assert rep.ecgs_computed == 1
        parts.append(len(json.loads(storage.read_bytes(
            "tensors/ecg_3by4/shard=aa/_shard.json"))["parts"]))
    assert parts == [2, 3, 1, 2]  # the third addition merged the shard's parts into one
    _, fresh = ingest_fresh(tmp_path, "fresh")
    np.testing.assert_array_equal(load_view(storage, "ecg_3by4").x, fresh.x)


def test_shards_in_separate_processes_match_in_process(tmp_path):
    write_tree(tmp_path / "raw", n=9)
    one, x1 = ingest_fresh(tmp_path, "one")
    two, x2 = ingest_fresh(tmp_path, "two", workers=2, min_parallel=0)
    assert (one.rows, one.rejected, one.data_version) == (two.rows, two.rejected,
                                                          two.data_version)
    assert two.workers == 2 and two.shards_computed == 3
    np.testing.assert_array_equal(x1.x, x2.x)
