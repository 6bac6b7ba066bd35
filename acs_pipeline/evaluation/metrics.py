"""Evaluation metrics for binary risk scores: plain numpy / scipy / scikit-learn functions.

Conventions shared by every function here:

- ``y`` holds binary labels (0/1 or bool, 1 = event); ``s`` holds scores where a higher value
  means higher risk; ``p`` holds probabilities in [0, 1]. Inputs are validated
  (1-D, equal length, finite, binary labels) and bad input raises :class:`MetricInputError`
  with a message that says what was expected.
- AUROC counts ties as one half (the Mann-Whitney statistic), exactly as
  ``sklearn.metrics.roc_auc_score``. Metrics that need both classes raise
  :class:`MetricInputError` on single-class input; :func:`subgroup_auroc` instead reports NaN
  with a reason, because one-class subgroups are an expected outcome, not a caller error.
- A score at or above a threshold is called positive (``s >= threshold``).
- Ratios with an empty denominator (for example PPV when nothing is called positive) are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special, stats
from sklearn.metrics import average_precision_score, roc_curve

__all__ = [
    "MetricInputError",
    "any_flag",
    "auprc",
    "auroc",
    "bootstrap_auroc_ci",
    "bootstrap_auroc_samples",
    "calibration",
    "classical_comparison",
    "cumulative_risk",
    "delong_ci",
    "delong_paired",
    "delong_paired_detail",
    "net_benefit",
    "net_benefit_treat_all",
    "subgroup_auroc",
    "threshold_metrics",
    "topk_metrics",
    "youden_threshold",
]

_BOOT_CHUNK = 256  # bootstrap replicates drawn and scored per vectorised block (fixed: seeds
# give the same replicates whatever the data size)


class MetricInputError(ValueError):
    """Inputs a metric cannot be computed on (shape, NaN, non-binary labels, one class)."""


# --------------------------------------------------------------------------- validation


def _labels(y: object, name: str = "y") -> np.ndarray:
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


def _scores(s: object, n: int, name: str = "s") -> np.ndarray:
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


def _both_classes(y: np.ndarray, what: str) -> tuple[int, int]:
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        only = "positives" if n == 0 else "negatives"
        raise MetricInputError(
            f"{what} needs both classes, but all {y.size} labels are {only} "
            f"({m} positives, {n} negatives)"
        )
    return m, n


def _prepare(y: object, s: object, what: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    yy = _labels(y)
    ss = _scores(s, yy.size)
    m, n = _both_classes(yy, what)
    return yy, ss, m, n


def _probabilities(p: np.ndarray, name: str = "p") -> np.ndarray:
    if p.min() < 0.0 or p.max() > 1.0:
        raise MetricInputError(
            f"{name} must be probabilities in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]"
        )
    return p


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- AUROC


def auroc(y: object, s: object) -> float:
    """Area under the ROC curve (ties count 1/2); equals ``sklearn.metrics.roc_auc_score``."""
    yy, ss, m, n = _prepare(y, s, "AUROC")
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
    yy, ss, m, _ = _prepare(y, s, "DeLong AUROC CI")
    _check_alpha(alpha)
    aucs, v10, v01 = _delong_components(yy, ss[None, :], m)
    var = float(_delong_cov(v10, v01)[0, 0])
    auc = float(aucs[0])
    half = special.ndtri(1 - alpha / 2) * np.sqrt(max(var, 0.0))
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


def delong_paired(y: object, s1: object, s2: object) -> tuple[float, float]:
    """Paired DeLong test of AUROC(s1) == AUROC(s2) on the same cases: ``(z, two-sided p)``.

    ``z > 0`` means ``s1`` has the larger AUROC. Identical AUROCs with zero variance of the
    difference (e.g. the same scores twice) give ``(0.0, 1.0)``.
    """
    z, p, _, _ = delong_paired_detail(y, s1, s2)
    return z, p


def delong_paired_detail(
    y: object, s1: object, s2: object, alpha: float = 0.05
) -> tuple[float, float, float, tuple[float, float]]:
    """Paired DeLong test with the AUROC difference: ``(z, p, auc1 - auc2, (low, high))``."""
    yy, a, m, _ = _prepare(y, s1, "paired DeLong test")
    b = _scores(s2, yy.size, "s2")
    _check_alpha(alpha)
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


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")


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
    yy, ss, m, n = _prepare(y, s, "bootstrap AUROC")
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
    _check_alpha(alpha)
    reps = bootstrap_auroc_samples(y, s, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auprc(y: object, s: object) -> float:
    """Area under the precision-recall curve (average precision, step-wise, no interpolation)."""
    yy, ss, _, _ = _prepare(y, s, "AUPRC")
    return float(average_precision_score(yy, ss))


# --------------------------------------------------------------------------- operating points


def threshold_metrics(y: object, s: object, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when ``s >= threshold`` is called positive.

    Returns ``sens, spec, ppv, npv`` (NaN when their denominator is empty), the counts
    ``tp, fp, tn, fn`` and ``threshold``. One-class input is allowed (the undefined rates are NaN).
    """
    yy = _labels(y)
    ss = _scores(s, yy.size)
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
        "sens": _ratio(tp, tp + fn),
        "spec": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
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
    yy, ss, _, _ = _prepare(y, s, "Youden threshold")
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
    yy, ss, m, _ = _prepare(y, s, "top-k metrics")
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
    - ``brier``: mean squared error; ``brier_reference``: that of always predicting the prevalence.
    - ``slope`` and ``intercept`` of the logistic recalibration ``logit P(y) = a + b logit(p)``
      (perfect calibration: slope 1, intercept 0); ``citl``: calibration-in-the-large, the
      intercept with the slope fixed at 1. ``p`` is clipped to [1e-6, 1 - 1e-6] before the logit.
    - the reliability curve ``bin_mean_predicted``, ``bin_observed``, ``bin_count`` over
      ``n_bins`` bins (``strategy='quantile'``: equal-count bins; ``'uniform'``: equal-width on
      [0, 1]); empty bins are dropped.
    """
    yy = _labels(y)
    pp = _probabilities(_scores(p, yy.size, "p"))
    _both_classes(yy, "calibration")
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
    return {
        "brier": float(np.mean((pp - yf) ** 2)),
        "brier_reference": float(prev * (1 - prev)),
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
    yy = _labels(y)
    pp = _probabilities(_scores(p, yy.size, "p"))
    t = _thresholds(thresholds)
    pred = pp[None, :] >= t[:, None]
    pos = (yy == 1)[None, :]
    tp = (pred & pos).sum(axis=1)
    fp = (pred & ~pos).sum(axis=1)
    return tp / yy.size - fp / yy.size * t / (1 - t)


def net_benefit_treat_all(y: object, thresholds: object) -> np.ndarray:
    """Net benefit of treating everyone; treating no one has net benefit 0 at every threshold."""
    yy = _labels(y)
    t = _thresholds(thresholds)
    prev = yy.mean()
    return prev - (1 - prev) * t / (1 - t)


# --------------------------------------------------------------------------- curves and groups


def cumulative_risk(y: object, s: object) -> dict[str, np.ndarray]:
    """Cases ranked by score, highest first (stable order for ties).

    Returns, for the top 1..N cases: ``share_flagged`` (fraction of all cases), ``observed_rate``
    (event rate among them, the cumulative precision) and ``share_events`` (fraction of all
    events they hold, the gains curve).
    """
    yy = _labels(y)
    ss = _scores(s, yy.size)
    m, _ = _both_classes(yy, "cumulative-risk curve")
    order = np.argsort(-ss, kind="stable")
    hits = np.cumsum(yy[order])
    flagged = np.arange(1, yy.size + 1)
    return {
        "share_flagged": flagged / yy.size,
        "observed_rate": hits / flagged,
        "share_events": hits / m,
    }


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
    min_n: int = 20,
    alpha: float = 0.05,
    order: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """AUROC with DeLong CI per group value (None/NaN grouped as ``'missing'``).

    Groups come in ``order`` (values not present are skipped), then the remaining values sorted,
    ``'missing'`` last.

    Each row: ``group, n, positives, auroc, ci_low, ci_high, reason``. Groups with fewer than
    ``min_n`` cases or with one class get NaN AUROC and a ``reason``; ``reason`` is ``None``
    otherwise.
    """
    yy = _labels(y)
    ss = _scores(s, yy.size)
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
        if mask.sum() < min_n:
            row["reason"] = f"n < {min_n}"
        elif npos == 0 or npos == ny.size:
            row["reason"] = "only one class"
        else:
            auc, lo, hi = delong_ci(ny, ss[mask], alpha=alpha)
            row.update(auroc=auc, ci_low=lo, ci_high=hi)
        rows.append(row)
    return rows


def classical_comparison(
    y: object, s: object, flags: Mapping[str, object] | Sequence[object]
) -> dict[str, float | int]:
    """How a score's top-k positives relate to the classical ECG flags (any flag set = flagged).

    Returns counts for a two-set Venn diagram of score-flagged (top-k) vs classical-flagged cases
    (``n_model_only, n_both, n_classical_only, n_neither``), and the headline shares:
    ``share_flagged_no_classical`` (of the top-k cases, the share without any classical flag) and
    ``share_tp_no_classical`` (of the true positives in the top-k, the share without any flag).
    """
    yy = _labels(y)
    anyflag = any_flag(flags, yy.size)
    top = topk_metrics(yy, s)
    sel = top["selected"]
    assert isinstance(sel, np.ndarray)
    tp_mask = sel & (yy == 1)
    n_sel = int(sel.sum())
    n_tp = int(tp_mask.sum())
    n_sel_noflag = int(np.sum(sel & ~anyflag))
    n_tp_noflag = int(np.sum(tp_mask & ~anyflag))
    return {
        "k": n_sel,
        "n_model_only": n_sel_noflag,
        "n_both": int(np.sum(sel & anyflag)),
        "n_classical_only": int(np.sum(~sel & anyflag)),
        "n_neither": int(np.sum(~sel & ~anyflag)),
        "n_tp": n_tp,
        "n_tp_no_classical": n_tp_noflag,
        "share_flagged_no_classical": _ratio(n_sel_noflag, n_sel),
        "share_tp_no_classical": _ratio(n_tp_noflag, n_tp),
    }


def any_flag(flags: Mapping[str, object] | Sequence[object], n: int) -> np.ndarray:
    """Element-wise OR of binary flag arrays (each validated: length ``n``, 0/1 or bool)."""
    items = flags.items() if isinstance(flags, Mapping) else enumerate(flags)
    out = np.zeros(n, dtype=bool)
    count = 0
    for name, values in items:
        arr = _labels(values, name=f"flag {name!r}")
        if arr.size != n:
            raise MetricInputError(f"flag {name!r} has {arr.size} values, expected {n}")
        out |= arr.astype(bool)
        count += 1
    if count == 0:
        raise MetricInputError("no classical flags given")
    return out
