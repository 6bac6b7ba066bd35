"""Calibration and clinical usefulness of a risk score: reliability and logistic recalibration,
net benefit (decision curves), and the cumulative risk (gains) curve.

Inputs follow :mod:`acs_pipeline.evaluation.checks`.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from acs_pipeline.evaluation.checks import (
    MetricInputError,
    as_labels,
    as_probabilities,
    as_scores,
    both_classes,
)

# --------------------------------------------------------------------------- calibration


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return special.logit(np.clip(p, eps, 1 - eps))


def _logistic_fit(
    x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, iters: int = 50
) -> np.ndarray:
    """Unpenalised logistic regression ``y ~ a + b*x + offset`` by Newton-Raphson (IRLS)."""
    design = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones(y.size), x])
    beta = np.zeros(design.shape[1])
    for _ in range(iters):
        eta = design @ beta + offset
        mu = special.expit(eta)
        w = np.maximum(mu * (1 - mu), 1e-12)
        grad = design.T @ (y - mu)
        hess = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return np.full(design.shape[1], np.nan)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def calibration(
    y: object, p: object, n_bins: int = 10, strategy: str = "quantile"
) -> dict[str, float | np.ndarray]:
    """Calibration of probabilities ``p`` against labels ``y``.

    Returns:
    - ``brier``: mean squared error; ``brier_reference``: that of always predicting the prevalence;
      ``brier_skill`` = 1 - brier / brier_reference (0: no better than the prevalence, 1: perfect,
      negative: worse than the prevalence).
    - ``slope`` and ``intercept`` of the logistic recalibration ``logit P(y) = a + b logit(p)``
      (perfect calibration: slope 1, intercept 0); ``citl``: calibration-in-the-large, the
      intercept with the slope fixed at 1. ``p`` is clipped to [1e-6, 1 - 1e-6] before the logit.
    - the reliability curve ``bin_mean_predicted``, ``bin_observed``, ``bin_count`` over
      ``n_bins`` bins (``strategy='quantile'``: equal-count bins; ``'uniform'``: equal-width on
      [0, 1]); empty bins are dropped.
    """
    yy = as_labels(y)
    pp = as_probabilities(p, yy.size)
    both_classes(yy, "calibration")
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be >= 1, got {n_bins}")
    lp = _logit(pp)
    yf = yy.astype(np.float64)
    a, b = _logistic_fit(lp, yf, np.zeros(yy.size))
    (citl,) = _logistic_fit(None, yf, lp)
    if strategy == "quantile":
        edges = np.quantile(pp, np.linspace(0, 1, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise MetricInputError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges[1:-1], pp, side="right"), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    keep = count > 0
    sum_p = np.bincount(idx, weights=pp, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yf, minlength=n_bins)
    prev = yf.mean()
    brier = float(np.mean((pp - yf) ** 2))
    reference = float(prev * (1 - prev))  # > 0: both classes are present
    return {
        "brier": brier,
        "brier_reference": reference,
        "brier_skill": 1.0 - brier / reference,
        "slope": float(b),
        "intercept": float(a),
        "citl": float(citl),
        "bin_mean_predicted": sum_p[keep] / count[keep],
        "bin_observed": sum_y[keep] / count[keep],
        "bin_count": count[keep],
    }


# --------------------------------------------------------------------------- decision curves


def _thresholds(thresholds: object) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.all((t > 0) & (t < 1)):
        raise MetricInputError("decision-curve thresholds must be non-empty and inside (0, 1)")
    return t


def net_benefit(y: object, p: object, thresholds: object) -> np.ndarray:
    """Net benefit of treating cases with ``p >= t``: TP/N - FP/N * t / (1 - t), per threshold."""
    yy = as_labels(y)
    pp = as_probabilities(p, yy.size)
    t = _thresholds(thresholds)
    pred = pp[None, :] >= t[:, None]
    pos = (yy == 1)[None, :]
    tp = (pred & pos).sum(axis=1)
    fp = (pred & ~pos).sum(axis=1)
    return tp / yy.size - fp / yy.size * t / (1 - t)


def net_benefit_treat_all(y: object, thresholds: object) -> np.ndarray:
    """Net benefit of treating everyone; treating no one has net benefit 0 at every threshold."""
    yy = as_labels(y)
    t = _thresholds(thresholds)
    prev = yy.mean()
    return prev - (1 - prev) * t / (1 - t)


# --------------------------------------------------------------------------- cumulative risk


def cumulative_risk(y: object, s: object) -> dict[str, np.ndarray]:
    """Cases ranked by score, highest first (stable order for ties).

    Returns, for the top 1..N cases: ``share_flagged`` (fraction of all cases), ``observed_rate``
    (event rate among them, the cumulative precision) and ``share_events`` (fraction of all
    events they hold, the gains curve).
    """
    yy = as_labels(y)
    ss = as_scores(s, yy.size)
    m, _ = both_classes(yy, "cumulative-risk curve")
    order = np.argsort(-ss, kind="stable")
    hits = np.cumsum(yy[order])
    flagged = np.arange(1, yy.size + 1)
    return {
        "share_flagged": flagged / yy.size,
        "observed_rate": hits / flagged,
        "share_events": hits / m,
    }
