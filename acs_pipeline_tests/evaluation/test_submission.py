"""Tests for evaluation.submission: validation before writing, CSV bytes, read-back checks."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest

from acs_pipeline.evaluation import submission as S

HOLDOUT = [f"ecg{i:010x}" for i in range(1, 9)]


def test_build_submission_orders_rows_by_holdout_and_keeps_precision():
    ids = list(reversed(HOLDOUT))
    preds = np.linspace(0.0, 1.0, len(ids))
    data = S.build_submission(HOLDOUT, ids, preds)
    frame = pl.read_csv(io.BytesIO(data))
    assert frame.columns == ["ecg_id", "prediction"]
    assert frame["ecg_id"].to_list() == HOLDOUT
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), preds[::-1])
    assert data.decode().splitlines()[0] == "ecg_id,prediction"
    assert S.check_submission_csv(HOLDOUT, data) == len(HOLDOUT)


def test_configurable_column_names():
    data = S.build_submission(HOLDOUT, HOLDOUT, np.full(8, 0.5), "id", "acs_probability")
    assert data.startswith(b"id,acs_probability\n")
    assert S.check_submission_csv(HOLDOUT, data, "id", "acs_probability") == len(HOLDOUT)
    with pytest.raises(S.SubmissionError, match="columns"):
        S.check_submission_csv(HOLDOUT, data)
    with pytest.raises(S.SubmissionError, match="both 'x'"):
        S.build_submission(HOLDOUT, HOLDOUT, np.full(8, 0.5), "x", "x")


def test_missing_ids_named_with_counts():
    with pytest.raises(S.SubmissionError) as err:
        S.build_submission(HOLDOUT, HOLDOUT[2:], np.full(6, 0.5))
    msg = str(err.value)
    assert "6 rows for 8 holdout ECGs" in msg
    assert f"2 holdout ids have no prediction: {HOLDOUT[0]}, {HOLDOUT[1]}" in msg


def test_extra_and_duplicate_ids():
    ids = [*HOLDOUT, "ecgffffffffff", HOLDOUT[3]]
    with pytest.raises(S.SubmissionError) as err:
        S.build_submission(HOLDOUT, ids, np.full(10, 0.5))
    msg = str(err.value)
    assert "1 ids are not in the holdout set: ecgffffffffff" in msg
    assert f"1 ids appear more than once: {HOLDOUT[3]}" in msg


def test_nan_and_out_of_range_predictions():
    preds = np.full(8, 0.5)
    preds[1] = np.nan
    preds[4] = 1.2
    preds[6] = -0.1
    with pytest.raises(S.SubmissionError) as err:
        S.build_submission(HOLDOUT, HOLDOUT, preds)
    msg = str(err.value)
    assert f"1 predictions are NaN/inf, for ids {HOLDOUT[1]}" in msg
    assert "2 predictions are outside [0, 1]" in msg and HOLDOUT[4] in msg and HOLDOUT[6] in msg
    with pytest.raises(S.SubmissionError, match=r"predictions have shape \(7,\)"):
        S.build_submission(HOLDOUT, HOLDOUT, np.full(7, 0.5))
    with pytest.raises(S.SubmissionError, match="holdout id list itself repeats"):
        S.build_submission([*HOLDOUT, HOLDOUT[0]], HOLDOUT, np.full(8, 0.5))


def test_example_ids_are_capped():
    holdout = [f"ecg{i:010x}" for i in range(100)]
    with pytest.raises(
        S.SubmissionError, match=r"100 holdout ids have no prediction: .* \(\+95 more\)"
    ):
        S.build_submission(holdout, ["x"], [0.5])


def test_check_submission_csv_rejects_bad_files():
    bad = b"ecg_id,prediction\n" + b"".join(f"{i},0.5\n".encode() for i in HOLDOUT[:-1])
    with pytest.raises(S.SubmissionError, match="1 holdout ids have no prediction"):
        S.check_submission_csv(HOLDOUT, bad)
    text = b"ecg_id,prediction\n" + b"".join(f"{i},abc\n".encode() for i in HOLDOUT)
    with pytest.raises(S.SubmissionError, match="not numeric"):
        S.check_submission_csv(HOLDOUT, text)


def test_submission_key():
    assert S.submission_key("mace", "s4") == "submission/mace/s4.csv"
    with pytest.raises(S.SubmissionError, match="task must be one of"):
        S.submission_key("stemi", "s4")
    with pytest.raises(S.SubmissionError, match="not a valid file name"):
        S.submission_key("acs", "../s4")
