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
    paper = paper_lookup()
    details, flag_details, paired, best = det["scores"], det["flags"], det["paired"], det["best"]
    main = []
    for name in display_order(prep, details):
        d = details[name]
        pn = paper_name(name)
        p_auc = paper.get((pn, "auroc")) if pn else None
        p_top = paper.get((pn, "topk_ppv")) if pn else None
        main.append(
            {
                "name": name,
                "kind": prep.kinds[name],
                "best": name == best,
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
    flags = []
    for name, fd in flag_details.items():
        tm = fd["threshold"]
        p_auc = paper.get((name, "auroc"))
        p_ppv = paper.get((name, "ppv"))
        p_sens = paper.get((name, "sensitivity"))
        flags.append(
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
    operating = []
    for name in display_order(prep, details):
        yd = details[name]["youden"]
        operating.append(
            {
                "name": name,
                "threshold": _num(yd["threshold"], 3),
                "sens": _pct(yd["sens"]),
                "spec": _pct(yd["spec"]),
                "ppv": _pct(yd["ppv"]),
                "npv": _pct(yd["npv"]),
            }
        )
    calib = []
    for name in display_order(prep, details):
        c = details[name].get("calibration")
        if c is None:
            continue
        calib.append(
            {
                "name": name,
                "brier": _num(c["brier"]),
                "brier_ref": _num(c["brier_reference"]),
                "slope": _num(c["slope"], 2),
                "intercept": _num(c["intercept"], 2),
                "citl": _num(c["citl"], 2),
            }
        )
    pairs = []
    for name in [*display_order(prep, details), *flag_details]:
        if name not in paired:
            continue
        pr = paired[name]
        pairs.append(
            {
                "name": flag_label(name),
                "kind": prep.kinds[name],
                "diff": f"{pr['diff']:+.3f} ({pr['diff_ci'][0]:+.3f} to {pr['diff_ci'][1]:+.3f})",
                "z": _num(pr["z"], 2),
                "p": _pvalue(pr["p"]),
            }
        )
    classical = []
    for name in display_order(prep, details):
        cc = details[name].get("classical")
        if cc is None:
            continue
        pn = paper_name(name)
        p1 = paper.get((pn, "share_flagged_no_classical")) if pn else None
        p2 = paper.get((pn, "share_tp_no_classical")) if pn else None
        classical.append(
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
    order = display_order(prep, details)
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for name in order:
        for what, groups in details[name]["subgroups"].items():
            for g in groups:
                row = cells.setdefault(
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
    subgroups = list(cells.values())
    lineage = [{"name": k, "kind": prep.kinds[k], "lineage": prep.lineage[k]} for k in prep.lineage]
    return {
        "main": main,
        "flags": flags,
        "operating": operating,
        "calibration": calib,
        "paired": pairs,
        "classical": classical,
        "subgroups": subgroups,
        "subgroup_models": order,
        "lineage": lineage,
    }


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
