"""Sharded incremental ingest of a view, local and against a real S3 server on loopback."""

import json
import os
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from acs_pipeline.ingest.manifest import IngestError, build_manifest
from acs_pipeline.ingest.read import load_view
from acs_pipeline.ingest.views import (
    current_view,
    finish_view,
    ingest_view,
    survey_view,
    update_shards,
    view_is_current,
)
from acs_pipeline.io.objects import StorageAccessError, TransientStorageError
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.ingest.raw_tree import beat_train, npz_bytes, run, write_tree
from acs_pipeline_tests.s3_fixtures import upload_tree


def test_every_file_ends_as_row_or_reasoned_rejection(tmp_path):
    files = write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, counts, rep = run(source, storage)
    assert counts["listed"] == len(files) == 13
    assert rep.rows + rep.rejected == len(files)
    reasons = {r["key"].split("/")[-1]: r["reason"] for r in rep.rejects}
    assert reasons == {"aa0000ffff.npz": "corrupt_npz", "ab0000eeee.npz": "wrong_shape",
                       "b00000dddd.npz": "long_lead_missing",
                       "notanid.npz": "unexpected_file_name"}
    tset = load_view(storage, "ecg_3by4")
    assert tset.x.shape == (9, 3, 5000) and tset.x.dtype == np.float16
    assert np.isfinite(tset.x).all()
    assert rep.shards_total == 3 and rep.shards_computed == 3


def test_rerun_reuses_every_shard_and_recomputes_only_changed(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    m1, _, first = run(source, storage)
    m2, counts, again = run(source, storage)
    assert (again.shards_reused, again.shards_computed) == (3, 0)
    assert again.data_version == first.data_version
    # Manifest hashes are reused by ETag when the previous manifest is given.
    _, counts2 = build_manifest(source, previous=m2)
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


def test_12lead_view(tmp_path):
    write_tree(tmp_path / "raw", n=3)
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    _, _, rep = run(source, storage, view="ecg_12lead")
    tset = load_view(storage, "ecg_12lead")
    assert tset.x.shape == (3, 12, 5000)
    index = json.loads((tmp_path / "store/tensors/ecg_12lead/_index.json").read_text())
    assert set(index["shards"]) == {"aa", "ab", "b0"}
    assert rep.rows + rep.rejected == 7


def test_s3_source_and_storage_match_local(tmp_path, s3_server, s3_bucket):
    write_tree(tmp_path / "raw")
    upload_tree(s3_server, s3_bucket, "ed-bwh-ecg/v1", tmp_path / "raw")
    src = Storage(f"s3://{s3_bucket}/ed-bwh-ecg/v1", endpoint_url=s3_server)
    st = Storage(f"s3://{s3_bucket}/store", endpoint_url=s3_server)
    manifest, counts, rep = run(src, st)
    local_manifest, _, local = run(Storage(str(tmp_path / "raw")),
                                   Storage(str(tmp_path / "store")))
    assert manifest["sha256"].to_list() == local_manifest["sha256"].to_list()
    assert (rep.rows, rep.rejected) == (local.rows, local.rejected)
    tset = load_view(st, "ecg_3by4")
    np.testing.assert_array_equal(tset.x, load_view(Storage(str(tmp_path / "store")),
                                                    "ecg_3by4").x)
    calls: list[str] = []
    st.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    again = ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    assert again.shards_reused == 3
    # a no-change re-run reads the index, one listing of the view and each shard's state, and
    # writes nothing
    assert sorted(set(calls)) == ["GetObject", "HeadObject", "ListObjectsV2"]
    assert calls.count("GetObject") == 1 + 3
    assert calls.count("HeadObject") == 1  # the index, not one per part
    assert pl.DataFrame(rep.rejects).height == 4
    # the plan and index steps' shortcut: the index and one listing, no shard record
    calls.clear()
    assert view_is_current(st, manifest, "ecg_3by4", code_version="t1")
    assert (calls.count("GetObject"), calls.count("ListObjectsV2")) == (1, 1)
    calls.clear()
    report = current_view(st, manifest, "ecg_3by4", code_version="t1")
    assert report is not None and report.data_version == rep.data_version
    assert sorted(set(calls)) == ["GetObject", "HeadObject", "ListObjectsV2"]
    assert (calls.count("GetObject"), calls.count("ListObjectsV2")) == (1, 1)


def test_an_index_written_from_the_same_inputs_means_no_shard_is_stale(tmp_path):
    """`view_is_current` (the plan step's shortcut) holds only while the manifest's files, the
    code version, the shard digits and every file under the shard folders are as indexed."""
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = build_manifest(source)

    def current(m: pl.DataFrame = manifest, **kw) -> bool:
        kw = {"code_version": "t1", **kw}
        return view_is_current(storage, m, "ecg_3by4", **kw)

    def ingest(**kw):
        return ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1", **kw)

    assert not current()  # no index yet
    first = ingest()
    assert current()
    state = survey_view(storage, manifest, "ecg_3by4", code_version="t1")
    assert state.stale() == []
    # the report made from the index alone is the one finishing a fresh survey gives
    shortcut = current_view(storage, manifest, "ecg_3by4", code_version="t1")
    assert shortcut is not None and asdict(shortcut) == asdict(finish_view(state, storage))
    assert (shortcut.shards_reused, shortcut.rows, shortcut.data_version) == (
        3, first.rows, first.data_version)
    assert shortcut.rejects == first.rejects and shortcut.rejected == 4
    # an index written before it listed each part's rejections: survey instead
    index_file = tmp_path / "store/tensors/ecg_3by4/_index.json"
    written = index_file.read_text()
    older = json.loads(written)
    for parts in older["shards"].values():
        for part in parts:
            del part["rejects"]
    index_file.write_text(json.dumps(older))
    assert current() and current_view(storage, manifest, "ecg_3by4", code_version="t1") is None
    index_file.write_text(written)
    assert not current(code_version="t2") and not current(shard_digits=1)
    key = manifest.filter(pl.col("status") == "ok")["key"][0]
    other = manifest.with_columns(sha256=pl.when(pl.col("key") == key).then(pl.lit("0" * 64))
                                  .otherwise("sha256"))
    assert not current(other)
    assert not current(manifest.filter(pl.col("key") != key))
    # a shard file rewritten, removed or added: not current until an ingest has looked
    part = sorted((tmp_path / "store/tensors/ecg_3by4").rglob("part-*.parquet"))[0]
    stat = part.stat()
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert not current()
    assert ingest().shards_computed == 0 and current()
    part.unlink()
    assert not current()
    assert ingest().shards_computed == 1 and current()
    (part.parent / "stray.txt").write_text("x")
    assert not current()
    assert ingest().shards_computed == 0 and current()
    # an ingest that wrote and deleted files (the shards of another digit count) lists again
    assert ingest(shard_digits=1).shards_removed == 3
    assert current(shard_digits=1) and not current()


def test_one_digit_shards_group_folders_and_switching_rebuilds(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = build_manifest(source)
    two = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")
    x2 = load_view(storage, "ecg_3by4")
    one = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                      shard_digits=1)
    assert (two.shards_total, one.shards_total) == (3, 2)  # aa, ab -> a; b0 -> b
    assert one.shards_removed == 3 and one.rows == two.rows
    assert sorted(p.name for p in (tmp_path / "store/tensors/ecg_3by4").iterdir()) == [
        "_index.json", "shard=a", "shard=b"]
    x1 = load_view(storage, "ecg_3by4")
    assert list(x1.ecg_ids) == list(x2.ecg_ids)
    np.testing.assert_array_equal(x1.x, x2.x)
    again = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                        shard_digits=1)
    assert (again.shards_reused, again.shards_computed) == (2, 0)
    with pytest.raises(ValueError, match="shard_digits"):
        ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1",
                    shard_digits=3)


