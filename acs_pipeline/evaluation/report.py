"""The evaluation: every metric for every model, a long-form benchmark table, Markdown and HTML.

:func:`evaluate` computes the numbers (no plotting), :func:`render_html` draws the figures
(matplotlib ``Figure`` objects, no pyplot, embedded as base64 PNG) into the Jinja2 template
``acs_pipeline/templates/report.html.j2``, and :func:`write_report` writes the HTML atomically.
Every number carries its lineage: the checkpoint string of its model and the data version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import special, stats

from acs_pipeline.evaluation import metrics as M
from acs_pipeline.io.storage import Storage

__all__ = [
    "CLASSICAL_FLAGS",
    "PAPER_SOURCE",
    "EvaluationInput",
    "EvaluationInputError",
    "EvaluationResult",
    "ModelScores",
    "evaluate",
    "paper_reference_table",
    "paper_name",
    "render_html",
    "synthetic_evaluation_input",
    "write_report",
]

PAPER_SOURCE = "paper (Schubert & Obermeyer)"
ANY_FLAG = "any classical flag"
KINDS = ("model", "baseline", "flag", "oracle")
CLASSICAL_FLAGS = {
    "has_st_eleva": "ST elevation flag",
    "has_depress": "ST depression flag",
    "has_twave_inver": "T-wave inversion flag",
    "has_twave_abnormal": "T-wave abnormal flag",
}
TABLE_SCHEMA = {
    "model": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n": pl.Int64,
    "source": pl.String,
}

# The published numbers (DATA-CONTRACT section 5): (model, metric, value, ci_low, ci_high, n).
_PAPER_N = 1295
_PAPER_ROWS: list[tuple[str, str, float, float | None, float | None, int | None]] = [
    ("S4", "auroc", 0.703, 0.674, 0.731, _PAPER_N),
    ("ResNet-18", "auroc", 0.677, 0.647, 0.706, _PAPER_N),
    ("HuBERT-ECG", "auroc", 0.637, 0.607, 0.667, _PAPER_N),
    ("ECG-OMI (ResNet-6)", "auroc", 0.625, 0.594, 0.655, _PAPER_N),
    ("ResNet-50", "auroc", 0.603, 0.572, 0.635, _PAPER_N),
    ("logistic regression (4 flags)", "auroc", 0.522, 0.492, 0.552, _PAPER_N),
    ("S4", "topk_ppv", 0.560, None, None, _PAPER_N),
    ("ResNet-18", "topk_ppv", 0.556, None, None, _PAPER_N),
    ("HuBERT-ECG", "topk_ppv", 0.488, None, None, _PAPER_N),
    ("ECG-OMI (ResNet-6)", "topk_ppv", 0.498, None, None, _PAPER_N),
    ("ResNet-50", "topk_ppv", 0.474, None, None, _PAPER_N),
    ("logistic regression (4 flags)", "topk_ppv", 0.394, None, None, _PAPER_N),
    ("has_st_eleva", "auroc", 0.535, None, None, _PAPER_N),
    ("has_depress", "auroc", 0.510, None, None, _PAPER_N),
    ("has_twave_inver", "auroc", 0.507, None, None, _PAPER_N),
    ("has_twave_abnormal", "auroc", 0.471, None, None, _PAPER_N),
    ("has_st_eleva", "ppv", 0.654, None, None, _PAPER_N),
    ("has_depress", "ppv", 0.491, None, None, _PAPER_N),
    ("has_twave_inver", "ppv", 0.415, None, None, _PAPER_N),
    ("has_twave_abnormal", "ppv", 0.347, None, None, _PAPER_N),
    ("has_st_eleva", "sensitivity", 0.106, None, None, _PAPER_N),
    ("has_depress", "sensitivity", 0.056, None, None, _PAPER_N),
    ("has_twave_inver", "sensitivity", 0.122, None, None, _PAPER_N),
    ("has_twave_abnormal", "sensitivity", 0.305, None, None, _PAPER_N),
    ("S4", "share_flagged_no_classical", 0.526, None, None, None),
    ("S4", "share_tp_no_classical", 0.491, None, None, None),
    ("S4", "auroc[sex=female]", 0.710, None, None, None),
    ("S4", "auroc[sex=male]", 0.695, None, None, None),
    ("S4", "auroc[race=Black]", 0.780, None, None, None),
    ("S4", "auroc[race=Hispanic]", 0.665, None, None, None),
    ("S4", "auroc[race=White]", 0.692, None, None, None),
]
# top-k: PPV equals sensitivity by construction, so the paper's single number is both.
_PAPER_ROWS += [
    (name, "topk_sensitivity", v, lo, hi, n)
    for name, metric, v, lo, hi, n in list(_PAPER_ROWS)
    if metric == "topk_ppv"
]

_ALIASES = {
    "s4": "S4",
    "resnet18": "ResNet-18",
    "hubert": "HuBERT-ECG",
    "hubertecg": "HuBERT-ECG",
    "ecgomi": "ECG-OMI (ResNet-6)",
    "resnet6": "ECG-OMI (ResNet-6)",
    "ecgomiresnet6": "ECG-OMI (ResNet-6)",
    "resnet50": "ResNet-50",
    "baseline": "logistic regression (4 flags)",
    "logreg": "logistic regression (4 flags)",
    "logisticbaseline": "logistic regression (4 flags)",
    "lrbaseline": "logistic regression (4 flags)",
    "lr": "logistic regression (4 flags)",
    "logisticregression": "logistic regression (4 flags)",
    "logisticregression4flags": "logistic regression (4 flags)",
    "logisticregressiononthe4flags": "logistic regression (4 flags)",
}


class EvaluationInputError(ValueError):
    """The evaluation input is inconsistent (lengths, ids, NaN scores, unknown kinds)."""


@dataclass(frozen=True)
class ModelScores:
    """One predictor's scores on the evaluation ECGs.

    ``validation`` holds one score per ECG, higher = more likely ACS (probabilities for models,
    0/1 for ``kind='flag'``). With ``ecg_ids`` the scores are aligned to the evaluation ids by id
    (every evaluation id must appear exactly once, no others); without, they must already be in
    the evaluation order. ``lineage`` names where the scores come from (checkpoint URI, hash).
    ``kind`` is one of ``model``, ``baseline``, ``flag``, ``oracle``.
    """

    name: str
    validation: np.ndarray
    lineage: str
    kind: str = "model"
    ecg_ids: Sequence[str] | None = None


@dataclass
class EvaluationInput:
    """The validation split of the tested cohort and everything scored on it.

    ``y`` are the ACS labels; ``flags`` the classical machine-read flags (column name -> 0/1);
    ``sex``, ``race`` (labels; None/NaN = missing) and ``age`` (years; NaN = missing) feed the
    subgroup AUROCs. ``age_edges`` are the band boundaries (``[a, b)`` bands).
    """

    ecg_ids: Sequence[str]
    y: np.ndarray
    scores: list[ModelScores]
    flags: dict[str, np.ndarray]
    sex: np.ndarray | None = None
    race: np.ndarray | None = None
    age: np.ndarray | None = None
    data_version: str = "unknown"
    title: str = "ACS-BenchWork evaluation"
    age_edges: tuple[float, ...] = (45.0, 55.0, 65.0, 75.0)
    decision_thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.02, 0.81, 0.01), 2))


@dataclass
class EvaluationResult:
    """``table``: long form (model, metric, value, ci_low, ci_high, n, source) incl. the paper's
    rows; ``markdown``: the summary; ``summary``: JSON-serialisable headline numbers;
    ``details``: per-predictor dictionaries (arrays included) for the report."""

    table: pl.DataFrame
    markdown: str
    summary: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- names


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def paper_name(name: str) -> str | None:
    """The paper's name for one of our predictor names (e.g. ``resnet18`` -> ``ResNet-18``;
    ``s4 (released)``, the authors' weights, -> ``S4``)."""
    name = name.removesuffix(" (released)")
    if name in CLASSICAL_FLAGS or name in {r[0] for r in _PAPER_ROWS}:
        return name
    key = _key(name)
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("hubert"):
        return "HuBERT-ECG"
    return None


