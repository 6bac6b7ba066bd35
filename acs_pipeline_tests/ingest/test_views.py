"""Sharded incremental ingest, local and against a real S3 server on loopback."""

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from acs_pipeline.ingest import views as ingest
from acs_pipeline.io.rawsource import RawSource
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.s3_fixtures import upload_tree


def beat_train(rng: np.random.Generator) -> np.ndarray:
    """(15, 5000) Nightingale-layout array: Gaussian QRS + T waves at ~70 bpm, printed windows."""
    t = np.arange(5000) / 500
    rr = 60 / rng.uniform(60, 80)
    sig = np.zeros(5000)
    for r in np.arange(0.3, 10, rr):
        sig += 1.2 * np.exp(-((t - r) / 0.012) ** 2) + 0.3 * np.exp(-((t - r - 0.3) / 0.05) ** 2)
    raw = np.full((15, 5000), np.nan, dtype=np.float32)
    for j in range(12):
        w = slice(1250 * (j // 3), 1250 * (j // 3 + 1))
        raw[j, w] = (sig[w] * (0.5 + j / 12) + rng.normal(0, 0.01, 1250)).astype(np.float32)
    raw[12:] = sig + rng.normal(0, 0.01, (3, 5000))
    return raw


def npz_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, ecg=arr)
    return buf.getvalue()


def write_tree(root: Path, n: int = 9, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {}
    for i in range(n):
        hx = f"{['aa', 'ab', 'b0'][i % 3]}{i:08x}"
        files[f"ecg-waveforms-npz/{hx[:2]}/{hx}.npz"] = npz_bytes(beat_train(rng))
    files["ecg-waveforms-npz/aa/aa0000ffff.npz"] = b"PK\x03\x04 truncated"
    files["ecg-waveforms-npz/ab/ab0000eeee.npz"] = npz_bytes(np.zeros((12, 5000), np.float32))
    nan_long = beat_train(rng)
    nan_long[13] = np.nan
    files["ecg-waveforms-npz/b0/b00000dddd.npz"] = npz_bytes(nan_long)
    files["ecg-waveforms-npz/b0/notanid.npz"] = npz_bytes(beat_train(rng))
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def run(source: RawSource, storage: Storage, view="ecg_3by4", code_version="t1"):
    manifest, counts = ingest.build_manifest(source)
    return manifest, counts, ingest.ingest_view(source, storage, manifest, view,
                                                code_version=code_version)


def test_every_file_ends_as_row_or_reasoned_rejection(tmp_path):
    files = write_tree(tmp_path / "raw")
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, counts, rep = run(source, storage)
    assert counts["listed"] == len(files) == 13
    assert rep.rows + rep.rejected == len(files)
    reasons = {r["key"].split("/")[-1]: r["reason"] for r in rep.rejects}
    assert reasons == {"aa0000ffff.npz": "corrupt_npz", "ab0000eeee.npz": "wrong_shape",
                       "b00000dddd.npz": "long_lead_missing",
                       "notanid.npz": "unexpected_file_name"}
    tset = ingest.load_view(storage, "ecg_3by4")
    assert tset.x.shape == (9, 3, 5000) and tset.x.dtype == np.float16
    assert np.isfinite(tset.x).all()
    assert rep.shards_total == 3 and rep.shards_computed == 3


def test_rerun_reuses_every_shard_and_recomputes_only_changed(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    m1, _, first = run(source, storage)
    m2, counts, again = run(source, storage)
    assert (again.shards_reused, again.shards_computed) == (3, 0)
    assert again.data_version == first.data_version
    # Manifest hashes are reused by ETag when the previous manifest is given.
    _, counts2 = ingest.build_manifest(source, previous=m2)
    assert counts2["hashed"] == 0
    # A new file in one shard updates that shard only, and decodes the new file only.
    new = tmp_path / "raw/ecg-waveforms-npz/ab/ab12345678.npz"
    new.write_bytes(npz_bytes(beat_train(np.random.default_rng(5))))
    _, _, third = run(source, storage)
    assert (third.shards_reused, third.shards_computed) == (2, 1)
    assert (third.ecgs_computed, third.rows_carried, third.parts) == (1, 0, 4)
    assert third.rows == first.rows + 1
    assert third.data_version != first.data_version
    # A new code version recomputes everything.
    _, _, fourth = run(source, storage, code_version="t2")
    assert fourth.shards_computed == 3


def test_interrupted_run_keeps_finished_shards(tmp_path, monkeypatch):
    write_tree(tmp_path / "raw")
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = ingest.build_manifest(source)
    calls = []
    real = ingest._build_shard

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "_build_shard", flaky)
    with pytest.raises(RuntimeError):
        ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    monkeypatch.setattr(ingest, "_build_shard", real)
    rep = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    assert (rep.shards_reused, rep.shards_computed) == (2, 1)


def _fresh(tmp_path: Path, name: str, **kwargs):
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / name))
    manifest, _ = ingest.build_manifest(source)
    rep = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1", **kwargs)
    return rep, ingest.load_view(storage, "ecg_3by4")


