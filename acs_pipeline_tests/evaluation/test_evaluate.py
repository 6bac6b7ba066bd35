"""Tests for evaluation.evaluate: the benchmark table's values, reference rows and summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from acs_pipeline.evaluation.evaluate import (
    TABLE_KEY,
    TABLE_KINDS,
    TABLE_SCHEMA,
    _wilson,
    check_table_key,
    evaluate,
)
from acs_pipeline.evaluation.flags import ANY_FLAG, classical_comparison
from acs_pipeline.evaluation.inputs import EvaluationInput, EvaluationInputError, ModelScores
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
    assert t.columns == ["model", "kind", "metric", "value", "ci_low", "ci_high", "n", "source"]
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
    assert t.filter(pl.col("kind") == "reference").height == len(PAPER_ROWS)


def test_table_key_is_unique_with_kind(inp, result):
    t = result.table
    assert t.select(TABLE_KEY).is_duplicated().sum() == 0
    assert set(t["kind"]) == set(TABLE_KINDS)
    kinds = {ms.name: ms.kind for ms in inp.scores} | {f: "flag" for f in [*inp.flags, ANY_FLAG]}
    ours = t.filter(pl.col("kind") != "reference")
    assert dict(ours.select("model", "kind").unique().iter_rows()) == kinds
    # without the kind, our rows and the paper's share (model, metric) keys: the flags always,
    # and here the models too (the synthetic input names them like the paper)
    dup = t.filter(t.select("model", "metric").is_duplicated())
    assert set(dup["kind"]) == {"flag", "reference", "model", "baseline"}
    assert {"has_st_eleva", "has_depress", "S4"} <= set(dup["model"])
    with pytest.raises(EvaluationInputError, match="1 duplicated keys"):
        check_table_key(pl.concat([t, t.head(1)]))
    with pytest.raises(EvaluationInputError, match="unknown kinds"):
        check_table_key(t.with_columns(kind=pl.lit("paper")))


def test_brier_skill_and_chance_rows(inp, result):
    from sklearn.metrics import brier_score_loss

    t = result.table
    y = np.asarray(inp.y)
    prev_brier = brier_score_loss(y, np.full(y.size, y.mean()))
    anyf = np.logical_or.reduce([v.astype(bool) for v in inp.flags.values()])
    for ms in inp.scores:
        skill = table_row(t, ms.name, "brier_skill")["value"]
        assert skill == pytest.approx(1 - brier_score_loss(y, ms.validation) / prev_brier)
        chance = table_row(t, ms.name, "share_flagged_no_classical_chance")["value"]
        assert chance == pytest.approx((~anyf).mean())
        tp_chance = table_row(t, ms.name, "share_tp_no_classical_chance")["value"]
        assert tp_chance == pytest.approx((~anyf[y == 1]).mean())
    s4 = result.summary["models"]["S4"]
    assert s4["share_flagged_no_classical_chance"] == pytest.approx((~anyf).mean())


def test_holm_adjusts_every_test_against_the_best(inp, result):
    t = result.table
    y = np.asarray(inp.y)
    best = result.summary["best_model"]
    preds = {ms.name: ms.validation for ms in inp.scores} | {
        k: v.astype(float) for k, v in inp.flags.items()
    }
    preds[ANY_FLAG] = np.logical_or.reduce([v.astype(bool) for v in inp.flags.values()]) * 1.0
    raw = {k: delong_paired(y, v, preds[best])[1] for k, v in preds.items() if k != best}
    # Holm by hand: the i-th smallest of m p-values times (m - i), running maximum, cap 1
    ranked = sorted(raw, key=raw.get)
    m, running, expect = len(ranked), 0.0, {}
    for i, name in enumerate(ranked):
        running = max(running, (m - i) * raw[name])
        expect[name] = min(1.0, running)
    for name, p in expect.items():
        assert table_row(t, name, f"delong_p_vs[{best}]")["value"] == pytest.approx(raw[name])
        assert table_row(t, name, f"delong_p_holm_vs[{best}]")["value"] == pytest.approx(p)
    assert m == 11 and all(expect[n] >= raw[n] for n in expect)
    assert sum(expect[n] > 1.5 * raw[n] for n in expect) >= 5  # the correction bites


def test_too_few_cases_give_no_interval():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(6), np.zeros(60)].astype(int)
    scores = [ModelScores("m", rng.uniform(size=y.size) + 0.3 * y, "test")]
    res = evaluate(EvaluationInput([f"e{i}" for i in range(y.size)], y, scores, {}), n_boot=20)
    row = table_row(res.table, "m", "auroc")
    assert row["value"] == pytest.approx(auroc(y, scores[0].validation))
    assert row["ci_low"] is None and row["ci_high"] is None
    assert table_row(res.table, "m", "auroc_bootstrap")["ci_low"] is None
    assert "(too few cases for a CI)" in res.markdown


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
