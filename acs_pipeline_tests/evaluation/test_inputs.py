"""Tests for evaluation.inputs: scores aligned by id, and inconsistent input named clearly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from acs_pipeline.evaluation.evaluate import evaluate
from acs_pipeline.evaluation.inputs import EvaluationInput, EvaluationInputError
from acs_pipeline_tests.evaluation.fixtures import table_row


def _with_scores(inp: EvaluationInput, idx: int, **changes) -> EvaluationInput:
    scores = list(inp.scores)
    scores[idx] = dataclasses.replace(scores[idx], **changes)
    return dataclasses.replace(inp, scores=scores)


def test_scores_aligned_by_id(inp, result):
    ids = list(inp.ecg_ids)
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = _with_scores(
        inp, 0, validation=inp.scores[0].validation[perm], ecg_ids=[ids[i] for i in perm]
    )
    res = evaluate(shuffled, n_boot=50)
    assert table_row(res.table, "S4", "auroc")["value"] == pytest.approx(
        table_row(result.table, "S4", "auroc")["value"]
    )


def test_missing_scores_are_named(inp):
    ids = list(inp.ecg_ids)
    bad = _with_scores(inp, 1, validation=inp.scores[1].validation[3:], ecg_ids=ids[3:])
    with pytest.raises(EvaluationInputError) as err:
        evaluate(bad, n_boot=10)
    msg = str(err.value)
    assert "'ResNet-18'" in msg and "3 evaluation ECGs have no score" in msg
    assert all(i in msg for i in ids[:3])
    short = _with_scores(inp, 1, validation=inp.scores[1].validation[:-2])
    with pytest.raises(EvaluationInputError, match="598 values but the evaluation set has 600"):
        evaluate(short, n_boot=10)


def test_extra_duplicate_and_nan_scores(inp):
    ids = list(inp.ecg_ids)
    v = inp.scores[0].validation
    extra = _with_scores(inp, 0, validation=np.r_[v, 0.5], ecg_ids=[*ids, "ecg_not_here"])
    with pytest.raises(EvaluationInputError, match="1 scored ids are not in.*ecg_not_here"):
        evaluate(extra, n_boot=10)
    dup = _with_scores(inp, 0, ecg_ids=[ids[0], *ids[:-1]])
    with pytest.raises(EvaluationInputError, match="more than once"):
        evaluate(dup, n_boot=10)
    nan = v.copy()
    nan[[5, 9]] = np.nan
    with pytest.raises(EvaluationInputError, match=f"2 NaN/inf values, e.g. for {ids[5]}"):
        evaluate(_with_scores(inp, 0, validation=nan), n_boot=10)
    with pytest.raises(EvaluationInputError, match="kind must be"):
        evaluate(_with_scores(inp, 0, kind="magic"), n_boot=10)


def test_single_class_and_bad_flags(inp):
    one = dataclasses.replace(inp, y=np.zeros(600, dtype=int))
    with pytest.raises(EvaluationInputError, match="needs both classes"):
        evaluate(one, n_boot=10)
    flags = dict(inp.flags)
    flags["has_depress"] = flags["has_depress"][:-1]
    with pytest.raises(EvaluationInputError, match="flag 'has_depress' has shape"):
        evaluate(dataclasses.replace(inp, flags=flags), n_boot=10)
