"""The evaluation: every metric of every predictor, the long-form benchmark table (with the
paper's reference rows), the JSON summary and the Markdown summary. No plotting: the HTML report
with its figures is :func:`acs_pipeline.evaluation.report.render_html`.

Every number carries its lineage: the checkpoint string of its model and the data version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import special

from acs_pipeline.evaluation.calibration import calibration, net_benefit
from acs_pipeline.evaluation.flags import ANY_FLAG, classical_comparison
from acs_pipeline.evaluation.inputs import (
    EvaluationInput,
    EvaluationInputError,
    Prepared,
    is_smoke,
    prepare,
)
from acs_pipeline.evaluation.paper import PAPER_ROWS, PAPER_SOURCE
from acs_pipeline.evaluation.ranking import (
    auprc,
    bootstrap_auroc_ci,
    delong_ci,
    delong_paired,
    holm,
    threshold_metrics,
    topk_metrics,
    youden_threshold,
)
from acs_pipeline.evaluation.subgroups import MIN_PER_CLASS, subgroup_auroc
from acs_pipeline.evaluation.text import markdown

TABLE_SCHEMA = {
    "model": pl.String,
    "kind": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n": pl.Int64,
    "source": pl.String,
}
TABLE_KEY = ("model", "metric", "kind")  # unique per row
TABLE_KINDS = ("model", "baseline", "flag", "reference", "oracle")


@dataclass
class EvaluationResult:
    """``table``: long form (model, kind, metric, value, ci_low, ci_high, n, source) incl. the
    paper's rows (kind ``reference``), one row per ``TABLE_KEY``; ``markdown``: the summary;
    ``summary``: JSON-serialisable headline numbers; ``details``: per-predictor dictionaries
    (arrays included) for the report."""

    table: pl.DataFrame
    markdown: str
    summary: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict, repr=False)


def paper_reference_table() -> pl.DataFrame:
    """The published figures as long-form rows (kind ``reference``, source ``PAPER_SOURCE``)."""
    rows = [
        {"model": a, "kind": "reference", "metric": b, "value": v, "ci_low": lo, "ci_high": hi,
         "n": n, "source": PAPER_SOURCE}
        for a, b, v, lo, hi, n in PAPER_ROWS
    ]
    return pl.DataFrame(rows, schema=TABLE_SCHEMA)


def check_table_key(table: pl.DataFrame) -> None:
    """Raise ``EvaluationInputError`` when a ``TABLE_KEY`` occurs twice or a kind is unknown."""
    kinds = set(table["kind"].unique().to_list()) - set(TABLE_KINDS)
    if kinds:
        raise EvaluationInputError(f"benchmark table: unknown kinds {sorted(kinds)}")
    dup = table.filter(table.select(TABLE_KEY).is_duplicated())
    if dup.height:
        keys = [" / ".join(r) for r in dup.select(TABLE_KEY).unique().rows()]
        raise EvaluationInputError(f"benchmark table: {len(keys)} duplicated keys: {keys[:5]}")


# --------------------------------------------------------------------------- evaluation


def _wilson(successes: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (same as scipy's binomtest(...).proportion_ci)."""
    if total <= 0:
        return float("nan"), float("nan")
    z = float(special.ndtri(1 - alpha / 2))
    p = successes / total
    den = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / den
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def too_few(y: np.ndarray) -> bool:
    """Fewer than ``MIN_PER_CLASS`` positives or negatives: no AUROC interval is shown."""
    m = int(y.sum())
    return min(m, y.size - m) < MIN_PER_CLASS


def _is_probability(s: np.ndarray) -> bool:
    return bool(s.min() >= 0.0 and s.max() <= 1.0)