def test_update_in_steps_matches_one_call_and_the_index_waits_for_every_shard(tmp_path):
    """survey -> update shard groups separately (as the asset's steps do) -> finish gives the
    one-call result; finishing with a stale shard, or from a partial survey, is refused."""
    write_tree(tmp_path / "raw")
    source = Storage(str(tmp_path / "raw"))
    manifest, _ = build_manifest(source)
    one = ingest_view(source, Storage(str(tmp_path / "one")), manifest, "ecg_3by4",
                      code_version="t1")
    st = Storage(str(tmp_path / "steps"))

    def survey(**kw):
        return survey_view(st, manifest, "ecg_3by4", code_version="t1", **kw)

    groups = survey().chunks(2, min_files=1)
    assert len(groups) == 2
    update_shards(survey(shards=groups[0]), source, st, groups[0])
    with pytest.raises(IngestError, match="not up to date"):
        finish_view(survey(), st)
    with pytest.raises(ValueError, match="every shard"):
        finish_view(survey(shards=groups[1]), st)
    counts = update_shards(survey(shards=groups[1]), source, st, groups[1])
    assert counts.shards_computed == len(groups[1])
    rep = finish_view(survey(), st, counts)
    assert rep.data_version == one.data_version and rep.rows == one.rows
    assert rep.rejected == one.rejected and st.exists("tensors/ecg_3by4/_index.json")