def test_changed_and_removed_files_carry_the_other_rows(tmp_path):
    write_tree(tmp_path / "raw", n=12)
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    run(source, storage)
    # One file changes, one disappears (shards "aa" and "ab"): only the changed one is decoded,
    # the surviving rows and rejections of those shards are copied, not recomputed.
    changed = tmp_path / "raw/ecg-waveforms-npz/aa/aa00000003.npz"
    changed.write_bytes(npz_bytes(beat_train(np.random.default_rng(9))))
    (tmp_path / "raw/ecg-waveforms-npz/ab/ab00000004.npz").unlink()
    _, _, rep = run(source, storage)
    assert (rep.shards_computed, rep.shards_reused, rep.ecgs_computed) == (2, 1, 1)
    assert rep.rows_carried == (3 + 1) * 2  # per shard 3 good rows and 1 rejection
    _, fresh = _fresh(tmp_path, "fresh")
    tset = ingest.load_view(storage, "ecg_3by4")
    assert tset.ecg_ids.tolist() == fresh.ecg_ids.tolist() == sorted(tset.ecg_ids.tolist())
    np.testing.assert_array_equal(tset.x, fresh.x)
    assert "ecgab00000004" not in tset.ecg_ids.tolist()
    # Nothing but live parts and the shard states remain on disk.
    files = sorted(p.name for p in (tmp_path / "store/tensors/ecg_3by4").rglob("*"))
    assert len([f for f in files if f.endswith(".parquet")]) == rep.parts == 3


def test_small_additions_compact_after_max_parts(tmp_path):
    write_tree(tmp_path / "raw", n=3)
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = ingest.build_manifest(source)
    ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1", max_parts=3)
    rng = np.random.default_rng(3)
    parts = []
    for i in range(4):
        new = tmp_path / f"raw/ecg-waveforms-npz/aa/aa7777777{i}.npz"
        new.write_bytes(npz_bytes(beat_train(rng)))
        manifest, _ = ingest.build_manifest(source)
        rep = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                                 max_parts=3)
        assert rep.ecgs_computed == 1
        parts.append(len(json.loads(storage.read_bytes(
            "tensors/ecg_3by4/shard=aa/_shard.json"))["parts"]))
    assert parts == [2, 3, 1, 2]  # the third addition merged the shard's parts into one
    _, fresh = _fresh(tmp_path, "fresh")
    np.testing.assert_array_equal(ingest.load_view(storage, "ecg_3by4").x, fresh.x)


def test_shards_in_separate_processes_match_in_process(tmp_path):
    write_tree(tmp_path / "raw", n=9)
    one, x1 = _fresh(tmp_path, "one")
    two, x2 = _fresh(tmp_path, "two", workers=2, min_parallel=0)
    assert (one.rows, one.rejected, one.data_version) == (two.rows, two.rejected,
                                                          two.data_version)
    assert two.workers == 2 and two.shards_computed == 3
    np.testing.assert_array_equal(x1.x, x2.x)


def test_12lead_view(tmp_path):
    write_tree(tmp_path / "raw", n=3)
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    _, _, rep = run(source, storage, view="ecg_12lead")
    tset = ingest.load_view(storage, "ecg_12lead")
    assert tset.x.shape == (3, 12, 5000)
    index = json.loads((tmp_path / "store/tensors/ecg_12lead/_index.json").read_text())
    assert set(index["shards"]) == {"aa", "ab", "b0"}
    assert rep.rows + rep.rejected == 7


def test_empty_root_is_a_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(ingest.IngestError, match="no 'ecg-waveforms-npz"):
        ingest.build_manifest(RawSource(str(tmp_path / "raw")))


def test_s3_source_and_storage_match_local(tmp_path, s3_server, s3_bucket):
    write_tree(tmp_path / "raw")
    upload_tree(s3_server, s3_bucket, "ed-bwh-ecg/v1", tmp_path / "raw")
    src = RawSource(f"s3://{s3_bucket}/ed-bwh-ecg/v1", endpoint_url=s3_server)
    st = Storage(f"s3://{s3_bucket}/store", endpoint_url=s3_server)
    manifest, counts, rep = run(src, st)
    local_manifest, _, local = run(RawSource(str(tmp_path / "raw")),
                                   Storage(str(tmp_path / "store")))
    assert manifest["sha256"].to_list() == local_manifest["sha256"].to_list()
    assert (rep.rows, rep.rejected) == (local.rows, local.rejected)
    tset = ingest.load_view(st, "ecg_3by4")
    np.testing.assert_array_equal(tset.x, ingest.load_view(Storage(str(tmp_path / "store")),
                                                           "ecg_3by4").x)
    calls: list[str] = []
    st.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    again = ingest.ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    assert again.shards_reused == 3
    # a no-change re-run reads the index, one listing of the view and each shard's state, and
    # writes nothing
    assert sorted(set(calls)) == ["GetObject", "HeadObject", "ListObjectsV2"]
    assert calls.count("GetObject") == 1 + 3
    assert calls.count("HeadObject") == 1  # the index, not one per part
    assert pl.DataFrame(rep.rejects).height == 4