def paper_reference_table() -> pl.DataFrame:
    """The published figures as long-form rows with ``source = PAPER_SOURCE``."""
    rows = [
        {"model": a, "metric": b, "value": v, "ci_low": lo, "ci_high": hi, "n": n}
        for a, b, v, lo, hi, n in _PAPER_ROWS
    ]
    df = pl.DataFrame(rows, schema={k: v for k, v in TABLE_SCHEMA.items() if k != "source"})
    return df.with_columns(source=pl.lit(PAPER_SOURCE))


# --------------------------------------------------------------------------- validation


def _examples(ids: Sequence[str] | np.ndarray, limit: int = 5) -> str:
    items = [str(i) for i in list(ids)[:limit]]
    more = len(ids) - len(items)
    return ", ".join(items) + (f" (+{more} more)" if more > 0 else "")


def _norm_group(value: object, kind: str) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    low = text.lower()
    if kind == "sex":
        if low in {"f", "female", "woman", "w"}:
            return "female"
        if low in {"m", "male", "man"}:
            return "male"
    if kind == "race" and low in {"black", "hispanic", "white", "other", "asian"}:
        return low.capitalize()
    return text or None


def _groups(values: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=object)
    if arr.shape != (n,):
        raise EvaluationInputError(f"{what} has shape {arr.shape}, expected ({n},)")
    return np.array([_norm_group(v, what) for v in arr], dtype=object)


