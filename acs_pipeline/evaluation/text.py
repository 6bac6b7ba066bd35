"""The report's text: numbers formatted for display, the rows of the report's tables (shared by
the Markdown summary and the HTML template), the title, the smoke banner, the headline sentence
and the Markdown summary.

The paper's figures never sit beside our rows: they form their own reference block
(:func:`reference_rows`), so a smoke run's numbers are not read against them.
"""

from __future__ import annotations

import math
from typing import Any

from acs_pipeline.evaluation.flags import flag_label
from acs_pipeline.evaluation.inputs import EvaluationInput, Prepared, display_order, is_smoke
from acs_pipeline.evaluation.paper import (
    PAPER_N,
    PAPER_PREVALENCE,
    PAPER_ROWS,
    PAPER_SOURCE,
    paper_lookup,
    paper_name,
)
from acs_pipeline.evaluation.subgroups import MIN_PER_CLASS, TOO_FEW

SMOKE_BANNER = (
    "Not benchmark results. These models come from the smoke profile: narrow networks "
    "trained for a few CPU minutes to check that the pipeline runs end to end. Their numbers say "
    "nothing about the methods and are not comparable with the paper's figures, which are listed "
    "apart in the reference block."
)

# --------------------------------------------------------------------------- numbers


def _pct(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _auc_ci(auc: float, ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]) or math.isnan(ci[1]):
        return f"{auc:.3f} ({TOO_FEW} for a CI)"
    if ci[1] - ci[0] < 1e-12:
        return f"{auc:.3f} (no CI: zero variance)"
    return f"{auc:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


