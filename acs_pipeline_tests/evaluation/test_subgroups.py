"""Tests for evaluation.subgroups."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acs_pipeline.evaluation.subgroups import subgroup_auroc
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
    assert np.isnan(by["X"]["auroc"]) and by["X"]["reason"] == "n < 20"
    one = subgroup_auroc(
        np.r_[np.zeros(30), np.ones(30)], np.arange(60.0), ["a"] * 30 + ["b"] * 30
    )
    assert all(r["reason"] == "only one class" and np.isnan(r["auroc"]) for r in one)
