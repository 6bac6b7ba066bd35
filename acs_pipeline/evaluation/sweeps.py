"""Seed sweeps in the report: how far a model's validation AUROC moves with the training seed
(splits fixed) and with the split seed (splits redrawn).

A :class:`SeedSweep` holds one model's runs (:class:`SeedRun`): the default run, the one the
leaderboard submission comes from, and one run per extra seed. Both validate on construction and
raise :class:`SeedSweepError` naming the model and the run. :func:`auroc_spread` is the summary
of a kind (number of runs, failed runs, mean, sample SD, min, max); :func:`sweep_section` gives
the rows of the report's "Seed sweeps" section.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

DEFAULT = "default"
KINDS = ("training_seed", "split_seed")

SUBMISSION_NOTE = (
    "The leaderboard submission is each model's default run (training seed ACS_SEED on the "
    "cohort's splits, the model scored in the tables above); the other runs only measure the "
    "spread. Split-seed runs are trained and scored on their own redrawn splits, so their "
    "validation AUROCs are on other validation ECGs than the tables above, and than each other."
)


class SeedSweepError(ValueError):
    """A seed sweep the report cannot show (bad kind, seed or AUROC, no default run, ...)."""


def _optional_auroc(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SeedSweepError(f"{what} must be a number in [0, 1] or None, got {value!r}")
    x = float(value)
    if math.isnan(x):
        return None
    if not 0.0 <= x <= 1.0:
        raise SeedSweepError(f"{what} must be in [0, 1], got {x}")
    return x


@dataclass(frozen=True)
class SeedRun:
    """One run of a sweep. ``kind`` is ``'default'``, ``'training_seed'`` or ``'split_seed'``;
    ``validation_auroc`` is None (or NaN) for a run that could not train, which then says why in
    ``error``; ``selecting_auroc`` is the AUROC its checkpoint was chosen on."""

    kind: str
    training_seed: int
    split_seed: int
    validation_auroc: float | None
    selecting_auroc: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        where = f"run ({self.kind!r}, training seed {self.training_seed!r}, split seed " \
                f"{self.split_seed!r})"
        if self.kind not in (DEFAULT, *KINDS):
            raise SeedSweepError(f"{where}: kind must be one of {(DEFAULT, *KINDS)}")
        for name in ("training_seed", "split_seed"):
            seed = getattr(self, name)
            if isinstance(seed, bool) or not isinstance(seed, Integral):
                raise SeedSweepError(f"{where}: {name} must be an integer, got {seed!r}")
            object.__setattr__(self, name, int(seed))
        auc = _optional_auroc(self.validation_auroc, f"{where}: validation_auroc")
        sel = _optional_auroc(self.selecting_auroc, f"{where}: selecting_auroc")
        error = self.error
        if error is not None and (not isinstance(error, str) or not error.strip()):
            raise SeedSweepError(f"{where}: error must be a non-empty string or None")
        if auc is None and error is None:
            raise SeedSweepError(f"{where}: no validation_auroc and no error saying why")
        if auc is not None and error is not None:
            raise SeedSweepError(f"{where}: has both a validation_auroc and an error")
        object.__setattr__(self, "validation_auroc", auc)
        object.__setattr__(self, "selecting_auroc", sel)

    @property
    def failed(self) -> bool:
        """Whether the run could not train (no validation AUROC)."""
        return self.validation_auroc is None


@dataclass(frozen=True)
class SeedSweep:
    """One model's sweep: exactly one default run and at least one other. Training-seed runs
    keep the default's split seed, split-seed runs its training seed; no run appears twice.
    ``source`` says where the runs come from (a file URI), for the reader."""

    model: str
    runs: Sequence[SeedRun]
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise SeedSweepError(f"a sweep's model must be a non-empty name, got {self.model!r}")
        runs = tuple(self.runs)
        bad = [r for r in runs if not isinstance(r, SeedRun)]
        if bad:
            raise SeedSweepError(f"sweep of {self.model!r}: runs must be SeedRun, got "
                                 f"{type(bad[0]).__name__}")
        defaults = [r for r in runs if r.kind == DEFAULT]
        if len(defaults) != 1:
            raise SeedSweepError(f"sweep of {self.model!r} has {len(defaults)} default runs, "
                                 "expected exactly 1")
        (d,) = defaults
        if d.failed:
            raise SeedSweepError(f"sweep of {self.model!r}: the default run has no validation "
                                 "AUROC")
        if len(runs) == 1:
            raise SeedSweepError(f"sweep of {self.model!r} has no run besides the default")
        seen: set[tuple[str, int, int]] = set()
        for r in runs:
            key = (r.kind, r.training_seed, r.split_seed)
            if key in seen:
                raise SeedSweepError(f"sweep of {self.model!r}: run {key} appears twice")
            seen.add(key)
            if r.kind == "training_seed" and r.split_seed != d.split_seed:
                raise SeedSweepError(
                    f"sweep of {self.model!r}: training-seed run {key} has split seed "
                    f"{r.split_seed}, but the splits are fixed at the default's {d.split_seed}")
            if r.kind == "split_seed" and r.training_seed != d.training_seed:
                raise SeedSweepError(
                    f"sweep of {self.model!r}: split-seed run {key} has training seed "
                    f"{r.training_seed}, but it is fixed at the default's {d.training_seed}")
        object.__setattr__(self, "runs", runs)

    @property
    def default(self) -> SeedRun:
        """The default run: the leaderboard submission's."""
        return next(r for r in self.runs if r.kind == DEFAULT)


