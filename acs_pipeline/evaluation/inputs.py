"""What the evaluation is given: the ACS labels of the evaluation ECGs and every predictor's
scores on them, validated and aligned by ECG id (:func:`prepare`).

A predictor is a model, the baseline, the oracle or a binary flag (``KINDS``). Scores given with
their ECG ids are aligned to the evaluation order; errors name the predictor and example ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acs_pipeline.evaluation.checks import MetricInputError, as_labels, both_classes, examples
from acs_pipeline.evaluation.flags import ANY_FLAG, any_flag
from acs_pipeline.evaluation.sweeps import SeedSweep

KINDS = ("model", "baseline", "flag", "oracle")


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
    subgroup AUROCs. ``age_edges`` are the band boundaries (``[a, b)`` bands). ``profile`` is
    the training profile that produced the models (``"smoke"`` marks the report as a smoke test;
    None when unknown). ``sweeps`` are seed sweeps of scored models (a "Seed sweeps" section);
    ``sweeps_left_out`` maps a model whose sweep is not shown to the reason, said in that section.
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
    profile: str | None = None
    age_edges: tuple[float, ...] = (45.0, 55.0, 65.0, 75.0)
    decision_thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.02, 0.81, 0.01), 2))
    sweeps: Sequence[SeedSweep] = ()
    sweeps_left_out: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation


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
            problems.append(f"{len(missing)} evaluation ECGs have no score: {examples(missing)}")
        if extra:
            problems.append(
                f"{len(extra)} scored ids are not in the evaluation set: {examples(extra)}"
            )
        if dups:
            problems.append(f"{len(dups)} ids appear more than once: {examples(dups)}")
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
            f"{examples([ids[i] for i in np.flatnonzero(bad)])}"
        )
    return out


@dataclass
class Prepared:
    """The validated input: labels, scores by name (aligned to ``ids``), flags and groups."""

    ids: list[str]
    y: np.ndarray
    scores: dict[str, np.ndarray]  # model / baseline / oracle, in input order
    kinds: dict[str, str]
    lineage: dict[str, str]
    flags: dict[str, np.ndarray]  # binary predictors incl. kind='flag' scores, + any flag
    groups: dict[str, np.ndarray]  # 'sex' / 'race' / 'age' -> labels (None = missing)
    group_order: dict[str, list[str]]  # display order of group values


def prepare(inp: EvaluationInput) -> Prepared:
    """Validate ``inp`` and align every score to its ECG ids; the ``ANY_FLAG`` OR is added."""
    ids = [str(i) for i in inp.ecg_ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]
        raise EvaluationInputError(f"{len(dups)} duplicate ecg_ids: {examples(dups)}")
    n = len(ids)
    y_raw = np.asarray(inp.y)
    if y_raw.shape != (n,):
        raise EvaluationInputError(f"y has shape {y_raw.shape}, expected ({n},) like ecg_ids")
    try:
        y = as_labels(y_raw)
    except MetricInputError as exc:
        raise EvaluationInputError(f"ACS labels: {exc}") from exc
    try:
        both_classes(y, "the evaluation")
    except MetricInputError as exc:
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
            flags[name] = as_labels(arr, name=f"flag {name!r}").astype(bool)
        except MetricInputError as exc:
            raise EvaluationInputError(str(exc)) from exc
        kinds[name] = "flag"
        lineage[name] = f"machine-read ECG statement ({name})"
    if inp.flags:
        flags[ANY_FLAG] = any_flag({k: flags[k] for k in inp.flags}, n)
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
    return Prepared(ids, y, scores, kinds, lineage, flags, groups, order)


def is_smoke(inp: EvaluationInput) -> bool:
    """Whether the scored models come from the smoke profile (a pipeline test, not a result)."""
    return inp.profile == "smoke"


def display_order(prep: Prepared, details: dict[str, Any]) -> list[str]:
    """Scored predictors as the report lists them: models, baselines, the oracle; by AUROC."""
    rank = {"model": 0, "baseline": 1, "oracle": 2}
    return sorted(details, key=lambda k: (rank[prep.kinds[k]], -details[k]["auroc"]))