def _age_labels(edges: Sequence[float]) -> list[str]:
    e = [float(x) for x in edges]
    labels = [f"<{e[0]:g}"]
    labels += [f"{lo:g}-{hi - 1:g}" for lo, hi in zip(e[:-1], e[1:], strict=True)]
    return labels + [f">={e[-1]:g}"]


def _age_bands(age: np.ndarray | None, n: int, edges: Sequence[float]) -> np.ndarray | None:
    if age is None:
        return None
    a = np.asarray(age, dtype=np.float64)
    if a.shape != (n,):
        raise EvaluationInputError(f"age has shape {a.shape}, expected ({n},)")
    e = [float(x) for x in edges]
    if sorted(e) != e or len(set(e)) != len(e):
        raise EvaluationInputError(f"age_edges must be strictly increasing, got {edges}")
    labels = _age_labels(e)
    idx = np.searchsorted(np.asarray(e), a, side="right")
    out = np.array([labels[i] for i in np.clip(idx, 0, len(labels) - 1)], dtype=object)
    out[np.isnan(a)] = None
    return out


def _align(ms: ModelScores, ids: list[str], index: dict[str, int]) -> np.ndarray:
    values = np.asarray(ms.validation)
    if values.ndim != 1:
        raise EvaluationInputError(f"scores of {ms.name!r} must be 1-D, got shape {values.shape}")
    if ms.ecg_ids is None:
        if values.size != len(ids):
            raise EvaluationInputError(
                f"scores of {ms.name!r} have {values.size} values but the evaluation set has "
                f"{len(ids)} ECGs; pass ecg_ids with the scores to align them by id"
            )
        out = values
    else:
        sid = [str(i) for i in ms.ecg_ids]
        if len(sid) != values.size:
            raise EvaluationInputError(f"{ms.name!r}: {len(sid)} ecg_ids but {values.size} scores")
        seen: dict[str, int] = {}
        dups = []
        for pos, i in enumerate(sid):
            if i in seen:
                dups.append(i)
            seen[i] = pos
        missing = [i for i in ids if i not in seen]
        extra = [i for i in sid if i not in index]
        problems = []
        if missing:
            problems.append(f"{len(missing)} evaluation ECGs have no score: {_examples(missing)}")
        if extra:
            problems.append(
                f"{len(extra)} scored ids are not in the evaluation set: {_examples(extra)}"
            )
        if dups:
            problems.append(f"{len(dups)} ids appear more than once: {_examples(dups)}")
        if problems:
            raise EvaluationInputError(f"scores of {ms.name!r}: " + "; ".join(problems))
        out = values[[seen[i] for i in ids]]
    try:
        out = out.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"scores of {ms.name!r} are not numeric: {exc}") from exc
    bad = ~np.isfinite(out)
    if bad.any():
        raise EvaluationInputError(
            f"scores of {ms.name!r} have {int(bad.sum())} NaN/inf values, e.g. for "
            f"{_examples([ids[i] for i in np.flatnonzero(bad)])}"
        )
    return out


