"""Tests for evaluation.evaluate: the benchmark table's values, reference rows and summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from acs_pipeline.evaluation.evaluate import TABLE_SCHEMA, _wilson
from acs_pipeline.evaluation.flags import ANY_FLAG, classical_comparison
from acs_pipeline.evaluation.paper import PAPER_ROWS, PAPER_SOURCE
from acs_pipeline.evaluation.ranking import (
    auroc,
    bootstrap_auroc_ci,
    delong_ci,
    delong_paired,
    topk_metrics,
)
from acs_pipeline_tests.evaluation.fixtures import table_row


def test_table_schema_and_values_match_metrics(inp, result):
    t = result.table
    assert t.columns == ["model", "metric", "value", "ci_low", "ci_high", "n", "source"]
    assert dict(zip(t.columns, t.dtypes, strict=True)) == TABLE_SCHEMA
    y = np.asarray(inp.y)
    for ms in inp.scores:
        row = table_row(t, ms.name, "auroc")
        auc, lo, hi = delong_ci(y, ms.validation)
        assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((auc, lo, hi))
        assert row["n"] == 600 and ms.lineage in row["source"]
        assert inp.data_version in row["source"]
        boot = table_row(t, ms.name, "auroc_bootstrap")
        expect = bootstrap_auroc_ci(y, ms.validation, n_boot=200, seed=0)
        assert (boot["ci_low"], boot["ci_high"]) == pytest.approx(expect)
        top = topk_metrics(y, ms.validation)
        assert table_row(t, ms.name, "topk_ppv")["value"] == pytest.approx(top["ppv"])
        assert table_row(t, ms.name, "topk_sensitivity")["value"] == pytest.approx(top["sens"])
    flag = table_row(t, "has_st_eleva", "ppv")
    f = inp.flags["has_st_eleva"].astype(bool)
    assert flag["value"] == pytest.approx(y[f].mean())
    any_sens = table_row(t, ANY_FLAG, "sensitivity")["value"]
    anyf = np.logical_or.reduce([v.astype(bool) for v in inp.flags.values()])
    assert any_sens == pytest.approx(anyf[y == 1].mean())


def test_table_has_paper_reference_rows(result):
    t = result.table
    assert table_row(t, "S4", "auroc", source_is_paper=True)["ci_low"] == 0.674
    assert table_row(t, "ResNet-50", "topk_sensitivity", source_is_paper=True)["value"] == 0.474
    assert table_row(t, "has_st_eleva", "ppv", source_is_paper=True)["value"] == 0.654
    assert table_row(t, "S4", "share_tp_no_classical", source_is_paper=True)["value"] == 0.491
    assert table_row(t, "S4", "auroc[race=Black]", source_is_paper=True)["value"] == 0.780
    assert t.filter(pl.col("source") == PAPER_SOURCE).height == len(PAPER_ROWS)


def test_subgroups_paired_and_classical_rows(inp, result):
    t = result.table
    y = np.asarray(inp.y)
    s4 = inp.scores[0].validation
    female = np.array([v == "F" for v in inp.sex])
    row = table_row(t, "S4", "auroc[sex=female]")
    assert row["value"] == pytest.approx(auroc(y[female], s4[female]))
    assert row["n"] == female.sum()
    best = result.summary["best_model"]
    assert best in {ms.name for ms in inp.scores if ms.kind == "model"}
    other = next(ms for ms in inp.scores if ms.name != best)
    p = table_row(t, other.name, f"delong_p_vs[{best}]")["value"]
    best_scores = next(ms.validation for ms in inp.scores if ms.name == best)
    assert p == pytest.approx(delong_paired(y, other.validation, best_scores)[1])
    cc = classical_comparison(y, s4, inp.flags)
    share = table_row(t, "S4", "share_flagged_no_classical")
    assert share["value"] == pytest.approx(cc["share_flagged_no_classical"])
    oracle = table_row(t, "oracle", "share_tp_no_classical")  # the oracle gets the same numbers
    assert 0.0 < oracle["value"] < 1.0



@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (266, 502), (10, 10)])
def test_wilson_interval_matches_scipy(k, n):
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    assert _wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
