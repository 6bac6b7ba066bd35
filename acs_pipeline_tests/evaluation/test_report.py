"""Tests for evaluation.report: the self-contained HTML report."""

from __future__ import annotations

import base64
import dataclasses
import re

import numpy as np
import pytest
from markupsafe import escape

from acs_pipeline.evaluation.evaluate import evaluate
from acs_pipeline.evaluation.flags import FLAG_LABELS
from acs_pipeline.evaluation.report import render_html
from acs_pipeline.evaluation.subgroups import MIN_PER_CLASS, TOO_FEW
from acs_pipeline.evaluation.text import SMOKE_BANNER


@pytest.fixture(scope="module")
def html(inp, result) -> str:
    return render_html(inp, result)


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start))]


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


def test_paper_figures_only_in_the_reference_block(html):
    main = _section(html, '<table id="main-table">', "</table>")
    assert "paper" not in main.lower()
    assert "0.703" not in html[: html.index('id="reference"')]  # the paper's S4 AUROC
    ref = _section(html, '<section class="reference" id="reference">', "</section>")
    for figure in ("0.703 (0.674-0.731)", "56.0 %", "65.4 %", "52.6 %", "Black 0.780"):
        assert figure in ref
    assert "Brier skill" in html and "p (Holm)" in html and "random ranking" in html


def test_smoke_report_is_marked_at_the_top_and_in_the_title(inp, result, html):
    assert "SMOKE" not in html and 'id="smoke-banner"' not in html  # profile unknown
    smoke = dataclasses.replace(inp, profile="smoke")
    page = render_html(smoke, result)
    body = page[page.index("<body>") :]
    assert body.index('id="smoke-banner"') < body.index("<h1>")  # first thing on the page
    assert str(escape(SMOKE_BANNER)) in body
    assert re.search(r"<title>SMOKE TEST[^<]*</title>", page)
    assert re.search(r"<h1>SMOKE TEST[^<]*</h1>", page)
    assert "do not compare them with the tables above" in page
    paper = render_html(dataclasses.replace(inp, profile="paper"), result)
    assert "SMOKE" not in paper


def test_subgroup_with_two_positives_reads_too_few_cases(inp):
    y = np.asarray(inp.y)
    race = np.array(inp.race, dtype=object)
    rng = np.random.default_rng(0)
    few = np.r_[rng.choice(np.flatnonzero(y == 1), 2, replace=False),
                rng.choice(np.flatnonzero(y == 0), 30, replace=False)]
    race[few] = "Asian"
    small = dataclasses.replace(inp, race=race)
    page = render_html(small, evaluate(small, n_boot=20))
    row = re.search(r"<tr><td>race = Asian</td>(.*?)</tr>", page, re.S).group(1)
    assert '<td class="num">2</td>' in row  # the 2 ACS cases
    n_cells = len(re.findall(r"<br>", row))
    assert row.count(TOO_FEW) == n_cells == len(small.scores)
    assert re.search(r"\d\.\d{3}", row) is None  # no AUROC, no interval
    assert f"at least {MIN_PER_CLASS} ECGs with ACS and {MIN_PER_CLASS} without" in page
