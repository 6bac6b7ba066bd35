"""Decoding and transforming raw files into rows, in batches."""

import numpy as np
import pytest

from acs_pipeline.ingest.manifest import ecg_id_for_key
from acs_pipeline.ingest.transform import transform_rows
from acs_pipeline_tests.ingest.raw_tree import beat_train, npz_bytes, write_tree


@pytest.mark.parametrize("view", ["ecg_3by4", "ecg_12lead"])
def test_batches_across_shards_match_one_file_at_a_time(tmp_path, view):
    """Rows come out in key order whatever the batch size, rejections in their place, and each
    tensor equals the same file transformed alone."""
    files = write_tree(tmp_path / "raw")
    keys = sorted(k for k in files if ecg_id_for_key(k))
    pairs = [(k, ecg_id_for_key(k)) for k in keys]
    reads = [(k, files[k]) for k in keys]
    reads[4] = (keys[4], OSError("gone"))  # a read error mid-stream
    alone = list(transform_rows(view, pairs, iter(reads), batch=1))
    for batch in (2, 3, 64):
        rows = list(transform_rows(view, pairs, iter(reads), batch=batch))
        assert [r[0] for r in rows] == [p[1] for p in pairs]
        for (_, x, rej), (_, x1, rej1) in zip(rows, alone, strict=True):
            assert (rej is None) == (rej1 is None) and rej == rej1
            if x is not None:
                np.testing.assert_array_equal(x, x1)
    reasons = {r[2]["key"]: r[2]["reason"] for r in alone if r[2]}
    assert reasons[keys[4]] == "unreadable"
    assert reasons["ecg-waveforms-npz/aa/aa0000ffff.npz"] == "corrupt_npz"
    with pytest.raises(RuntimeError, match="expected"):
        list(transform_rows(view, pairs, iter(reads[1:] + reads[:1]), batch=2))


@pytest.mark.parametrize("view", ["ecg_3by4", "ecg_12lead"])
def test_a_recording_outside_the_physiological_range_is_rejected_alone(view):
    """Microvolts (x1000), volts (/1000) and a blank file are quarantined one by one, with the
    measured range; the other ECGs of the batch come out as they would alone."""
    rng = np.random.default_rng(4)
    raws = [beat_train(rng) for _ in range(5)]
    scaled = {1: 1000.0, 3: 0.001}
    blank = np.where(np.isnan(raws[4]), np.nan, 0.0).astype(np.float32)
    files = [npz_bytes(r * scaled.get(i, 1.0)) for i, r in enumerate(raws[:4])]
    files.append(npz_bytes(blank))
    pairs = [(f"k{i}", f"ecg{i:010x}") for i in range(5)]
    rows = list(transform_rows(view, pairs, iter(zip([k for k, _ in pairs], files,
                                                     strict=True)), batch=8))
    rejected = {r[0]: r[2] for r in rows if r[2]}
    assert sorted(rejected) == [pairs[1][1], pairs[3][1], pairs[4][1]]
    # (the 12-lead reconstruction finds no R-peak in a blank or volt-scaled file first)
    allowed = {"amplitude"} if view == "ecg_3by4" else {"amplitude", "no_rpeaks"}
    assert {r["reason"] for r in rejected.values()} <= allowed
    assert rejected[pairs[1][1]]["reason"] == "amplitude"
    micro = rejected[pairs[1][1]]["detail"]
    assert "after processing" in micro and "the file's values span" in micro
    peak = float(micro.split("peak |x| ")[1].split(" ")[0])
    assert 300 < peak < 5000  # the measured range, in the detail
    for i in (0, 2):
        (alone,) = transform_rows(view, [pairs[i]], iter([(pairs[i][0], files[i])]), batch=1)
        np.testing.assert_array_equal(rows[i][1], alone[1])
        assert rows[i][2] is None