@dataclass
class _Prepared:
    ids: list[str]
    y: np.ndarray
    scores: dict[str, np.ndarray]  # model / baseline / oracle, in input order
    kinds: dict[str, str]
    lineage: dict[str, str]
    flags: dict[str, np.ndarray]  # binary predictors incl. kind='flag' scores, + any flag
    groups: dict[str, np.ndarray]  # 'sex' / 'race' / 'age' -> labels (None = missing)
    group_order: dict[str, list[str]]  # display order of group values


def _prepare(inp: EvaluationInput) -> _Prepared:
    ids = [str(i) for i in inp.ecg_ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]
        raise EvaluationInputError(f"{len(dups)} duplicate ecg_ids: {_examples(dups)}")
    n = len(ids)
    y_raw = np.asarray(inp.y)
    if y_raw.shape != (n,):
        raise EvaluationInputError(f"y has shape {y_raw.shape}, expected ({n},) like ecg_ids")
    try:
        y = M._labels(y_raw)
    except M.MetricInputError as exc:
        raise EvaluationInputError(f"ACS labels: {exc}") from exc
    try:
        M._both_classes(y, "the evaluation")
    except M.MetricInputError as exc:
        raise EvaluationInputError(str(exc)) from exc
    if not inp.scores:
        raise EvaluationInputError("no model scores given")
    index = {i: k for k, i in enumerate(ids)}
    scores: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    lineage: dict[str, str] = {}
    flags: dict[str, np.ndarray] = {}
    for ms in inp.scores:
        if ms.kind not in KINDS:
            raise EvaluationInputError(f"{ms.name!r}: kind must be one of {KINDS}, got {ms.kind!r}")
        if ms.name in kinds or ms.name in inp.flags or ms.name == ANY_FLAG:
            raise EvaluationInputError(f"predictor name {ms.name!r} is used twice")
        values = _align(ms, ids, index)
        kinds[ms.name] = ms.kind
        lineage[ms.name] = ms.lineage
        if ms.kind == "flag":
            if not np.isin(values, (0.0, 1.0)).all():
                raise EvaluationInputError(f"flag {ms.name!r} must be 0/1")
            flags[ms.name] = values.astype(bool)
        else:
            scores[ms.name] = values
    if not scores:
        raise EvaluationInputError("no model/baseline/oracle scores given (only flags)")
    for name, values in inp.flags.items():
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise EvaluationInputError(f"flag {name!r} has shape {arr.shape}, expected ({n},)")
        try:
            flags[name] = M._labels(arr, name=f"flag {name!r}").astype(bool)
        except M.MetricInputError as exc:
            raise EvaluationInputError(str(exc)) from exc
        kinds[name] = "flag"
        lineage[name] = f"machine-read ECG statement ({name})"
    if inp.flags:
        flags[ANY_FLAG] = np.logical_or.reduce([flags[k] for k in inp.flags])
        kinds[ANY_FLAG] = "flag"
        lineage[ANY_FLAG] = "OR of " + ", ".join(inp.flags)
    groups = {}
    for what, values in (("sex", inp.sex), ("race", inp.race)):
        g = _groups(values, n, what)
        if g is not None:
            groups[what] = g
    bands = _age_bands(inp.age, n, inp.age_edges)
    if bands is not None:
        groups["age"] = bands
    order = {"sex": ["female", "male"], "race": ["Black", "Hispanic", "White"]}
    if bands is not None:
        order["age"] = _age_labels(inp.age_edges)
    return _Prepared(ids, y, scores, kinds, lineage, flags, groups, order)


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


