"""The report's text: numbers formatted for display, the rows of the report's tables (shared by
the Markdown summary and the HTML template), the headline sentence and the Markdown summary.
"""

from __future__ import annotations

import math
from typing import Any

from acs_pipeline.evaluation.flags import flag_label
from acs_pipeline.evaluation.inputs import EvaluationInput, Prepared, display_order
from acs_pipeline.evaluation.paper import paper_lookup, paper_name

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
    return f"{auc:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


def _pvalue(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"



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
        "lineage": [
            {"name": k, "kind": prep.kinds[k], "lineage": prep.lineage[k]} for k in prep.lineage
        ],
    }


def _main_rows(prep: Prepared, det: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Ranking metrics of every scored predictor, next to the paper's figures."""
    paper = paper_lookup()
    rows = []
    for name in order:
        d = det["scores"][name]
        pn = paper_name(name)
        p_auc = paper.get((pn, "auroc")) if pn else None
        p_top = paper.get((pn, "topk_ppv")) if pn else None
        rows.append(
            {
                "name": name,
                "kind": prep.kinds[name],
                "best": name == det["best"],
                "auroc": _auc_ci(d["auroc"], d["ci"]),
                "boot": f"{d['bootstrap_ci'][0]:.3f}-{d['bootstrap_ci'][1]:.3f}",
                "auprc": _num(d["auprc"]),
                "topk": f"{_pct(d['topk']['ppv'])} ({d['topk']['tp']}/{d['topk']['k']})",
                "ties": d["topk"]["n_tied_at_cut"],
                "paper_auroc": _auc_ci(p_auc[0], (p_auc[1], p_auc[2]))
                if p_auc and p_auc[1] is not None
                else (_num(p_auc[0]) if p_auc else "-"),
                "paper_topk": _pct(p_top[0]) if p_top else "-",
            }
        )
    return rows


def _flag_rows(det: dict[str, Any]) -> list[dict[str, Any]]:
    """Each binary flag called positive when set, next to the paper's figures."""
    paper = paper_lookup()
    rows = []
    for name, fd in det["flags"].items():
        tm = fd["threshold"]
        p_auc = paper.get((name, "auroc"))
        p_ppv = paper.get((name, "ppv"))
        p_sens = paper.get((name, "sensitivity"))
        rows.append(
            {
                "name": name,
                "label": flag_label(name),
                "n_flagged": fd["n_flagged"],
                "auroc": _auc_ci(fd["auroc"], fd["ci"]),
                "ppv": _pct(tm["ppv"]),
                "sens": _pct(tm["sens"]),
                "spec": _pct(tm["spec"]),
                "paper": (
                    f"{_num(p_auc[0])}; PPV {_pct(p_ppv[0])}, sens {_pct(p_sens[0])}"
                    if p_auc and p_ppv and p_sens
                    else "-"
                ),
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
    """Brier score and logistic recalibration of the predictors that give probabilities."""
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
            }
        )
    return rows


def _classical_rows(
    prep: Prepared, det: dict[str, Any], order: list[str]
) -> list[dict[str, Any]]:
    """Shares of each predictor's top-k (and of its true positives) without a classical flag."""
    paper = paper_lookup()
    rows = []
    for name in order:
        cc = det["scores"][name].get("classical")
        if cc is None:
            continue
        pn = paper_name(name)
        p1 = paper.get((pn, "share_flagged_no_classical")) if pn else None
        p2 = paper.get((pn, "share_tp_no_classical")) if pn else None
        rows.append(
            {
                "name": name,
                "kind": prep.kinds[name],
                "flagged": f"{_pct(cc['share_flagged_no_classical'])} "
                f"({cc['n_model_only']}/{cc['k']})",
                "tp": f"{_pct(cc['share_tp_no_classical'])} "
                f"({cc['n_tp_no_classical']}/{cc['n_tp']})",
                "paper": f"{_pct(p1[0])} / {_pct(p2[0])}" if p1 and p2 else "-",
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
                    row["cells"].append({"auroc": "n/a", "ci": str(g["reason"])})
                else:
                    row["cells"].append(
                        {
                            "auroc": f"{g['auroc']:.3f}",
                            "ci": f"{g['ci_low']:.3f}-{g['ci_high']:.3f}",
                        }
                    )
    return list(rows.values())


# --------------------------------------------------------------------------- summary


def headline(prep: Prepared, det: dict[str, Any]) -> str:
    """One paragraph on the best model (Markdown bold around its name)."""
    best = det["best"]
    d = det["scores"][best]
    text = (
        f"Best model: **{best}**, AUROC {_auc_ci(d['auroc'], d['ci'])} on {prep.y.size} ECGs "
        f"({int(prep.y.sum())} with ACS, {_pct(prep.y.mean())}); top-k PPV = sensitivity "
        f"{_pct(d['topk']['ppv'])}."
    )
    cc = d.get("classical")
    if cc:
        text += (
            f" Of its {cc['k']} flagged ECGs {_pct(cc['share_flagged_no_classical'])} carry none "
            f"of the classical flags, and of the {cc['n_tp']} ACS cases it catches "
            f"{_pct(cc['share_tp_no_classical'])} have none (paper, S4: 52.6 % and 49.1 %)."
        )
    return text


def markdown(inp: EvaluationInput, prep: Prepared, det: dict[str, Any]) -> str:
    """The Markdown summary: the main tables and the lineage of every predictor."""
    t = table_rows(prep, det)
    lines = [
        f"# {inp.title}",
        "",
        f"Data version: `{inp.data_version}`. {headline(prep, det)}",
        "",
        "## Models (AUROC with DeLong 95 % CI; top-k with k = number of positives)",
        "",
        "| predictor | kind | AUROC (95 % CI) | bootstrap CI | AUPRC | top-k PPV = sens "
        "| paper AUROC | paper top-k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in t["main"]:
        name = f"**{r['name']}**" if r["best"] else r["name"]
        lines.append(
            f"| {name} | {r['kind']} | {r['auroc']} | {r['boot']} | {r['auprc']} | {r['topk']} "
            f"| {r['paper_auroc']} | {r['paper_topk']} |"
        )
    if t["flags"]:
        lines += [
            "",
            "## Classical ECG flags (flag set = positive)",
            "",
            "| flag | flagged | AUROC (95 % CI) | PPV | sensitivity | paper |",
            "|---|---|---|---|---|---|",
        ]
        for r in t["flags"]:
            lines.append(
                f"| {r['label']} | {r['n_flagged']} | {r['auroc']} | {r['ppv']} | {r['sens']} "
                f"| {r['paper']} |"
            )
    lines += [
        "",
        f"## Paired DeLong tests vs {det['best']}",
        "",
        "| predictor | AUROC difference (95 % CI) | z | p |",
        "|---|---|---|---|",
    ]
    for r in t["paired"]:
        lines.append(f"| {r['name']} | {r['diff']} | {r['z']} | {r['p']} |")
    if t["classical"]:
        lines += [
            "",
            "## Flagged ECGs without any classical flag",
            "",
            "| predictor | of top-k flagged | of true positives caught | paper |",
            "|---|---|---|---|",
        ]
        for r in t["classical"]:
            lines.append(f"| {r['name']} | {r['flagged']} | {r['tp']} | {r['paper']} |")
    lines += ["", "## Lineage", ""]
    for r in t["lineage"]:
        lines.append(f"- {r['name']} ({r['kind']}): `{r['lineage']}`")
    return "\n".join(lines) + "\n"
