"""Ranking metrics of a risk score: AUROC with DeLong and bootstrap intervals, the paired DeLong
test, AUPRC, and operating points (a threshold, Youden's J, the top-k).

Inputs follow :mod:`acs_pipeline.evaluation.checks`. AUROC counts ties as one half (the
Mann-Whitney statistic), exactly as ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats
from sklearn.metrics import average_precision_score, roc_curve

from acs_pipeline.evaluation.checks import (
    MetricInputError,
    as_labels,
    as_scores,
    check_alpha,
    labels_and_scores,
    ratio,
)

_BOOT_CHUNK = 256  # bootstrap replicates drawn and scored per vectorised block (fixed: seeds
# give the same replicates whatever the data size)

# --------------------------------------------------------------------------- AUROC


def auroc(y: object, s: object) -> float:
    """Area under the ROC curve (ties count 1/2); equals ``sklearn.metrics.roc_auc_score``."""
    yy, ss, m, n = labels_and_scores(y, s, "AUROC")
    ranks = stats.rankdata(ss)
    return float((ranks[yy == 1].sum() - m * (m + 1) / 2.0) / (m * n))


def _delong_components(
    y: np.ndarray, scores: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUCs and structural components for k score rows.

    ``scores`` is (k, N). Returns ``aucs`` (k,), ``v10`` (k, m) -- for each positive the share
    of negatives it outranks -- and ``v01`` (k, n) -- for each negative the share of positives
    that outrank it. Midranks make ties count 1/2.
    """
    n = y.size - m
    x = scores[:, y == 1]
    z = scores[:, y == 0]
    tx = stats.rankdata(x, axis=1)
    tz = stats.rankdata(z, axis=1)
    tall = stats.rankdata(np.concatenate([x, z], axis=1), axis=1)
    aucs = (tall[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tall[:, :m] - tx) / n
    v01 = 1.0 - (tall[:, m:] - tz) / m
    return aucs, v10, v01


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return s10 / m + s01 / n


def delong_ci(y: object, s: object, alpha: float = 0.05) -> tuple[float, float, float]:
    """AUROC with its DeLong (1988) confidence interval: ``(auc, low, high)``.

    Uses the O(N log N) midrank algorithm of Sun & Xu (2014) and a normal interval on the AUC
    scale, clipped to [0, 1] (as pROC does). When the variance is zero (perfect separation, or
    constant scores) the interval collapses to the point.
    """
    yy, ss, m, _ = labels_and_scores(y, s, "DeLong AUROC CI")
    check_alpha(alpha)
    aucs, v10, v01 = _delong_components(yy, ss[None, :], m)
    var = float(_delong_cov(v10, v01)[0, 0])
    auc = float(aucs[0])
    half = special.ndtri(1 - alpha / 2) * np.sqrt(max(var, 0.0))
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


def delong_paired(
    y: object, s1: object, s2: object, alpha: float = 0.05
) -> tuple[float, float, float, tuple[float, float]]:
    """Paired DeLong test of AUROC(s1) == AUROC(s2) on the same cases:
    ``(z, two-sided p, auc1 - auc2, (low, high))``, the last the CI of the difference.

    ``z > 0`` means ``s1`` has the larger AUROC. Identical AUROCs with zero variance of the
    difference (e.g. the same scores twice) give ``z = 0``, ``p = 1``.
    """
    yy, a, m, _ = labels_and_scores(y, s1, "paired DeLong test")
    b = as_scores(s2, yy.size, "s2")
    check_alpha(alpha)
    aucs, v10, v01 = _delong_components(yy, np.vstack([a, b]), m)
    cov = _delong_cov(v10, v01)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else float(np.sign(diff) * np.inf)
        p = 1.0 if z == 0.0 else 0.0
        return z, p, diff, (diff, diff)
    se = np.sqrt(var)
    z = diff / se
    p = float(2 * special.ndtr(-abs(z)))  # normal tail, fast scalar path
    half = float(special.ndtri(1 - alpha / 2) * se)
    return float(z), p, diff, (diff - half, diff + half)


def holm(pvalues: object) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order.

    Sorted ascending, the i-th smallest of m p-values (i from 0) becomes ``(m - i) * p``, made
    non-decreasing along the order and capped at 1; reject where the adjusted p < alpha. NaN
    p-values are not part of the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if np.any((p < 0) | (p > 1)):
        raise MetricInputError("p-values must lie in [0, 1]")
    out = np.full(p.size, np.nan)
    keep = np.flatnonzero(~np.isnan(p))
    order = keep[np.argsort(p[keep], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def bootstrap_auroc_samples(y: object, s: object, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """AUROCs of ``n_boot`` stratified bootstrap replicates (vectorised, no loop per replicate).

    Positives and negatives are resampled separately with replacement (so every replicate keeps
    the class sizes and has a defined AUROC). Each replicate's AUROC is computed from dense ranks:
    the resampled negatives are counted per distinct score value (one ``bincount`` over a
    (replicates, distinct values) grid), a cumulative sum gives for every score how many
    negatives lie below it, and the positives look their counts up -- ties count 1/2, exactly
    as the Mann-Whitney AUROC. Replicates are drawn in fixed blocks of 256 to bound memory, so
    the result depends only on the data and ``seed``, and a larger ``n_boot`` extends the same
    sequence of replicates.
    """
    yy, ss, m, n = labels_and_scores(y, s, "bootstrap AUROC")
    if int(n_boot) < 1:
        raise MetricInputError(f"n_boot must be >= 1, got {n_boot}")
    n_boot = int(n_boot)
    values, dense = np.unique(ss, return_inverse=True)
    n_values = values.size
    rank_pos = dense[yy == 1]
    rank_neg = dense[yy == 0]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=np.float64)
    b = _BOOT_CHUNK
    for start in range(0, n_boot, b):
        pos = rank_pos[rng.integers(0, m, size=(b, m))]
        neg = rank_neg[rng.integers(0, n, size=(b, n))]
        offsets = (np.arange(b) * n_values)[:, None]
        counts = np.bincount((neg + offsets).ravel(), minlength=b * n_values).reshape(b, n_values)
        # negatives strictly below each value + half of those tied with it
        wins = np.cumsum(counts, axis=1) - 0.5 * counts
        take = min(b, n_boot - start)
        hits = wins.ravel()[(pos + offsets)[:take]]
        out[start : start + take] = hits.sum(axis=1) / (m * n)
    return out


def bootstrap_auroc_ci(
    y: object, s: object, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile CI of the AUROC from a stratified bootstrap: ``(low, high)``.

    See :func:`bootstrap_auroc_samples`; the same ``seed`` gives the same interval.
    """
    check_alpha(alpha)
    reps = bootstrap_auroc_samples(y, s, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auprc(y: object, s: object) -> float:
    """Area under the precision-recall curve (average precision, step-wise, no interpolation)."""
    yy, ss, _, _ = labels_and_scores(y, s, "AUPRC")
    return float(average_precision_score(yy, ss))


# --------------------------------------------------------------------------- operating points


def threshold_metrics(y: object, s: object, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when ``s >= threshold`` is called positive.

    Returns ``sens, spec, ppv, npv`` (NaN when their denominator is empty), the counts
    ``tp, fp, tn, fn`` and ``threshold``. One-class input is allowed (the undefined rates are NaN).
    """
    yy = as_labels(y)
    ss = as_scores(s, yy.size)
    if np.isnan(threshold):
        raise MetricInputError("threshold is NaN")
    pred = ss >= threshold
    pos = yy == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    return {
        "threshold": float(threshold),
        "sens": ratio(tp, tp + fn),
        "spec": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def youden_threshold(y: object, s: object) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1.

    Among equal J the highest threshold wins (fewest positives). When no threshold beats J = 0
    (an uninformative or inverted score) the result is ``+inf``: nothing is called positive.
    Choosing and reporting the threshold on the same data is optimistic; pass a threshold chosen
    elsewhere to :func:`threshold_metrics` when one exists.
    """
    yy, ss, _, _ = labels_and_scores(y, s, "Youden threshold")
    fpr, tpr, thr = roc_curve(yy, ss, drop_intermediate=False)
    j = tpr - fpr
    best = int(np.argmax(j))  # first maximum = highest threshold
    return float(thr[best])


def topk_metrics(y: object, s: object, k: int | None = None) -> dict[str, float | int | np.ndarray]:
    """Call the ``k`` highest-scoring cases positive; ``k`` defaults to the number of positives.

    With the default ``k`` the number called positive equals the number of true positives, so
    PPV equals sensitivity by construction (the paper's "top-k").

    Ties at the cut are broken deterministically by input order: cases are sorted by score with
    a stable sort, so among equal scores the earlier case is selected. ``n_tied_at_cut`` counts
    the cases sharing the score at the cut and ``ppv_tie_expected`` gives the order-free value
    (positives in the tied block shared pro rata, i.e. the expectation under random tie-breaking).
    ``selected`` is the boolean mask of the cases called positive.
    """
    yy, ss, m, _ = labels_and_scores(y, s, "top-k metrics")
    if k is None:
        k = m
    k = int(k)
    if not 1 <= k <= yy.size:
        raise MetricInputError(f"k must be in [1, {yy.size}], got {k}")
    order = np.argsort(-ss, kind="stable")
    selected = np.zeros(yy.size, dtype=bool)
    selected[order[:k]] = True
    tp = int(yy[selected].sum())
    cut = ss[order[k - 1]]
    tied = ss == cut
    above = ss > cut
    n_above = int(above.sum())
    tp_above = int(yy[above].sum())
    slots = k - n_above
    tie_pos = int(yy[tied].sum())
    expected_tp = tp_above + slots * tie_pos / int(tied.sum())
    return {
        "k": k,
        "tp": tp,
        "fp": k - tp,
        "ppv": tp / k,
        "sens": tp / m,
        "threshold": float(cut),
        "n_tied_at_cut": int(tied.sum()),
        "ppv_tie_expected": float(expected_tp / k),
        "selected": selected,
    }
