"""The self-contained HTML report: the tables of :mod:`acs_pipeline.evaluation.text` and the
figures of :mod:`acs_pipeline.evaluation.figures` (base64 PNG) and the seed sweeps of
:mod:`acs_pipeline.evaluation.sweeps` in the Jinja2 template
``templates/report.html.j2``, print CSS included.
"""

from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import escape

from acs_pipeline.evaluation.evaluate import EvaluationResult
from acs_pipeline.evaluation.figures import figures
from acs_pipeline.evaluation.inputs import (
    EvaluationInput,
    EvaluationInputError,
    is_smoke,
    prepare,
)
from acs_pipeline.evaluation.sweeps import sweep_section
from acs_pipeline.evaluation.text import (
    MIN_CASES_NOTE,
    SMOKE_BANNER,
    headline,
    report_title,
    table_rows,
)


def render_html(inp: EvaluationInput, result: EvaluationResult) -> str:
    """The HTML report of ``result``, the output of ``evaluate(inp)``."""
    prep = prepare(inp)
    det = result.details
    if not det:
        raise EvaluationInputError("result carries no details; pass the output of evaluate()")
    env = Environment(
        loader=PackageLoader("acs_pipeline.evaluation", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    text = str(escape(headline(prep, det)))
    return template.render(
        title=report_title(inp),
        smoke_banner=SMOKE_BANNER if is_smoke(inp) else None,
        min_cases_note=MIN_CASES_NOTE,
        data_version=inp.data_version,
        summary=result.summary,
        headline=re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text),
        t=table_rows(prep, det),
        figures=figures(prep, det),
        best=det["best"],
        sweeps=sweep_section(inp.sweeps, inp.sweeps_left_out,
                             [k for k, v in prep.kinds.items() if v == "model"]),
        n_boot_note="stratified bootstrap, percentile interval",
    )