def _score_details(
    y: np.ndarray,
    s: np.ndarray,
    prep: Prepared,
    thresholds: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    auc, lo, hi = delong_ci(y, s)
    d: dict[str, Any] = {"auroc": auc, "ci": (lo, hi), "auprc": auprc(y, s)}
    d["too_few"] = too_few(y)
    if d["too_few"]:  # no interval rather than a degenerate one
        d["ci"] = d["bootstrap_ci"] = (math.nan, math.nan)
    else:
        d["bootstrap_ci"] = bootstrap_auroc_ci(y, s, n_boot=n_boot, seed=seed)
    top = topk_metrics(y, s)
    d["topk"] = top
    d["topk_ci"] = _wilson(int(top["tp"]), int(top["k"]))
    thr = youden_threshold(y, s)
    d["youden"] = threshold_metrics(y, s, thr)
    d["probability"] = _is_probability(s)
    if d["probability"]:
        d["calibration"] = calibration(y, s)
        d["net_benefit"] = net_benefit(y, s, thresholds)
    if prep.flags:
        real = {k: v for k, v in prep.flags.items() if k != ANY_FLAG}
        d["classical"] = classical_comparison(y, s, real)
    d["subgroups"] = {
        what: subgroup_auroc(y, s, labels, order=prep.group_order.get(what))
        for what, labels in prep.groups.items()
    }
    return d


def _flag_details(y: np.ndarray, f: np.ndarray) -> dict[str, Any]:
    fv = f.astype(np.float64)
    auc, lo, hi = delong_ci(y, fv)
    tm = threshold_metrics(y, fv, 0.5)
    return {
        "auroc": auc,
        "ci": (lo, hi),
        "threshold": tm,
        "ppv_ci": _wilson(tm["tp"], tm["tp"] + tm["fp"]),
        "sens_ci": _wilson(tm["tp"], tm["tp"] + tm["fn"]),
        "n_flagged": tm["tp"] + tm["fp"],
    }


def _best_model(prep: Prepared, details: dict[str, dict[str, Any]]) -> str:
    for kind in ("model", "baseline", "oracle"):
        names = [k for k in prep.scores if prep.kinds[k] == kind]
        if names:
            return max(names, key=lambda k: details[k]["auroc"])
    raise EvaluationInputError("no scores to rank")  # unreachable: prepare checks


def _rows(
    prep: Prepared,
    details: dict[str, dict[str, Any]],
    flag_details: dict[str, dict[str, Any]],
    paired: dict[str, dict[str, Any]],
    best: str,
    data_version: str,
) -> list[dict[str, Any]]:
    n = prep.y.size
    rows: list[dict[str, Any]] = []

    def add(model, metric, value, lo=None, hi=None, count=n):
        src = f"{prep.lineage[model]} | data {data_version}"
        val = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        rows.append(
            {
                "model": model,
                "kind": prep.kinds[model],
                "metric": metric,
                "value": None if val is None else float(val),
                "ci_low": None if lo is None or math.isnan(lo) else float(lo),
                "ci_high": None if hi is None or math.isnan(hi) else float(hi),
                "n": count,
                "source": src,
            }
        )

    for name, d in details.items():
        add(name, "auroc", d["auroc"], *d["ci"])
        add(name, "auroc_bootstrap", d["auroc"], *d["bootstrap_ci"])
        add(name, "auprc", d["auprc"])
        top = d["topk"]
        add(name, "topk_ppv", top["ppv"], *d["topk_ci"])
        add(name, "topk_sensitivity", top["sens"], *d["topk_ci"])
        add(name, "topk_k", top["k"])
        yd = d["youden"]
        add(name, "youden_threshold", yd["threshold"])
        for metric in ("sens", "spec", "ppv", "npv"):
            add(name, f"youden_{metric}", yd[metric])
        if "calibration" in d:
            c = d["calibration"]
            add(name, "brier", c["brier"])
            add(name, "brier_skill", c["brier_skill"])
            add(name, "calibration_slope", c["slope"])
            add(name, "calibration_intercept", c["intercept"])
            add(name, "calibration_in_the_large", c["citl"])
        if "classical" in d:
            cc = d["classical"]
            add(name, "share_flagged_no_classical", cc["share_flagged_no_classical"], count=cc["k"])
            add(name, "share_tp_no_classical", cc["share_tp_no_classical"], count=cc["n_tp"])
            add(name, "share_flagged_no_classical_chance", cc["chance_flagged_no_classical"])
            add(name, "share_tp_no_classical_chance", cc["chance_tp_no_classical"])
        for what, groups in d["subgroups"].items():
            for g in groups:
                add(
                    name,
                    f"auroc[{what}={g['group']}]",
                    g["auroc"],
                    g["ci_low"],
                    g["ci_high"],
                    g["n"],
                )
    for name, fd in flag_details.items():
        tm = fd["threshold"]
        add(name, "auroc", fd["auroc"], *fd["ci"])
        add(name, "ppv", tm["ppv"], *fd["ppv_ci"])
        add(name, "sensitivity", tm["sens"], *fd["sens_ci"])
        add(name, "specificity", tm["spec"])
        add(name, "npv", tm["npv"])
        add(name, "n_flagged", fd["n_flagged"])
    for name, pr in paired.items():
        add(name, f"auroc_diff_vs[{best}]", pr["diff"], *pr["diff_ci"])
        add(name, f"delong_p_vs[{best}]", pr["p"])
        add(name, f"delong_p_holm_vs[{best}]", pr["p_holm"])
    return rows


def _summary(
    inp: EvaluationInput,
    prep: Prepared,
    details: dict[str, dict[str, Any]],
    flag_details: dict[str, dict[str, Any]],
    paired: dict[str, dict[str, Any]],
    best: str,
) -> dict[str, Any]:
    """The JSON-serialisable headline numbers of every predictor."""
    y = prep.y
    models = {}
    for name, d in details.items():
        entry = {
            "kind": prep.kinds[name],
            "lineage": prep.lineage[name],
            "auroc": d["auroc"],
            "auroc_ci": list(d["ci"]),
            "auroc_bootstrap_ci": list(d["bootstrap_ci"]),
            "auprc": d["auprc"],
            "topk_ppv": d["topk"]["ppv"],
            "k": d["topk"]["k"],
        }
        if "calibration" in d:
            entry["brier"] = d["calibration"]["brier"]
            entry["brier_skill"] = d["calibration"]["brier_skill"]
        if "classical" in d:
            cc = d["classical"]
            for key in ("share_flagged_no_classical", "share_tp_no_classical"):
                entry[key] = cc[key]
                entry[f"{key}_chance"] = cc[key.replace("share", "chance")]
        if name in paired:
            entry["delong_p_vs_best"] = paired[name]["p"]
            entry["delong_p_holm_vs_best"] = paired[name]["p_holm"]
        models[name] = entry
    flags = {
        name: {
            "auroc": fd["auroc"],
            "ppv": fd["threshold"]["ppv"],
            "sensitivity": fd["threshold"]["sens"],
            "n_flagged": fd["n_flagged"],
        }
        for name, fd in flag_details.items()
    }
    return {
        "title": inp.title,
        "profile": inp.profile,
        "smoke": is_smoke(inp),
        "data_version": inp.data_version,
        "n": int(y.size),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()),
        "best_model": best,
        "best_auroc": details[best]["auroc"],
        "models": models,
        "flags": flags,
    }