def test_one_digit_shards_group_folders_and_switching_rebuilds(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = ingest.build_manifest(source)
    two = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    x2 = ingest.load_view(storage, "ecg_3by4")
    one = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                             shard_digits=1)
    assert (two.shards_total, one.shards_total) == (3, 2)  # aa, ab -> a; b0 -> b
    assert one.shards_removed == 3 and one.rows == two.rows
    assert sorted(p.name for p in (tmp_path / "store/tensors/ecg_3by4").iterdir()) == [
        "_index.json", "shard=a", "shard=b"]
    x1 = ingest.load_view(storage, "ecg_3by4")
    assert list(x1.ecg_ids) == list(x2.ecg_ids)
    np.testing.assert_array_equal(x1.x, x2.x)
    again = ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                               shard_digits=1)
    assert (again.shards_reused, again.shards_computed) == (2, 0)
    with pytest.raises(ValueError, match="shard_digits"):
        ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                           shard_digits=3)


@pytest.mark.parametrize("view", ["ecg_3by4", "ecg_12lead"])
def test_batches_across_shards_match_one_file_at_a_time(tmp_path, view):
    """Rows come out in key order whatever the batch size, rejections in their place, and each
    tensor equals the same file transformed alone."""
    files = write_tree(tmp_path / "raw")
    keys = sorted(k for k in files if ingest.ecg_id_for_key(k))
    pairs = [(k, ingest.ecg_id_for_key(k)) for k in keys]
    reads = [(k, files[k]) for k in keys]
    reads[4] = (keys[4], OSError("gone"))  # a read error mid-stream
    alone = list(ingest._transformed(view, pairs, iter(reads), batch=1))
    for batch in (2, 3, 64):
        rows = list(ingest._transformed(view, pairs, iter(reads), batch=batch))
        assert [r[0] for r in rows] == [p[1] for p in pairs]
        for (_, x, rej), (_, x1, rej1) in zip(rows, alone, strict=True):
            assert (rej is None) == (rej1 is None) and rej == rej1
            if x is not None:
                np.testing.assert_array_equal(x, x1)
    reasons = {r[2]["key"]: r[2]["reason"] for r in alone if r[2]}
    assert reasons[keys[4]] == "unreadable"
    assert reasons["ecg-waveforms-npz/aa/aa0000ffff.npz"] == "corrupt_npz"
    with pytest.raises(RuntimeError, match="expected"):
        list(ingest._transformed(view, pairs, iter(reads[1:] + reads[:1]), batch=2))


def test_update_in_steps_matches_one_call_and_the_index_waits_for_every_shard(tmp_path):
    """survey -> update shard groups separately (as the asset's steps do) -> finish gives the
    one-call result; finishing with a stale shard, or from a partial survey, is refused."""
    write_tree(tmp_path / "raw")
    source = RawSource(str(tmp_path / "raw"))
    manifest, _ = ingest.build_manifest(source)
    one = ingest.ingest_view(source, Storage(str(tmp_path / "one")), manifest, "ecg_3by4",
                             code_version="t1")
    st = Storage(str(tmp_path / "steps"))

    def survey(**kw):
        return ingest.survey_view(st, manifest, "ecg_3by4", code_version="t1", **kw)

    groups = survey().chunks(2, min_files=1)
    assert len(groups) == 2
    ingest.update_shards(survey(shards=groups[0]), source, st, groups[0])
    with pytest.raises(ingest.IngestError, match="not up to date"):
        ingest.finish_view(survey(), st)
    with pytest.raises(ValueError, match="every shard"):
        ingest.finish_view(survey(shards=groups[1]), st)
    counts = ingest.update_shards(survey(shards=groups[1]), source, st, groups[1])
    assert counts.shards_computed == len(groups[1])
    rep = ingest.finish_view(survey(), st, counts)
    assert rep.data_version == one.data_version and rep.rows == one.rows
    assert rep.rejected == one.rejected and st.exists("tensors/ecg_3by4/_index.json")


def test_view_read_part_by_part_and_counted_from_footers(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = RawSource(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = ingest.build_manifest(source)
    ingest.ingest_view(source, storage, manifest.head(6), "ecg_3by4", code_version="t1")
    ingest.ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")  # 2nd parts
    whole = ingest.load_view(storage, "ecg_3by4")
    parts = list(ingest.iter_view(storage, "ecg_3by4"))
    assert len(parts) == len(ingest.shard_paths(storage, "ecg_3by4")) > 3
    by_id = {e: x for p in parts for e, x in zip(p.ecg_ids, p.x, strict=True)}
    assert sorted(by_id) == whole.ecg_ids.tolist()
    for e, x in zip(whole.ecg_ids, whole.x, strict=True):
        np.testing.assert_array_equal(by_id[e], x)
    assert ingest.view_rows(storage, "ecg_3by4") == len(whole)