def auroc_spread(aurocs: Sequence[float | None]) -> dict[str, Any]:
    """The summary of a kind's runs: ``runs`` (that trained), ``failed`` (None or NaN AUROC),
    ``mean_auroc``, ``sd_auroc`` (sample SD, None below two runs), ``min_auroc``, ``max_auroc``
    (None without a run that trained)."""
    vals = [float(a) for a in aurocs if a is not None and not math.isnan(float(a))]
    arr = np.asarray(vals, dtype=np.float64)
    some = arr.size > 0
    return {"runs": int(arr.size), "failed": len(aurocs) - int(arr.size),
            "mean_auroc": float(arr.mean()) if some else None,
            "sd_auroc": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "min_auroc": float(arr.min()) if some else None,
            "max_auroc": float(arr.max()) if some else None}


def summary(sweep: SeedSweep) -> list[dict[str, Any]]:
    """Per kind in the sweep: :func:`auroc_spread` over the default run and that kind's runs."""
    rows = []
    for kind in KINDS:
        runs = [r for r in sweep.runs if r.kind == kind]
        if runs:
            spread = auroc_spread([r.validation_auroc for r in (sweep.default, *runs)])
            rows.append({"kind": kind, **spread})
    return rows


def _auc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def sweep_section(sweeps: Sequence[SeedSweep], left_out: Mapping[str, str],
                  models: Collection[str]) -> dict[str, Any] | None:
    """The "Seed sweeps" section as display strings, or None when there is nothing to show.

    ``left_out`` maps a model whose sweep is not shown to the reason; ``models`` are the models
    the report scores: a sweep of any other model, or two sweeps of one, is an error."""
    if not sweeps and not left_out:
        return None
    bad = [s for s in sweeps if not isinstance(s, SeedSweep)]
    if bad:
        raise SeedSweepError(f"sweeps must be SeedSweep, got {type(bad[0]).__name__}")
    names = [s.model for s in sweeps]
    for s in sweeps:
        if names.count(s.model) > 1:
            raise SeedSweepError(f"{names.count(s.model)} sweeps of {s.model!r}, expected one")
        if s.model not in models:
            raise SeedSweepError(f"sweep of {s.model!r}, a model the report does not score "
                                 f"(models: {sorted(models)})")
    for model, reason in left_out.items():
        if not isinstance(reason, str) or not reason.strip():
            raise SeedSweepError(f"left-out sweep of {model!r} needs a reason")
        if model in names:
            raise SeedSweepError(f"the sweep of {model!r} is both shown and left out")
    out = []
    for s in sweeps:
        spread = [{"kind": r["kind"].replace("_", " "), "runs": r["runs"], "failed": r["failed"],
                   **{k: _auc(r[f"{k}_auroc"]) for k in ("mean", "sd", "min", "max")}}
                  for r in summary(s)]
        runs = [{"kind": r.kind.replace("_", " "), "training_seed": r.training_seed,
                 "split_seed": r.split_seed, "auroc": _auc(r.validation_auroc),
                 "selecting": _auc(r.selecting_auroc), "error": r.error or "",
                 "default": r.kind == DEFAULT} for r in s.runs]
        out.append({"model": s.model, "source": s.source, "summary": spread, "runs": runs})
    return {"sweeps": out, "note": SUBMISSION_NOTE,
            "left_out": [{"model": m, "reason": r} for m, r in left_out.items()]}