def _is_probability(s: np.ndarray) -> bool:
    return bool(s.min() >= 0.0 and s.max() <= 1.0)


def _score_details(
    y: np.ndarray,
    s: np.ndarray,
    prep: _Prepared,
    thresholds: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    auc, lo, hi = M.delong_ci(y, s)
    d: dict[str, Any] = {"auroc": auc, "ci": (lo, hi), "auprc": M.auprc(y, s)}
    d["bootstrap_ci"] = M.bootstrap_auroc_ci(y, s, n_boot=n_boot, seed=seed)
    top = M.topk_metrics(y, s)
    d["topk"] = top
    d["topk_ci"] = _wilson(int(top["tp"]), int(top["k"]))
    thr = M.youden_threshold(y, s)
    d["youden"] = M.threshold_metrics(y, s, thr)
    d["probability"] = _is_probability(s)
    if d["probability"]:
        d["calibration"] = M.calibration(y, s)
        d["net_benefit"] = M.net_benefit(y, s, thresholds)
    if prep.flags:
        real = {k: v for k, v in prep.flags.items() if k != ANY_FLAG}
        d["classical"] = M.classical_comparison(y, s, real)
    d["subgroups"] = {
        what: M.subgroup_auroc(y, s, labels, order=prep.group_order.get(what))
        for what, labels in prep.groups.items()
    }
    return d


def _flag_details(y: np.ndarray, f: np.ndarray) -> dict[str, Any]:
    fv = f.astype(np.float64)
    auc, lo, hi = M.delong_ci(y, fv)
    tm = M.threshold_metrics(y, fv, 0.5)
    return {
        "auroc": auc,
        "ci": (lo, hi),
        "threshold": tm,
        "ppv_ci": _wilson(tm["tp"], tm["tp"] + tm["fp"]),
        "sens_ci": _wilson(tm["tp"], tm["tp"] + tm["fn"]),
        "n_flagged": tm["tp"] + tm["fp"],
    }


def _best_model(prep: _Prepared, details: dict[str, dict[str, Any]]) -> str:
    for kind in ("model", "baseline", "oracle"):
        names = [k for k in prep.scores if prep.kinds[k] == kind]
        if names:
            return max(names, key=lambda k: details[k]["auroc"])
    raise EvaluationInputError("no scores to rank")  # unreachable: _prepare checks


def _rows(
    prep: _Prepared,
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
            add(name, "calibration_slope", c["slope"])
            add(name, "calibration_intercept", c["intercept"])
            add(name, "calibration_in_the_large", c["citl"])
        if "classical" in d:
            cc = d["classical"]
            add(name, "share_flagged_no_classical", cc["share_flagged_no_classical"], count=cc["k"])
            add(name, "share_tp_no_classical", cc["share_tp_no_classical"], count=cc["n_tp"])
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
    return rows


def evaluate(inp: EvaluationInput, n_boot: int = 2000, seed: int = 0) -> EvaluationResult:
    """Compute every metric of every predictor (no plotting); see the module docstring."""
    prep = _prepare(inp)
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
        z, p, diff, ci = M.delong_paired_detail(y, s, prep.scores[best])
        paired[name] = {"z": z, "p": p, "diff": diff, "diff_ci": ci}
    rows = _rows(prep, details, flag_details, paired, best, inp.data_version)
    ours = pl.DataFrame(rows, schema=TABLE_SCHEMA)
    table = pl.concat([ours, paper_reference_table().select(list(TABLE_SCHEMA))])
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
    markdown = _markdown(inp, prep, all_details, summary)
    return EvaluationResult(table=table, markdown=markdown, summary=summary, details=all_details)


def _summary(inp, prep, details, flag_details, paired, best) -> dict[str, Any]:
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
        if "classical" in d:
            entry["share_flagged_no_classical"] = d["classical"]["share_flagged_no_classical"]
            entry["share_tp_no_classical"] = d["classical"]["share_tp_no_classical"]
        if name in paired:
            entry["delong_p_vs_best"] = paired[name]["p"]
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
        "data_version": inp.data_version,
        "n": int(y.size),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()),
        "best_model": best,
        "best_auroc": details[best]["auroc"],
        "models": models,
        "flags": flags,
    }