def evaluate(inp: EvaluationInput, n_boot: int = 2000, seed: int = 0) -> EvaluationResult:
    """Compute every metric of every predictor (no plotting); see the module docstring."""
    prep = prepare(inp)
    y = prep.y
    thresholds = np.asarray(inp.decision_thresholds, dtype=np.float64)
    details = {
        name: _score_details(y, s, prep, thresholds, n_boot, seed)
        for name, s in prep.scores.items()
    }
    flag_details = {name: _flag_details(y, f) for name, f in prep.flags.items()}
    best = _best_model(prep, details)
    paired: dict[str, dict[str, Any]] = {}
    others = {**prep.scores, **{k: v.astype(np.float64) for k, v in prep.flags.items()}}
    for name, s in others.items():
        if name == best:
            continue
        z, p, diff, ci = delong_paired(y, s, prep.scores[best])
        paired[name] = {"z": z, "p": p, "diff": diff, "diff_ci": ci}
    # the best model is picked after the fact: its tests against all others are one family
    for name, p_holm in zip(paired, holm([pr["p"] for pr in paired.values()]), strict=True):
        paired[name]["p_holm"] = float(p_holm)
    rows = _rows(prep, details, flag_details, paired, best, inp.data_version)
    table = pl.concat([pl.DataFrame(rows, schema=TABLE_SCHEMA), paper_reference_table()])
    check_table_key(table)
    summary = _summary(inp, prep, details, flag_details, paired, best)
    all_details = {
        "scores": details,
        "flags": flag_details,
        "paired": paired,
        "best": best,
        "kinds": prep.kinds,
        "lineage": prep.lineage,
        "thresholds": thresholds,
    }
    text = markdown(inp, prep, all_details)
    return EvaluationResult(table=table, markdown=text, summary=summary, details=all_details)
