"""Tests for evaluation.text: the Markdown summary."""

from __future__ import annotations

import json


def test_summary_is_json_and_markdown_has_tables(inp, result):
    text = json.dumps(result.summary)
    assert "S4" in text and result.summary["n"] == 600
    md = result.markdown
    for ms in inp.scores:
        assert f"| {ms.name} |" in md or f"| **{ms.name}** |" in md
    assert "| predictor | kind | AUROC (95 % CI) |" in md
    assert "0.703 (0.674-0.731)" in md  # the paper's S4 row next to ours
    assert inp.data_version in md
