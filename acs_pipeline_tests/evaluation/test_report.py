"""Tests for evaluation.report: the self-contained HTML report."""

from __future__ import annotations

import base64
import re

import pytest

from acs_pipeline.evaluation.flags import FLAG_LABELS
from acs_pipeline.evaluation.report import render_html


@pytest.fixture(scope="module")
def html(inp, result) -> str:
    return render_html(inp, result)


def test_html_contains_models_table_and_embedded_images(inp, html):
    for ms in inp.scores:
        assert ms.name in html and ms.lineage in html
    for label in FLAG_LABELS.values():
        assert label in html
    assert '<table id="main-table">' in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 6  # ROC, PR, cumulative, calibration, decision, Venn
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert "@media print" in html
    assert "Paired DeLong tests vs" in html and "Subgroups" in html
