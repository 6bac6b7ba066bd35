"""Tests for evaluation.report: evaluation table, alignment errors, Markdown and HTML."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import numpy as np
import polars as pl
import pytest

from acs_pipeline.evaluation import metrics as M
from acs_pipeline.evaluation import report as R


@pytest.fixture(scope="module")
def inp() -> R.EvaluationInput:
    return R.synthetic_evaluation_input(n=600, seed=1)


@pytest.fixture(scope="module")
def result(inp) -> R.EvaluationResult:
    return R.evaluate(inp, n_boot=200, seed=0)


@pytest.fixture(scope="module")
def html(inp, result) -> str:
    return R.render_html(inp, result)


def _value(table: pl.DataFrame, model: str, metric: str, source_is_paper: bool = False) -> dict:
    paper = pl.col("source") == R.PAPER_SOURCE
    rows = table.filter(
        (pl.col("model") == model)
        & (pl.col("metric") == metric)
        & (paper if source_is_paper else ~paper)
    )
    assert rows.height == 1, (model, metric, rows)
    return rows.row(0, named=True)


def test_table_schema_and_values_match_metrics(inp, result):
    t = result.table
    assert t.columns == ["model", "metric", "value", "ci_low", "ci_high", "n", "source"]
    assert dict(zip(t.columns, t.dtypes, strict=True)) == R.TABLE_SCHEMA
    y = np.asarray(inp.y)
    for ms in inp.scores:
        row = _value(t, ms.name, "auroc")
        auc, lo, hi = M.delong_ci(y, ms.validation)
        assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((auc, lo, hi))
        assert row["n"] == 600 and ms.lineage in row["source"]
        assert inp.data_version in row["source"]
        boot = _value(t, ms.name, "auroc_bootstrap")
        expect = M.bootstrap_auroc_ci(y, ms.validation, n_boot=200, seed=0)
        assert (boot["ci_low"], boot["ci_high"]) == pytest.approx(expect)
        top = M.topk_metrics(y, ms.validation)
        assert _value(t, ms.name, "topk_ppv")["value"] == pytest.approx(top["ppv"])
        assert _value(t, ms.name, "topk_sensitivity")["value"] == pytest.approx(top["sens"])
    flag = _value(t, "has_st_eleva", "ppv")
    f = inp.flags["has_st_eleva"].astype(bool)
    assert flag["value"] == pytest.approx(y[f].mean())
    any_sens = _value(t, R.ANY_FLAG, "sensitivity")["value"]
    anyf = np.logical_or.reduce([v.astype(bool) for v in inp.flags.values()])
    assert any_sens == pytest.approx(anyf[y == 1].mean())


def test_table_has_paper_reference_rows(result):
    t = result.table
    assert _value(t, "S4", "auroc", source_is_paper=True)["ci_low"] == 0.674
    assert _value(t, "ResNet-50", "topk_sensitivity", source_is_paper=True)["value"] == 0.474
    assert _value(t, "has_st_eleva", "ppv", source_is_paper=True)["value"] == 0.654
    assert _value(t, "S4", "share_tp_no_classical", source_is_paper=True)["value"] == 0.491
    assert _value(t, "S4", "auroc[race=Black]", source_is_paper=True)["value"] == 0.780
    assert t.filter(pl.col("source") == R.PAPER_SOURCE).height == len(R._PAPER_ROWS)


def test_subgroups_paired_and_classical_rows(inp, result):
    t = result.table
    y = np.asarray(inp.y)
    s4 = inp.scores[0].validation
    female = np.array([v == "F" for v in inp.sex])
    row = _value(t, "S4", "auroc[sex=female]")
    assert row["value"] == pytest.approx(M.auroc(y[female], s4[female]))
    assert row["n"] == female.sum()
    best = result.summary["best_model"]
    assert best in {ms.name for ms in inp.scores if ms.kind == "model"}
    other = next(ms for ms in inp.scores if ms.name != best)
    p = _value(t, other.name, f"delong_p_vs[{best}]")["value"]
    best_scores = next(ms.validation for ms in inp.scores if ms.name == best)
    assert p == pytest.approx(M.delong_paired(y, other.validation, best_scores)[1])
    cc = M.classical_comparison(y, s4, inp.flags)
    share = _value(t, "S4", "share_flagged_no_classical")
    assert share["value"] == pytest.approx(cc["share_flagged_no_classical"])
    oracle = _value(t, "oracle", "share_tp_no_classical")  # the oracle gets the same numbers
    assert 0.0 < oracle["value"] < 1.0


def test_summary_is_json_and_markdown_has_tables(inp, result):
    text = json.dumps(result.summary)
    assert "S4" in text and result.summary["n"] == 600
    md = result.markdown
    for ms in inp.scores:
        assert f"| {ms.name} |" in md or f"| **{ms.name}** |" in md
    assert "| predictor | kind | AUROC (95 % CI) |" in md
    assert "0.703 (0.674-0.731)" in md  # the paper's S4 row next to ours
    assert inp.data_version in md


def test_html_contains_models_table_and_embedded_images(inp, html):
    for ms in inp.scores:
        assert ms.name in html and ms.lineage in html
    for label in R.CLASSICAL_FLAGS.values():
        assert label in html
    assert '<table id="main-table">' in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 6  # ROC, PR, cumulative, calibration, decision, Venn
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert "@media print" in html
    assert "Paired DeLong tests vs" in html and "Subgroups" in html


def test_write_report_is_atomic(tmp_path, inp, result):
    out = R.write_report(inp, result, tmp_path / "reports" / "evaluation_report.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["evaluation_report.html"]


def _with_scores(inp: R.EvaluationInput, idx: int, **changes) -> R.EvaluationInput:
    scores = list(inp.scores)
    scores[idx] = dataclasses.replace(scores[idx], **changes)
    return dataclasses.replace(inp, scores=scores)


def test_scores_aligned_by_id(inp, result):
    ids = list(inp.ecg_ids)
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = _with_scores(
        inp, 0, validation=inp.scores[0].validation[perm], ecg_ids=[ids[i] for i in perm]
    )
    res = R.evaluate(shuffled, n_boot=50)
    assert _value(res.table, "S4", "auroc")["value"] == pytest.approx(
        _value(result.table, "S4", "auroc")["value"]
    )


def test_missing_scores_are_named(inp):
    ids = list(inp.ecg_ids)
    bad = _with_scores(inp, 1, validation=inp.scores[1].validation[3:], ecg_ids=ids[3:])
    with pytest.raises(R.EvaluationInputError) as err:
        R.evaluate(bad, n_boot=10)
    msg = str(err.value)
    assert "'ResNet-18'" in msg and "3 evaluation ECGs have no score" in msg
    assert all(i in msg for i in ids[:3])
    short = _with_scores(inp, 1, validation=inp.scores[1].validation[:-2])
    with pytest.raises(R.EvaluationInputError, match="598 values but the evaluation set has 600"):
        R.evaluate(short, n_boot=10)


def test_extra_duplicate_and_nan_scores(inp):
    ids = list(inp.ecg_ids)
    v = inp.scores[0].validation
    extra = _with_scores(inp, 0, validation=np.r_[v, 0.5], ecg_ids=[*ids, "ecg_not_here"])
    with pytest.raises(R.EvaluationInputError, match="1 scored ids are not in.*ecg_not_here"):
        R.evaluate(extra, n_boot=10)
    dup = _with_scores(inp, 0, ecg_ids=[ids[0], *ids[:-1]])
    with pytest.raises(R.EvaluationInputError, match="more than once"):
        R.evaluate(dup, n_boot=10)
    nan = v.copy()
    nan[[5, 9]] = np.nan
    with pytest.raises(R.EvaluationInputError, match=f"2 NaN/inf values, e.g. for {ids[5]}"):
        R.evaluate(_with_scores(inp, 0, validation=nan), n_boot=10)
    with pytest.raises(R.EvaluationInputError, match="kind must be"):
        R.evaluate(_with_scores(inp, 0, kind="magic"), n_boot=10)


def test_single_class_and_bad_flags(inp):
    one = dataclasses.replace(inp, y=np.zeros(600, dtype=int))
    with pytest.raises(R.EvaluationInputError, match="needs both classes"):
        R.evaluate(one, n_boot=10)
    flags = dict(inp.flags)
    flags["has_depress"] = flags["has_depress"][:-1]
    with pytest.raises(R.EvaluationInputError, match="flag 'has_depress' has shape"):
        R.evaluate(dataclasses.replace(inp, flags=flags), n_boot=10)


def test_paper_name_aliases():
    assert R.paper_name("resnet18") == "ResNet-18"
    assert R.paper_name("hubert_ecg_base") == "HuBERT-ECG"
    assert R.paper_name("ecg_omi") == "ECG-OMI (ResNet-6)"
    assert R.paper_name("baseline") == "logistic regression (4 flags)"
    assert R.paper_name("logistic_baseline") == "logistic regression (4 flags)"
    assert R.paper_name("hubert_small") == "HuBERT-ECG"
    assert R.paper_name("has_st_eleva") == "has_st_eleva"
    assert R.paper_name("mystery") is None


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (266, 502), (10, 10)])
def test_wilson_interval_matches_scipy(k, n):
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    assert R._wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