def _range(ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]) or math.isnan(ci[1]):
        return TOO_FEW
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def _pvalue(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def report_title(inp: EvaluationInput) -> str:
    """The title, prefixed in the smoke profile so that no copy of the report loses the mark."""
    return f"SMOKE TEST (not benchmark results): {inp.title}" if is_smoke(inp) else inp.title


# --------------------------------------------------------------------------- tables


def table_rows(prep: Prepared, det: dict[str, Any]) -> dict[str, list]:
    """Rows of the report's tables as display strings (shared by Markdown and HTML)."""
    order = display_order(prep, det["scores"])
    return {
        "main": _main_rows(prep, det, order),
        "flags": _flag_rows(det),
        "operating": _operating_rows(det, order),
        "calibration": _calibration_rows(det, order),
        "paired": _paired_rows(prep, det, order),
        "classical": _classical_rows(prep, det, order),
        "subgroups": _subgroup_rows(det, order),
        "subgroup_models": order,
        "reference": reference_rows(list(det["scores"])),
        "lineage": [
            {"name": k, "kind": prep.kinds[k], "lineage": prep.lineage[k]} for k in prep.lineage
        ],
    }


def _main_rows(prep: Prepared, det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Ranking metrics of every scored predictor (the paper's figures are in ``reference``)."""
    rows = []
    for name in order:
        d = det["scores"][name]
        rows.append(
            {
                "name": name,
                "kind": prep.kinds[name],
                "best": name == det["best"],
                "auroc": _auc_ci(d["auroc"], d["ci"]),
                "boot": _range(d["bootstrap_ci"]),
                "auprc": _num(d["auprc"]),
                "topk": f"{_pct(d['topk']['ppv'])} ({d['topk']['tp']}/{d['topk']['k']})",
                "ties": d["topk"]["n_tied_at_cut"],
            }
        )
    return rows


def _flag_rows(det: dict[str, Any]) -> list[dict[str, Any]]:
    """Each binary flag called positive when set."""
    rows = []
    for name, fd in det["flags"].items():
        tm = fd["threshold"]
        rows.append(
            {
                "name": name,
                "label": flag_label(name),
                "n_flagged": fd["n_flagged"],
                "auroc": _auc_ci(fd["auroc"], fd["ci"]),
                "ppv": _pct(tm["ppv"]),
                "sens": _pct(tm["sens"]),
                "spec": _pct(tm["spec"]),
            }
        )
    return rows


def _operating_rows(det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Every scored predictor at its Youden threshold."""
    rows = []
    for name in order:
        yd = det["scores"][name]["youden"]
        rows.append(
            {
                "name": name,
                "threshold": _num(yd["threshold"], 3),
                "sens": _pct(yd["sens"]),
                "spec": _pct(yd["spec"]),
                "ppv": _pct(yd["ppv"]),
                "npv": _pct(yd["npv"]),
            }
        )
    return rows


def _calibration_rows(det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Brier score, its skill against the prevalence, and logistic recalibration."""
    rows = []
    for name in order:
        c = det["scores"][name].get("calibration")
        if c is None:
            continue
        rows.append(
            {
                "name": name,
                "brier": _num(c["brier"]),
                "brier_ref": _num(c["brier_reference"]),
                "skill": _num(c["brier_skill"]),
                "slope": _num(c["slope"], 2),
                "intercept": _num(c["intercept"], 2),
                "citl": _num(c["citl"], 2),
            }
        )
    return rows


def _paired_rows(prep: Prepared, det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Paired DeLong tests of every other predictor (flags too) against the best model."""
    paired = det["paired"]
    rows = []
    for name in [*order, *det["flags"]]:
        if name not in paired:
            continue
        pr = paired[name]
        rows.append(
            {
                "name": flag_label(name),
                "kind": prep.kinds[name],
                "diff": f"{pr['diff']:+.3f} ({pr['diff_ci'][0]:+.3f} to {pr['diff_ci'][1]:+.3f})",
                "z": _num(pr["z"], 2),
                "p": _pvalue(pr["p"]),
                "p_holm": _pvalue(pr["p_holm"]),
            }
        )
    return rows


def _classical_rows(
    prep: Prepared, det: dict[str, Any], order: list[str]
) -> list[dict[str, Any]]:
    """Shares of each predictor's top-k (and of its true positives) without a classical flag,
    each beside what a random ranking gives."""
    rows = []
    for name in order:
        cc = det["scores"][name].get("classical")
        if cc is None:
            continue
        rows.append(
            {
                "name": name,
                "kind": prep.kinds[name],
                "flagged": f"{_pct(cc['share_flagged_no_classical'])} "
                f"({cc['n_model_only']}/{cc['k']})",
                "flagged_chance": _pct(cc["chance_flagged_no_classical"]),
                "tp": f"{_pct(cc['share_tp_no_classical'])} "
                f"({cc['n_tp_no_classical']}/{cc['n_tp']})",
                "tp_chance": _pct(cc["chance_tp_no_classical"]),
            }
        )
    return rows


def _subgroup_rows(det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """One row per subgroup value, one AUROC cell per predictor (in ``order``)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name in order:
        for what, groups in det["scores"][name]["subgroups"].items():
            for g in groups:
                row = rows.setdefault(
                    (what, str(g["group"])),
                    {
                        "what": what,
                        "group": str(g["group"]),
                        "n": g["n"],
                        "pos": g["positives"],
                        "cells": [],
                    },
                )
                if g["reason"]:
                    row["cells"].append({"auroc": TOO_FEW, "ci": ""})
                else:
                    ci = (g["ci_low"], g["ci_high"])
                    row["cells"].append({"auroc": f"{g['auroc']:.3f}", "ci": _range(ci)})
    return list(rows.values())


def reference_rows(ours: list[str]) -> dict[str, Any]:
    """The paper's published figures as their own block: models, flags, shares, subgroups.

    ``same`` names our predictors that are the same network as a paper row (names only)."""
    paper = paper_lookup()
    models = []
    for name, metric, value, lo, hi, _ in PAPER_ROWS:
        if metric != "auroc" or (name, "topk_ppv") not in paper:
            continue
        models.append(
            {
                "name": name,
                "auroc": _auc_ci(value, (lo, hi)) if lo is not None else _num(value),
                "topk": _pct(paper[(name, "topk_ppv")][0]),
                "same": ", ".join(o for o in ours if paper_name(o) == name) or "-",
            }
        )
    flags = [
        {
            "label": flag_label(name),
            "auroc": _num(value),
            "ppv": _pct(paper[(name, "ppv")][0]),
            "sens": _pct(paper[(name, "sensitivity")][0]),
        }
        for name, metric, value, *_ in PAPER_ROWS
        if metric == "auroc" and (name, "ppv") in paper
    ]
    subgroups = ", ".join(
        f"{metric[len('auroc[') : -1].split('=')[1]} {value:.3f}"
        for name, metric, value, *_ in PAPER_ROWS
        if metric.startswith("auroc[")
    )
    return {
        "source": PAPER_SOURCE,
        "cohort": f"the tested cohort's validation split, {PAPER_N:,} ECGs, "
        f"{_pct(PAPER_PREVALENCE, 2)} with ACS",
        "models": models,
        "flags": flags,
        "shares": f"{_pct(paper[('S4', 'share_flagged_no_classical')][0])} of the ECGs S4 "
        f"flagged had no classical flag, and {_pct(paper[('S4', 'share_tp_no_classical')][0])} "
        "of the ACS cases it caught",
        "subgroups": f"S4 AUROC by subgroup: {subgroups}",
    }


# --------------------------------------------------------------------------- summary


def headline(prep: Prepared, det: dict[str, Any]) -> str:
    """One paragraph on the best model (Markdown bold around its name)."""
    best = det["best"]
    d = det["scores"][best]
    text = (
        f"Best model: **{best}**, AUROC {_auc_ci(d['auroc'], d['ci'])} on {prep.y.size} ECGs "
        f"({int(prep.y.sum())} with ACS, {_pct(prep.y.mean())}); top-k PPV = sensitivity "
        f"{_pct(d['topk']['ppv'])} (random ranking: {_pct(prep.y.mean())})."
    )
    cc = d.get("classical")
    if cc:
        text += (
            f" Of its {cc['k']} flagged ECGs {_pct(cc['share_flagged_no_classical'])} carry none "
            f"of the classical flags (random ranking: {_pct(cc['chance_flagged_no_classical'])}), "
            f"and of the {cc['n_tp']} ACS cases it catches "
            f"{_pct(cc['share_tp_no_classical'])} have none (random ranking: "
            f"{_pct(cc['chance_tp_no_classical'])})."
        )
    return text


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown(inp: EvaluationInput, prep: Prepared, det: dict[str, Any]) -> str:
    """The Markdown summary: the main tables, the paper's reference block and the lineage."""
    t = table_rows(prep, det)
    lines = [f"# {report_title(inp)}", ""]
    if is_smoke(inp):
        lines += [f"> **SMOKE TEST. {SMOKE_BANNER}**", ""]
    lines += [f"Data version: `{inp.data_version}`. {headline(prep, det)}", ""]
    lines += ["## Models (AUROC with DeLong 95 % CI; top-k with k = number of positives)", ""]
    lines += _md_table(
        ["predictor", "kind", "AUROC (95 % CI)", "bootstrap CI", "AUPRC", "top-k PPV = sens"],
        [
            [f"**{r['name']}**" if r["best"] else r["name"], r["kind"], r["auroc"], r["boot"],
             r["auprc"], r["topk"]]
            for r in t["main"]
        ],
    )
    if t["flags"]:
        lines += ["", "## Classical ECG flags (flag set = positive)", ""]
        lines += _md_table(
            ["flag", "flagged", "AUROC (95 % CI)", "PPV", "sensitivity"],
            [[r["label"], r["n_flagged"], r["auroc"], r["ppv"], r["sens"]] for r in t["flags"]],
        )
    lines += ["", f"## Paired DeLong tests vs {det['best']} (picked as best on these ECGs)", ""]
    lines += _md_table(
        ["predictor", "AUROC difference (95 % CI)", "z", "p", "p (Holm)"],
        [[r["name"], r["diff"], r["z"], r["p"], r["p_holm"]] for r in t["paired"]],
    )
    if t["classical"]:
        lines += ["", "## Flagged ECGs without any classical flag", ""]
        lines += _md_table(
            ["predictor", "of top-k flagged", "random ranking", "of true positives caught",
             "random ranking"],
            [[r["name"], r["flagged"], r["flagged_chance"], r["tp"], r["tp_chance"]]
             for r in t["classical"]],
        )
    ref = t["reference"]
    lines += ["", f"## Reference: published figures ({ref['source']}), not computed here", ""]
    lines += _md_table(
        ["paper predictor", "AUROC (95 % CI)", "top-k PPV", "same network here"],
        [[r["name"], r["auroc"], r["topk"], r["same"]] for r in ref["models"]],
    )
    lines += ["", f"Paper: {ref['shares']}. {ref['subgroups']}.", "", "## Lineage", ""]
    for r in t["lineage"]:
        lines.append(f"- {r['name']} ({r['kind']}): `{r['lineage']}`")
    return "\n".join(lines) + "\n"


MIN_CASES_NOTE = (
    f"AUROCs need at least {MIN_PER_CLASS} ECGs with ACS and {MIN_PER_CLASS} without: a group "
    f"with fewer shows \"{TOO_FEW}\" instead of an estimate whose interval would be degenerate."
)
