"""Tests for evaluation.ranking against sklearn, hand counts and an independent DeLong."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from acs_pipeline.evaluation import ranking
from acs_pipeline_tests.evaluation.fixtures import labelled_scores as _data

# --------------------------------------------------------------------------- reference DeLong


def _psi(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Kernel of DeLong et al. (1988): 1 if positive > negative, 1/2 if tied, else 0 (m x n)."""
    return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])


def _structural(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and the structural components V10 (per positive) and V01 (per negative), O(m*n)."""
    psi = _psi(s[y == 1], s[y == 0])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def _slow_delong_var(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    auc, v10, v01 = _structural(y, s)
    m, n = v10.size, v01.size
    s10 = np.sum((v10 - auc) ** 2) / (m - 1)
    s01 = np.sum((v01 - auc) ** 2) / (n - 1)
    return auc, s10 / m + s01 / n


def _slow_paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    auc_a, v10a, v01a = _structural(y, a)
    auc_b, v10b, v01b = _structural(y, b)
    m, n = v10a.size, v01a.size
    s10_ab = np.sum((v10a - auc_a) * (v10b - auc_b)) / (m - 1)
    s01_ab = np.sum((v01a - auc_a) * (v01b - auc_b)) / (n - 1)
    var_a = _slow_delong_var(y, a)[1]
    var_b = _slow_delong_var(y, b)[1]
    var = var_a + var_b - 2 * (s10_ab / m + s01_ab / n)
    z = (auc_a - auc_b) / np.sqrt(var)
    return float(z), float(2 * stats.norm.sf(abs(z)))


# --------------------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_sklearn_with_ties(seed):
    y, s = _data(seed=seed)
    assert len(np.unique(s)) < len(s) / 4  # heavy ties
    assert ranking.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ranking.auroc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_constant_scores_is_half_and_perfect_is_one():
    y = np.array([0, 1, 0, 1])
    assert ranking.auroc(y, np.zeros(4)) == 0.5
    assert ranking.auroc(y, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0


@pytest.mark.parametrize("seed", [0, 3])
def test_delong_ci_matches_structural_components(seed):
    y, s = _data(n=300, seed=seed)
    auc, var = _slow_delong_var(y, s)
    got, lo, hi = ranking.delong_ci(y, s)
    half = 1.959963984540054 * np.sqrt(var)
    assert got == pytest.approx(auc, abs=1e-12)
    assert lo == pytest.approx(auc - half, abs=1e-10)
    assert hi == pytest.approx(auc + half, abs=1e-10)
    lo90, hi90 = ranking.delong_ci(y, s, alpha=0.10)[1:]
    assert hi90 - lo90 == pytest.approx(2 * 1.6448536269514722 * np.sqrt(var), abs=1e-10)


def test_delong_hanley_mcneil_ct_example():
    """Hanley & McNeil (Radiology 1982) CT ratings: published AUC 0.893, SE 0.032."""
    neg = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(neg.size, int), np.ones(pos.size, int)]
    auc, lo, hi = ranking.delong_ci(y, np.r_[neg, pos])
    assert round(auc, 3) == 0.893
    se = (hi - lo) / (2 * 1.959963984540054)
    # DeLong's SE is close to (not equal to) Hanley-McNeil's exponential approximation.
    assert se == pytest.approx(0.032, abs=0.002)
    assert se == pytest.approx(np.sqrt(_slow_delong_var(y, np.r_[neg, pos])[1]), rel=1e-10)


def test_delong_ci_clipped_to_unit_interval_and_perfect_separation():
    y = np.array([0, 0, 0, 1, 1, 1])
    auc, lo, hi = ranking.delong_ci(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert (auc, lo, hi) == (1.0, 1.0, 1.0)
    auc, lo, hi = ranking.delong_ci(y, np.array([0.1, 0.5, 0.3, 0.4, 0.8, 0.9]))
    assert 0.0 <= lo <= auc <= hi == 1.0


@pytest.mark.parametrize("seed", [0, 5])
def test_delong_paired_matches_reference(seed):
    y, s = _data(n=300, seed=seed)
    rng = np.random.default_rng(seed + 10)
    s2 = np.round(0.5 * s + rng.normal(size=s.size), 1)  # correlated second model, with ties
    z_ref, p_ref = _slow_paired(y, s, s2)
    z, p, _, _ = ranking.delong_paired(y, s, s2)
    assert z == pytest.approx(z_ref, rel=1e-9)
    assert p == pytest.approx(p_ref, rel=1e-8)
    z_swapped, p_swapped, _, _ = ranking.delong_paired(y, s2, s)
    assert z_swapped == pytest.approx(-z) and p_swapped == pytest.approx(p)
    z_d, p_d, diff, (lo, hi) = ranking.delong_paired(y, s, s2)
    assert diff == pytest.approx(ranking.auroc(y, s) - ranking.auroc(y, s2))
    assert lo < diff < hi


def test_delong_paired_identical_scores():
    y, s = _data(n=100)
    assert ranking.delong_paired(y, s, s.copy()) == (0.0, 1.0, 0.0, (0.0, 0.0))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_replicates_equal_loop_reference():
    y, s = _data(n=200, seed=4)
    reps = ranking.bootstrap_auroc_samples(y, s, n_boot=40, seed=7)
    # Same draws as the implementation (a block of 256: positives, then negatives), by sklearn.
    rng = np.random.default_rng(7)
    pos, neg = s[y == 1], s[y == 0]
    ip = rng.integers(0, pos.size, size=(256, pos.size))
    ineg = rng.integers(0, neg.size, size=(256, neg.size))
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    ref = [roc_auc_score(labels, np.r_[pos[ip[b]], neg[ineg[b]]]) for b in range(40)]
    np.testing.assert_allclose(reps, ref, atol=1e-12)


def test_bootstrap_reproducible_and_seed_dependent():
    y, s = _data(n=300, seed=1)
    a = ranking.bootstrap_auroc_ci(y, s, n_boot=500, seed=3)
    assert a == ranking.bootstrap_auroc_ci(y, s, n_boot=500, seed=3)
    assert a != ranking.bootstrap_auroc_ci(y, s, n_boot=500, seed=4)
    reps = ranking.bootstrap_auroc_samples(y, s, n_boot=600, seed=3)  # spans three blocks
    np.testing.assert_array_equal(reps[:500], ranking.bootstrap_auroc_samples(y, s, 500, seed=3))


def test_bootstrap_close_to_delong_on_large_sample():
    y, s = _data(n=6000, seed=2, decimals=3)
    _, lo, hi = ranking.delong_ci(y, s)
    blo, bhi = ranking.bootstrap_auroc_ci(y, s, n_boot=2000, seed=0)
    assert blo == pytest.approx(lo, abs=0.006)
    assert bhi == pytest.approx(hi, abs=0.006)


# --------------------------------------------------------------------------- operating points


def test_auprc_equals_sklearn_average_precision():
    y, s = _data(seed=8)
    assert ranking.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_threshold_metrics_hand_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.6, 0.4])
    r = ranking.threshold_metrics(y, s, 0.6)  # >= 0.6 positive: 0.9(1) 0.6(1) 0.7(0) 0.6(0)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 2, 2, 2)
    assert r["sens"] == 0.5 and r["spec"] == 0.5 and r["ppv"] == 0.5 and r["npv"] == 0.5
    none = ranking.threshold_metrics(y, s, 2.0)
    assert np.isnan(none["ppv"]) and none["spec"] == 1.0 and none["sens"] == 0.0


def test_youden_threshold_hand_example():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # thresholds: 0.4 -> sens 1, spec 0.75 (J .75); 0.6 -> sens .75, spec 1 (J .75): highest wins
    assert ranking.youden_threshold(y, s) == pytest.approx(0.6)
    # inverted score: no threshold beats J = 0
    assert ranking.youden_threshold(y, -s) == np.inf


def test_topk_ppv_equals_sensitivity_with_ties_and_breaks_ties_by_order():
    y = np.array([0, 1, 1, 0, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.2])  # 3 positives; 3 ECGs tied at 0.5
    r = ranking.topk_metrics(y, s)
    assert r["k"] == 3 and r["ppv"] == r["sens"]
    # stable order: 0.9 (idx 0), then the first two of the tie (idx 1, 2) -> 2 true positives
    np.testing.assert_array_equal(np.flatnonzero(r["selected"]), [0, 1, 2])
    assert r["tp"] == 2 and r["ppv"] == pytest.approx(2 / 3)
    assert r["n_tied_at_cut"] == 3
    # order-free value: 2 slots among 3 tied ECGs holding 2 positives -> 4/3 expected + 0
    assert r["ppv_tie_expected"] == pytest.approx((2 * 2 / 3) / 3)
    # reversing the order of the tied cases changes the pick but not the expected value
    perm = np.array([0, 3, 2, 1, 4, 5])
    r2 = ranking.topk_metrics(y[perm], s[perm])
    assert r2["tp"] == 1 and r2["ppv_tie_expected"] == pytest.approx(r["ppv_tie_expected"])


@pytest.mark.parametrize("seed", range(5))
def test_topk_ppv_equals_sensitivity_random(seed):
    y, s = _data(n=257, seed=seed, decimals=0)
    r = ranking.topk_metrics(y, s)
    assert r["ppv"] == r["sens"] and r["selected"].sum() == y.sum()


def test_holm_against_hand_computation():
    # sorted: .01 (x4 = .04), .02 (x3 = .06), .03 (x2 = .06), .04 (x1 = .04 -> monotone .06)
    p = [0.04, 0.01, 0.03, 0.02]
    np.testing.assert_allclose(ranking.holm(p), [0.06, 0.04, 0.06, 0.06])
    # NaN stays NaN and is not counted in the family: m = 2, so .3 -> .6 (not .9), .6 -> .6
    np.testing.assert_allclose(ranking.holm([0.6, float("nan"), 0.3]), [0.6, np.nan, 0.6])
    np.testing.assert_allclose(ranking.holm([0.6, 0.7]), [1.0, 1.0])  # 2 x .6 capped at 1
    assert ranking.holm([]).size == 0
    with pytest.raises(ranking.MetricInputError, match=r"\[0, 1\]"):
        ranking.holm([0.5, 1.2])
