"""AUROC per subgroup (sex, race, age band, ...), with DeLong intervals.

Inputs follow :mod:`acs_pipeline.evaluation.checks`. Unlike the other metrics, subgroups with
too few cases of either class are an expected outcome, not a caller error: they get NaN and a
reason, never a point estimate with a degenerate interval (with a handful of positives the
DeLong variance can collapse to zero and show e.g. 1.000 (1.000-1.000)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from acs_pipeline.evaluation.checks import MetricInputError, as_labels, as_scores
from acs_pipeline.evaluation.ranking import delong_ci

MIN_PER_CLASS = 10  # fewest positives and fewest negatives for a subgroup AUROC and its CI
TOO_FEW = "too few cases"


def _group_labels(groups: object, n: int) -> np.ndarray:
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or g.shape[0] != n:
        raise MetricInputError(f"groups must be 1-D with {n} values, got shape {g.shape}")
    out = np.empty(n, dtype=object)
    missing = np.fromiter(
        (v is None or (isinstance(v, float) and v != v) for v in g), dtype=bool, count=n
    )
    out[missing] = "missing"
    for value in set(g[~missing].tolist()):
        out[g == value] = str(value)
    return out


def subgroup_auroc(
    y: object,
    s: object,
    groups: object,
    min_per_class: int = MIN_PER_CLASS,
    alpha: float = 0.05,
    order: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """AUROC with DeLong CI per group value (None/NaN grouped as ``'missing'``).

    Groups come in ``order`` (values not present are skipped), then the remaining values sorted,
    ``'missing'`` last.

    Each row: ``group, n, positives, auroc, ci_low, ci_high, reason``. Groups with fewer than
    ``min_per_class`` positives or fewer than ``min_per_class`` negatives get NaN AUROC and a
    ``reason`` starting with :data:`TOO_FEW`; ``reason`` is ``None`` otherwise.
    """
    if int(min_per_class) < 1:
        raise MetricInputError(f"min_per_class must be >= 1, got {min_per_class}")
    yy = as_labels(y)
    ss = as_scores(s, yy.size)
    labels = _group_labels(groups, yy.size)
    rows: list[dict[str, object]] = []
    present = set(labels.tolist())
    first = [str(v) for v in (order or []) if str(v) in present]
    rest = sorted(present - set(first), key=lambda v: (v == "missing", v))
    for value in [*dict.fromkeys(first), *rest]:
        mask = labels == value
        ny = yy[mask]
        npos = int(ny.sum())
        row: dict[str, object] = {
            "group": value,
            "n": int(mask.sum()),
            "positives": npos,
            "auroc": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "reason": None,
        }
        nneg = ny.size - npos
        if min(npos, nneg) < min_per_class:
            row["reason"] = f"{TOO_FEW} ({npos} ACS, {nneg} without; need {min_per_class} of each)"
        else:
            auc, lo, hi = delong_ci(ny, ss[mask], alpha=alpha)
            row.update(auroc=auc, ci_low=lo, ci_high=hi)
        rows.append(row)
    return rows