# --------------------------------------------------------------------------- text


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


def _paper_lookup() -> dict[tuple[str, str], tuple[float, float | None, float | None]]:
    return {(a, b): (v, lo, hi) for a, b, v, lo, hi, _ in _PAPER_ROWS}


def _order(prep: _Prepared, details: dict[str, Any]) -> list[str]:
    rank = {"model": 0, "baseline": 1, "oracle": 2}
    return sorted(details, key=lambda k: (rank[prep.kinds[k]], -details[k]["auroc"]))


def _table_rows(inp: EvaluationInput, prep: _Prepared, det: dict[str, Any]) -> dict[str, list]:
    """Rows of the report's tables as display strings (shared by Markdown and HTML)."""
    paper = _paper_lookup()
    details, flag_details, paired, best = det["scores"], det["flags"], det["paired"], det["best"]
    main = []
    for name in _order(prep, details):
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
                "label": CLASSICAL_FLAGS.get(name, name),
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
    for name in _order(prep, details):
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
    for name in _order(prep, details):
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
    for name in [*_order(prep, details), *flag_details]:
        if name not in paired:
            continue
        pr = paired[name]
        pairs.append(
            {
                "name": CLASSICAL_FLAGS.get(name, name),
                "kind": prep.kinds[name],
                "diff": f"{pr['diff']:+.3f} ({pr['diff_ci'][0]:+.3f} to {pr['diff_ci'][1]:+.3f})",
                "z": _num(pr["z"], 2),
                "p": _pvalue(pr["p"]),
            }
        )
    classical = []
    for name in _order(prep, details):
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
    order = _order(prep, details)
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


def _headline(prep: _Prepared, det: dict[str, Any]) -> str:
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


