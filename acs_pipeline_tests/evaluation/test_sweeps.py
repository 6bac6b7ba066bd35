"""Tests for evaluation.sweeps: seed sweeps validated, summarized and shown in the report."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from markupsafe import escape

from acs_pipeline.evaluation.report import render_html
from acs_pipeline.evaluation.sweeps import (
    SUBMISSION_NOTE,
    SeedRun,
    SeedSweep,
    SeedSweepError,
    auroc_spread,
    summary,
    sweep_section,
)
from acs_pipeline_tests.evaluation.fixtures import html_rows

CANNOT = "cannot train: 3 positive(s) in validation"


def runs() -> list[SeedRun]:
    return [
        SeedRun("default", 0, 0, 0.70, 0.71),
        SeedRun("training_seed", 1, 0, 0.65, 0.69),
        SeedRun("training_seed", 2, 0, 0.62, 0.66),
        SeedRun("split_seed", 0, 5, 0.58, 0.75),
        SeedRun("split_seed", 0, 6, None, error=CANNOT),
    ]


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start))]


def test_spread_is_mean_sample_sd_min_max_and_counts_failed_runs():
    got = auroc_spread([0.7, 0.65, None, float("nan"), 0.62])
    a = np.array([0.7, 0.65, 0.62])
    assert (got["runs"], got["failed"]) == (3, 2)
    assert got["mean_auroc"] == pytest.approx(a.mean())
    assert got["sd_auroc"] == pytest.approx(a.std(ddof=1))
    assert (got["min_auroc"], got["max_auroc"]) == (0.62, 0.7)
    one = auroc_spread([0.7, None])
    assert (one["runs"], one["failed"], one["sd_auroc"], one["mean_auroc"]) == (1, 1, None, 0.7)
    assert auroc_spread([None])["mean_auroc"] is None


def test_summary_counts_the_default_run_in_each_kind():
    by = {r["kind"]: r for r in summary(SeedSweep("S4", runs()))}
    assert by["training_seed"]["mean_auroc"] == pytest.approx(np.mean([0.70, 0.65, 0.62]))
    assert (by["split_seed"]["runs"], by["split_seed"]["failed"]) == (2, 1)
    assert by["split_seed"]["mean_auroc"] == pytest.approx(0.64)
    only_training = SeedSweep("S4", runs()[:2])
    assert [r["kind"] for r in summary(only_training)] == ["training_seed"]


def test_the_report_shows_each_sweep_its_spread_and_every_run(inp, result):
    sweep = SeedSweep("S4", runs(), source="/store/reports/seed_sweep/S4_runs.csv")
    html = render_html(dataclasses.replace(inp, sweeps=[sweep]), result)
    section = _section(html, '<h2 id="seed-sweeps">', 'id="reference"')
    assert html.index('id="seed-sweeps"') < html.index('id="reference"')
    assert str(escape(SUBMISSION_NOTE)) in section and "other validation ECGs" in section
    assert "/store/reports/seed_sweep/S4_runs.csv" in section
    block = _section(section, 'id="sweep-S4"', "</div>")
    summary_rows = html_rows(_section(block, "sweep-summary", "</table>"))
    train = np.array([0.70, 0.65, 0.62])
    assert summary_rows[0] == [
        "training seed", "3", "0", f"{train.mean():.3f}", f"{train.std(ddof=1):.3f}", "0.620",
        "0.700"]
    split = np.array([0.70, 0.58])
    assert summary_rows[1] == [
        "split seed", "2", "1", "0.640", f"{split.std(ddof=1):.3f}", "0.580", "0.700"]
    run_rows = html_rows(_section(block, "sweep-runs", "</table>"))
    assert run_rows == [
        ["default (submission)", "0", "0", "0.700", "0.710", ""],
        ["training seed", "1", "0", "0.650", "0.690", ""],
        ["training seed", "2", "0", "0.620", "0.660", ""],
        ["split seed", "0", "5", "0.580", "0.750", ""],
        ["split seed", "0", "6", "n/a", "n/a", CANNOT],
    ]
    assert not re.search(r'(src|href)="(https?:)?//', html)  # still self-contained


def test_no_section_without_sweeps_and_a_left_out_sweep_says_why(inp, result):
    html = render_html(inp, result)
    assert "seed-sweeps" not in html and "Seed sweeps" not in html
    reason = "its default run is not the current S4_acs_checkpoint"
    page = render_html(dataclasses.replace(inp, sweeps_left_out={"S4": reason}), result)
    section = _section(page, '<h2 id="seed-sweeps">', 'id="reference"')
    assert f"Seed sweep of S4 not shown: {reason}" in section
    assert 'id="sweep-S4"' not in section


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("best", 0, 0, 0.7), {}, "kind must be one of"),
    (("training_seed", 1.5, 0, 0.7), {}, "training_seed must be an integer"),
    (("training_seed", 1, True, 0.7), {}, "split_seed must be an integer"),
    (("training_seed", 1, 0, 1.2), {}, r"validation_auroc must be in \[0, 1\]"),
    (("training_seed", 1, 0, "0.7"), {}, "validation_auroc must be a number"),
    (("training_seed", 1, 0, 0.7), {"selecting_auroc": -0.1}, "selecting_auroc must be in"),
    (("split_seed", 0, 3, None), {}, "no validation_auroc and no error saying why"),
    (("split_seed", 0, 3, float("nan")), {"error": " "}, "error must be a non-empty string"),
    (("split_seed", 0, 3, 0.6), {"error": "boom"}, "both a validation_auroc and an error"),
])
def test_a_bad_run_is_an_error_naming_it(args, kwargs, match):
    with pytest.raises(SeedSweepError, match=match):
        SeedRun(*args, **kwargs)


def test_a_run_takes_numpy_numbers_and_nan_as_failed():
    r = SeedRun("split_seed", np.int64(0), np.int32(4), np.float64("nan"), error=CANNOT)
    assert (r.training_seed, r.split_seed, r.validation_auroc, r.failed) == (0, 4, None, True)
    assert type(r.split_seed) is int


@pytest.mark.parametrize(("model", "rows", "match"), [
    ("", runs(), "non-empty name"),
    ("S4", runs()[1:], "0 default runs, expected exactly 1"),
    ("S4", [*runs(), SeedRun("default", 0, 0, 0.7)], "2 default runs"),
    ("S4", runs()[:1], "no run besides the default"),
    ("S4", [*runs(), SeedRun("training_seed", 1, 0, 0.6)], r"\('training_seed', 1, 0\) appears"),
    ("S4", [*runs(), SeedRun("training_seed", 3, 7, 0.6)], "splits are fixed at the default's 0"),
    ("S4", [*runs(), SeedRun("split_seed", 3, 7, 0.6)], "fixed at the default's 0"),
    ("S4", [*runs(), {"kind": "split_seed"}], "runs must be SeedRun, got dict"),
])
def test_a_bad_sweep_is_an_error_naming_the_model(model, rows, match):
    with pytest.raises(SeedSweepError, match=match):
        SeedSweep(model, rows)


def test_the_default_run_must_have_trained():
    failed = SeedRun("default", 0, 0, None, error=CANNOT)
    with pytest.raises(SeedSweepError, match="the default run has no validation AUROC"):
        SeedSweep("S4", [failed, *runs()[1:]])


def test_sweeps_must_be_of_scored_models_once_each(inp, result):
    sweep = SeedSweep("S4", runs())
    assert sweep_section([], {}, ["S4"]) is None
    with pytest.raises(SeedSweepError, match="'ResNet-99', a model the report does not score"):
        sweep_section([dataclasses.replace(sweep, model="ResNet-99")], {}, ["S4"])
    with pytest.raises(SeedSweepError, match="2 sweeps of 'S4'"):
        sweep_section([sweep, sweep], {}, ["S4"])
    with pytest.raises(SeedSweepError, match="both shown and left out"):
        sweep_section([sweep], {"S4": "stale"}, ["S4"])
    with pytest.raises(SeedSweepError, match="needs a reason"):
        sweep_section([], {"S4": ""}, ["S4"])
    bad = dataclasses.replace(inp, sweeps=[dataclasses.replace(sweep, model="oracle")])
    with pytest.raises(SeedSweepError, match="'oracle', a model the report does not score"):
        render_html(bad, result)  # the oracle is scored, but it is not a model
