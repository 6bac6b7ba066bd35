"""Tests for evaluation.text: the Markdown summary."""

from __future__ import annotations

import dataclasses
import json

from acs_pipeline.evaluation.evaluate import evaluate


def test_summary_is_json_and_markdown_has_tables(inp, result):
    text = json.dumps(result.summary)
    assert "S4" in text and result.summary["n"] == 600
    assert result.summary["smoke"] is False and result.summary["profile"] is None
    md = result.markdown
    for ms in inp.scores:
        assert f"| {ms.name} |" in md or f"| **{ms.name}** |" in md
    assert "| predictor | kind | AUROC (95 % CI) |" in md
    models, reference = md.split("## Reference: published figures")
    assert "0.703 (0.674-0.731)" in reference and "0.703" not in models  # the paper apart
    assert "| p (Holm) |" in models and "random ranking" in models
    assert inp.data_version in md and "SMOKE" not in md


def test_smoke_markdown_starts_with_the_mark(inp):
    res = evaluate(dataclasses.replace(inp, profile="smoke"), n_boot=20)
    first, _, banner = res.markdown.splitlines()[:3]
    assert first.startswith("# SMOKE TEST (not benchmark results): ")
    assert banner.startswith("> **SMOKE TEST. Not benchmark results.")
    assert res.summary["smoke"] is True and res.summary["profile"] == "smoke"


def test_a_zero_variance_interval_is_named_not_shown():
    import numpy as np

    from acs_pipeline.evaluation.inputs import EvaluationInput, ModelScores

    y = np.r_[np.ones(12), np.zeros(20)].astype(int)
    perfect = ModelScores("perfect", y + np.linspace(0, 0.5, y.size), "test")
    res = evaluate(EvaluationInput([f"e{i}" for i in range(y.size)], y, [perfect], {}), n_boot=20)
    assert "| **perfect** | model | 1.000 (no CI: zero variance) |" in res.markdown
    assert "1.000 (1.000-1.000)" not in res.markdown
