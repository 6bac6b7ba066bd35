"""Numeric tensor checks, whole or combined from parts (recorded beside each part at ingest),
and check results remembered by version."""

import json

import numpy as np
import polars as pl

from acs_pipeline.ingest.read import load_view, view_version
from acs_pipeline.ingest.stats import (
    MAX_ABS_MV,
    SYSTEMIC_FRACTION,
    SYSTEMIC_MIN,
    amplitude_problems,
    combine_stats,
    remembered,
    systemic_rejections,
    tensor_stats,
    view_stats,
)
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.ingest.raw_tree import beat_train, npz_bytes, run, write_tree


def test_stats_count_non_finite_flat_and_out_of_range():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, (6, 3, 100)).astype(np.float16)
    x[1, 2] = 0.0  # a flat channel
    x[2, 0, 5] = np.nan
    x[4, 1, 7] = MAX_ABS_MV + 5
    s = tensor_stats(x, batch=4)
    assert (s.rows, s.channels, s.length) == (6, 3, 100)
    assert (s.non_finite, s.flat_channels, s.out_of_range) == (1, 1, 1) and not s.ok
    assert s.max_abs >= MAX_ABS_MV + 4


def test_combined_parts_equal_the_whole():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.5, (9, 3, 50)).astype(np.float32)
    x[7, 0, :] = 0.0
    x[3, 1, 4] = np.inf
    whole = tensor_stats(x)
    parts = [tensor_stats(x[a:b]) for a, b in ((0, 0), (0, 4), (4, 9))]
    assert combine_stats(parts) == whole
    assert combine_stats([]).rows == 0
    other = tensor_stats(np.zeros((2, 12, 50), np.float32))
    mixed = combine_stats([whole, other])
    assert (mixed.channels, mixed.length, mixed.rows) == (-1, -1, 11)


def test_amplitude_problems_per_ecg():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.5, (5, 3, 200)).astype(np.float32)
    x[1] *= 1000  # microvolts
    x[2] = 0.001 * x[2]  # volts
    x[3, 0, 9] = np.nan
    x[4] = np.clip(x[4], -(MAX_ABS_MV - 1), MAX_ABS_MV - 1)
    x[4, 2, 3] = MAX_ABS_MV - 0.5  # large but physiological
    got = amplitude_problems(x)
    assert got[0] is None and got[4] is None
    assert got[1][0] == "amplitude" and got[2][0] == "amplitude"
    assert f"values span [{x[1].min():.4g}, {x[1].max():.4g}] mV" in got[1][1]
    assert got[3] == ("non_finite", "1 non-finite samples after processing")
    assert amplitude_problems(np.zeros((0, 3, 200), np.float32)) == []


def test_rejections_are_systemic_only_beyond_one_percent_and_a_few_files():
    manifest = pl.DataFrame({
        "key": [f"k{s}{i}" for s in ("a", "b") for i in range(600)] + ["odd.npz"],
        "shard": ["aa"] * 600 + ["bb"] * 600 + [None]})
    few = pl.DataFrame({"key": [f"ka{i}" for i in range(SYSTEMIC_MIN - 1)]
                        + ["kb0", "odd.npz"],
                        "reason": ["amplitude"] * (SYSTEMIC_MIN - 1)
                        + ["corrupt_npz", "unexpected_file_name"]})
    assert systemic_rejections(few, manifest).is_empty()
    n = int(600 * SYSTEMIC_FRACTION) + 1  # 7 of 600: over 1 % and over SYSTEMIC_MIN
    many = pl.concat([few, pl.DataFrame({"key": [f"kb{i}" for i in range(1, n + 1)],
                                         "reason": ["amplitude"] * n})])
    assert systemic_rejections(many, manifest).to_dicts() == [
        {"shard": "bb", "reason": "amplitude", "rejected": n, "listed": 600}]


def test_view_stats_come_from_the_parts_records_and_equal_a_full_read(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    run(source, storage)
    # a second part in one shard: stats of carried and new rows are recorded too
    new = tmp_path / "raw/ecg-waveforms-npz/ab/ab12345678.npz"
    new.write_bytes(npz_bytes(beat_train(np.random.default_rng(5)) * 3))
    _, _, rep = run(source, storage)
    whole = tensor_stats(load_view(storage, "ecg_3by4").x)
    got, parts_read = view_stats(storage, "ecg_3by4")
    assert parts_read == 0 and rep.parts == 4
    assert got == whole and got.rows == rep.rows == 10
    # A part recorded without stats (written before they were) is read and measured.
    rel = "tensors/ecg_3by4/_index.json"
    index = json.loads(storage.read_bytes(rel))
    version = view_version(storage, "ecg_3by4")
    next(iter(index["shards"].values()))[0]["stats"] = None
    storage.write_bytes(rel, json.dumps(index).encode())
    assert view_stats(storage, "ecg_3by4") == (whole, 1)
    assert view_version(storage, "ecg_3by4") == version  # stats are not in the version
    # A recorded part with a bad value shows in the combined stats.
    index["shards"]["b0"][0]["stats"]["non_finite"] = 3
    storage.write_bytes(rel, json.dumps(index).encode())
    assert view_stats(storage, "ecg_3by4")[0].non_finite == 3


def test_remembered_reuses_a_result_only_for_the_same_version(tmp_path):
    storage = Storage(str(tmp_path))
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"passed": True, "n": len(calls)}

    rel = "checks/x.json"
    assert remembered(storage, rel, "v1", compute) == ({"passed": True, "n": 1}, False)
    assert remembered(storage, rel, "v1", compute) == ({"passed": True, "n": 1}, True)
    assert remembered(storage, rel, "v2", compute) == ({"passed": True, "n": 2}, False)
    assert remembered(storage, rel, "v1", compute) == ({"passed": True, "n": 3}, False)
    storage.write_bytes(rel, b"{not json")
    assert remembered(storage, rel, "v1", compute) == ({"passed": True, "n": 4}, False)
    assert len(calls) == 4