def _markdown(inp: EvaluationInput, prep: _Prepared, det: dict[str, Any], summary) -> str:
    t = _table_rows(inp, prep, det)
    lines = [
        f"# {inp.title}",
        "",
        f"Data version: `{inp.data_version}`. {_headline(prep, det)}",
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


def render_html(inp: EvaluationInput, result: EvaluationResult) -> str:
    """The self-contained HTML report (figures embedded as base64 PNG, print CSS included)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from acs_pipeline.evaluation import (
        figures as report_figures,  # matplotlib: loaded only to render
    )

    prep = _prepare(inp)
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
    headline = _headline(prep, det)
    headline_html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _escape(headline))
    return template.render(
        title=inp.title,
        data_version=inp.data_version,
        summary=result.summary,
        headline=headline_html,
        t=_table_rows(inp, prep, det),
        figures=report_figures.figures(prep, det),
        best=det["best"],
        paper_source=PAPER_SOURCE,
        n_boot_note="stratified bootstrap, percentile interval",
    )


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def write_report(inp: EvaluationInput, result: EvaluationResult, path: Path) -> Path:
    """Render and write the HTML report atomically (``Storage.write_bytes``)."""
    path = Path(path)
    html = render_html(inp, result)
    Storage(str(path.parent)).write_bytes(path.name, html.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- demo data


def synthetic_evaluation_input(
    n: int = 1295, prevalence: float = 0.3876, seed: int = 0
) -> EvaluationInput:
    """A realistic fake evaluation input for demos, tests and benchmarks.

    Six predictors roughly at the paper's AUROCs (five networks, the logistic regression on the
    flags), the four classical flags at the paper's PPV and sensitivity, an oracle, sex, race and
    age. Scores are binormal: ``logit p = logit(prev) + d*z - d^2/2`` with ``z ~ N(d*y, 1)``,
    which is calibrated; some models get their logits stretched to be miscalibrated.
    """
    rng = np.random.default_rng(seed)
    m = int(round(n * prevalence))
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, m, replace=False)] = 1
    ids = [f"ecg{v:010x}" for v in rng.choice(16**10, size=n, replace=False)]
    base = special.logit(prevalence)

    def binormal(auc: float, stretch: float = 1.0, shift: float = 0.0) -> np.ndarray:
        d = math.sqrt(2) * stats.norm.ppf(auc)
        z = rng.normal(d * y, 1.0)
        return special.expit(stretch * (base + d * z - d * d / 2) + shift)

    paper_flags = {  # (sensitivity, ppv)
        "has_st_eleva": (0.106, 0.654),
        "has_depress": (0.056, 0.491),
        "has_twave_inver": (0.122, 0.415),
        "has_twave_abnormal": (0.305, 0.347),
    }
    flags = {}
    for name, (sens, ppv) in paper_flags.items():
        fpr = sens * m * (1 - ppv) / ppv / (n - m)
        flags[name] = (rng.uniform(size=n) < np.where(y == 1, sens, fpr)).astype(np.int8)
    fmat = np.column_stack(list(flags.values())).astype(np.float64)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=np.inf, max_iter=1000).fit(fmat, y)
    version = "s3://acs/models/{0}/acs/best.ckpt sha256:{1}"
    specs = [
        ("S4", 0.703, 1.0, 0.0),
        ("ResNet-18", 0.677, 1.3, 0.0),
        ("HuBERT-ECG", 0.637, 0.8, 0.2),
        ("ECG-OMI", 0.625, 1.0, -0.3),
        ("ResNet-50", 0.603, 1.6, 0.0),
    ]
    scores = [
        ModelScores(name, binormal(auc, stretch, shift), version.format(_key(name), f"{i:02x}" * 6))
        for i, (name, auc, stretch, shift) in enumerate(specs)
    ]
    scores.append(
        ModelScores(
            "logistic regression (4 flags)",
            lr.predict_proba(fmat)[:, 1],
            "sklearn LogisticRegression(penalty=None) on the 4 flags, fitted on train",
            kind="baseline",
        )
    )
    scores.append(ModelScores("oracle", binormal(0.85), "synth truth: oracle risk", "oracle"))
    sex = rng.choice(np.array(["F", "M"], dtype=object), size=n, p=[0.42, 0.58])
    race = rng.choice(
        np.array(["White", "Black", "Hispanic", "Other"], dtype=object),
        size=n,
        p=[0.62, 0.18, 0.12, 0.08],
    )
    race[rng.choice(n, 5, replace=False)] = None
    age = np.clip(rng.normal(63, 13, size=n), 18, 100).round()
    age[rng.choice(n, 3, replace=False)] = np.nan
    return EvaluationInput(
        ecg_ids=ids,
        y=y,
        scores=scores,
        flags=flags,
        sex=sex,
        race=race,
        age=age,
        data_version=f"synthetic ed-bwh-ecg v1 (seed {seed}) cohort sha256:abc123",
        title="ACS-BenchWork evaluation (synthetic demo)",
    )
