"""Tests of the written waveform files (`acs_pipeline.synth.waveform`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from acs_pipeline.ecg.leads import N_SAMPLES
from acs_pipeline_tests.synth.cohort_files import LEAD_INDEX, load, npz_path


def test_npz_files_shape_dtype_nan_pattern(tiny):
    truth = pd.read_csv(tiny.truth_path)
    assert (truth["dataset"] == "v1").sum() == tiny.n_ecgs
    assert (truth["dataset"] == "holdout").sum() == tiny.n_holdout > 0
    windows = np.zeros((12, N_SAMPLES), dtype=bool)
    for j in range(12):
        windows[j, (j // 3) * 1250 : (j // 3 + 1) * 1250] = True
    exact = 0
    for ecg_id, ds in zip(truth["ecg_id"], truth["dataset"], strict=True):
        root = tiny.dataset_dir if ds == "v1" else tiny.holdout_dir
        with np.load(npz_path(root, ecg_id)) as z:
            assert z.files == ["ecg"]
            x = z["ecg"]
        assert x.shape == (15, 5000) and x.dtype == np.float32
        finite = np.isfinite(x)
        assert finite[12:].all(), "long strips are complete"
        # all short leads valid exactly in their 2.5-s window, except rarely one lead that is
        # shifted, shorter (still >= 1080 contiguous samples) or missing
        odd = np.flatnonzero((finite[:12] != windows).any(axis=1))
        exact += odd.size == 0
        assert odd.size <= 1
        for j in odd:
            valid = np.flatnonzero(finite[j])
            assert valid.size == 0 or (
                1080 <= valid.size <= 1250 and valid[-1] - valid[0] + 1 == valid.size
            )
        # the short leads agree with the long strips where both are valid
        for lead, row in (("V1", 12), ("II", 13), ("V5", 14)):
            j = LEAD_INDEX[lead]
            both = finite[j]
            assert np.array_equal(x[j, both], x[row, both])
        # digitised: multiples of 0.005 mV
        q = x[finite] / 0.005
        assert np.allclose(q, np.round(q), atol=1e-3)
        assert 0.2 < np.nanmax(np.abs(x)) < 10.0
    assert exact >= 0.85 * len(truth)


def test_legacy_npy_matches_index_and_long_strips(tiny):
    v1 = tiny.dataset_dir
    legacy = np.load(v1 / "ecg-waveform.npy")
    index = pd.read_csv(v1 / "ecg-npy-index.csv")
    assert legacy.shape == (tiny.n_ecgs, 3, 1000) and legacy.dtype == np.float32
    assert sorted(index["npy_index"]) == list(range(tiny.n_ecgs))
    for ecg_id, row in zip(index["ecg_id"][:10], index["npy_index"][:10], strict=True):
        long = load(v1, ecg_id)[12:, ::5]
        for k in range(3):
            assert np.corrcoef(long[k], legacy[row, k])[0, 1] > 0.9
