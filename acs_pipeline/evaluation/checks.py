"""Input checks shared by the metrics (labels, scores and probabilities, validated) and the
example lists that error messages about many ids share.

Conventions of every metric in ``ranking``, ``calibration``, ``subgroups`` and ``flags``:

- ``y`` holds binary labels (0/1 or bool, 1 = event); ``s`` holds scores where a higher value
  means higher risk; ``p`` holds probabilities in [0, 1]. Inputs are validated
  (1-D, equal length, finite, binary labels) and bad input raises :class:`MetricInputError`
  with a message that says what was expected.
- Metrics that need both classes raise :class:`MetricInputError` on single-class input.
- A score at or above a threshold is called positive (``s >= threshold``).
- Ratios with an empty denominator (for example PPV when nothing is called positive) are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class MetricInputError(ValueError):
    """Inputs a metric cannot be computed on (shape, NaN, non-binary labels, one class)."""


def as_labels(y: object, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D int8 array of 0/1 labels (bool accepted)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise MetricInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricInputError(f"{name} is empty")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.issubdtype(arr.dtype, np.number):
        raise MetricInputError(f"{name} must be numeric 0/1 or bool, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        examples = np.unique(arr[bad])[:5].tolist()
        raise MetricInputError(
            f"{name} must hold only 0/1 labels; {int(bad.sum())} values are not, e.g. {examples}"
        )
    return arr.astype(np.int8)


def as_scores(s: object, n: int, name: str = "s") -> np.ndarray:
    """``s`` as a 1-D float64 array of ``n`` finite scores."""
    arr = np.asarray(s)
    if arr.ndim != 1:
        raise MetricInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise MetricInputError(f"{name} has {arr.shape[0]} values but y has {n}")
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        raise MetricInputError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise MetricInputError(
            f"{name} has {int(bad.sum())} non-finite values (NaN/inf), first at positions {idx}"
        )
    return arr


def as_probabilities(p: object, n: int, name: str = "p") -> np.ndarray:
    """``p`` as :func:`as_scores`, and every value in [0, 1]."""
    arr = as_scores(p, n, name)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise MetricInputError(
            f"{name} must be probabilities in [0, 1], "
            f"got range [{arr.min():.4g}, {arr.max():.4g}]"
        )
    return arr


def both_classes(y: np.ndarray, what: str) -> tuple[int, int]:
    """``(positives, negatives)`` of validated labels; an error naming ``what`` if one is 0."""
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        only = "positives" if n == 0 else "negatives"
        raise MetricInputError(
            f"{what} needs both classes, but all {y.size} labels are {only} "
            f"({m} positives, {n} negatives)"
        )
    return m, n


def labels_and_scores(
    y: object, s: object, what: str
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validated ``(y, s, positives, negatives)`` for a metric that needs both classes."""
    yy = as_labels(y)
    ss = as_scores(s, yy.size)
    m, n = both_classes(yy, what)
    return yy, ss, m, n


def check_alpha(alpha: float) -> None:
    """Raise unless ``0 < alpha < 1``."""
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")


def ratio(num: float, den: float) -> float:
    """``num / den``, NaN when ``den`` is 0."""
    return float(num / den) if den > 0 else float("nan")


def examples(items: Sequence[object], limit: int = 5) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are."""
    shown = [str(i) for i in list(items)[:limit]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")