def _recorded(storage: Storage, view: str = "ecg_3by4") -> tuple[dict[str, str], set[str]]:
    """Every rejection (key -> reason) and every covered key in the shards' state files."""
    reasons: dict[str, str] = {}
    members: set[str] = set()
    for rel in storage.list(f"tensors/{view}/"):
        if rel.endswith("/_shard.json"):
            for part in json.loads(storage.read_bytes(rel))["parts"]:
                reasons.update({r["key"]: r["reason"] for r in part["rejects"]})
                members.update(part["members"])
    return reasons, members


def test_transient_faults_never_quarantine_and_a_rerun_matches_a_clean_run(
        tmp_path, s3_server, s3_bucket, faulty_s3):
    files = write_tree(tmp_path / "raw")
    upload_tree(s3_server, s3_bucket, "raw", tmp_path / "raw")
    clean_store = Storage(str(tmp_path / "clean"))
    clean_manifest, _, clean = run(Storage(f"s3://{s3_bucket}/raw", endpoint_url=s3_server),
                                   clean_store)
    src = Storage(f"s3://{s3_bucket}/raw", endpoint_url=faulty_s3.endpoint, max_attempts=3,
                  backoff_s=0.01)
    st = Storage(str(tmp_path / "store"))
    npz = f"/{s3_bucket}/raw/ecg-waveforms-npz/"

    def bursts() -> None:  # each file's first requests fail; the client rides them out
        faulty_s3.clear()
        faulty_s3.inject("error500", npz + "aa/", times=2)
        faulty_s3.inject("reset", npz + "ab/", times=2)
        faulty_s3.inject("slowdown", npz + "b0/", times=1)

    bursts()
    manifest, _ = build_manifest(src)
    assert manifest.equals(clean_manifest)
    assert faulty_s3.count(npz, outcome="reset") == 2 * 4  # 4 files in ab/, each reset twice
    # a fault that outlasts the client's retries: the run fails and records nothing for it
    bursts()
    stuck = "ecg-waveforms-npz/ab/ab00000001.npz"
    faulty_s3.inject("error500", f"/{s3_bucket}/raw/{stuck}", times=100)
    faulty_s3.rules.insert(0, faulty_s3.rules.pop())  # before the ab/ burst
    with pytest.raises(TransientStorageError, match=f"{stuck}.*3 attempts"):
        ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    # hashed for the manifest (2 resets, then read), then 3 failed attempts of the ingest
    assert faulty_s3.count(f"/{s3_bucket}/raw/{stuck}", method="GET") == 3 + 3
    reasons, members = _recorded(st)
    assert stuck not in members and "unreadable" not in reasons.values()
    # the faults clear: the next run reads the file and matches a clean run
    bursts()
    rep = ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    assert rep.data_version == clean.data_version
    assert _recorded(st) == _recorded(clean_store)
    assert sorted(r["reason"] for r in rep.rejects) == sorted(r["reason"] for r in clean.rejects)
    assert stuck in _recorded(st)[1] and len(_recorded(st)[1]) == len(files) - 1  # not notanid


def test_access_denied_fails_the_ingest_at_once_and_records_nothing(
        tmp_path, s3_server, s3_bucket, faulty_s3):
    write_tree(tmp_path / "raw")
    upload_tree(s3_server, s3_bucket, "raw", tmp_path / "raw")
    direct = Storage(f"s3://{s3_bucket}/raw", endpoint_url=s3_server)
    manifest, _ = build_manifest(direct)
    src = Storage(f"s3://{s3_bucket}/raw", endpoint_url=faulty_s3.endpoint, max_attempts=5)
    st = Storage(str(tmp_path / "store"))
    denied = f"/{s3_bucket}/raw/ecg-waveforms-npz/ab/"
    faulty_s3.inject("denied", denied, times=100)
    with pytest.raises(StorageAccessError, match="AccessDenied|access denied") as info:
        ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    assert f"bucket {s3_bucket!r}, prefix 'raw/ecg-waveforms-npz/ab/'" in str(info.value)
    keys = manifest.filter(pl.col("key").str.contains("/ab/"))["key"].to_list()
    assert max(faulty_s3.count(f"/{s3_bucket}/raw/{k}") for k in keys) == 1  # no retries
    assert _recorded(st) == ({}, set())
    with pytest.raises(StorageAccessError, match="prefix 'raw/ecg-waveforms-npz/ab/'"):
        build_manifest(src, None)  # hashing reads the files: the same fault, not a rejection
    faulty_s3.clear()
    rep = ingest_view(src, st, manifest, "ecg_3by4", code_version="t1")
    clean = ingest_view(direct, Storage(str(tmp_path / "clean")), manifest, "ecg_3by4",
                        code_version="t1")
    assert rep.data_version == clean.data_version and rep.rejected == clean.rejected
