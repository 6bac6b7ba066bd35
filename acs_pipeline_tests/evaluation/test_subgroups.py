"""Tests for evaluation.subgroups."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acs_pipeline.evaluation.checks import MetricInputError
from acs_pipeline.evaluation.subgroups import MIN_PER_CLASS, TOO_FEW, subgroup_auroc
from acs_pipeline_tests.evaluation.fixtures import labelled_scores


def test_subgroup_auroc_values_order_and_reasons():
    y, s = labelled_scores(n=400, seed=6)
    g = np.where(np.arange(400) % 2 == 0, "F", "M").astype(object)
    g[:10] = None
    g[10:15] = "X"
    rows = subgroup_auroc(y, s, g, order=["M", "F"])
    assert [r["group"] for r in rows] == ["M", "F", "X", "missing"]
    by = {r["group"]: r for r in rows}
    mask = g == "F"
    assert by["F"]["auroc"] == pytest.approx(roc_auc_score(y[mask], s[mask]))
    assert by["F"]["n"] == mask.sum() and by["F"]["positives"] == y[mask].sum()
    assert np.isnan(by["X"]["auroc"]) and by["X"]["reason"].startswith(TOO_FEW)
    one = subgroup_auroc(
        np.r_[np.zeros(30), np.ones(30)], np.arange(60.0), ["a"] * 30 + ["b"] * 30
    )
    assert all(r["reason"].startswith(TOO_FEW) and np.isnan(r["auroc"]) for r in one)


def test_subgroup_with_two_positives_is_too_few_not_a_degenerate_ci():
    # 2 positives that outrank all 40 negatives: DeLong would give 1.000 (1.000-1.000)
    y = np.r_[np.ones(2), np.zeros(40), np.ones(30), np.zeros(30)].astype(int)
    s = np.r_[[5.0, 6.0], np.arange(40.0) / 40, np.linspace(0, 2, 30), np.linspace(-1, 1, 30)]
    g = np.array(["old"] * 42 + ["young"] * 60, dtype=object)
    rows = {r["group"]: r for r in subgroup_auroc(y, s, g)}
    old = rows["old"]
    assert old["positives"] == 2 and np.isnan(old["auroc"]) and np.isnan(old["ci_low"])
    assert old["reason"] == f"{TOO_FEW} (2 ACS, 40 without; need {MIN_PER_CLASS} of each)"
    assert rows["young"]["reason"] is None and 0.5 < rows["young"]["auroc"] < 1.0
    # the rule is per class: 10 of each is enough, 9 negatives are not
    y10 = np.r_[np.ones(10), np.zeros(10)].astype(int)
    s10 = np.arange(20.0) % 7
    assert subgroup_auroc(y10, s10, ["a"] * 20)[0]["reason"] is None
    assert subgroup_auroc(y10[:-1], s10[:-1], ["a"] * 19)[0]["reason"].startswith(TOO_FEW)
    with pytest.raises(MetricInputError, match="min_per_class"):
        subgroup_auroc(y10, s10, ["a"] * 20, min_per_class=0)
