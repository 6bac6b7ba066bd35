"""Tests for evaluation.calibration: recalibration fits, net benefit, cumulative risk."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from acs_pipeline.evaluation import calibration as C
from acs_pipeline.evaluation.checks import MetricInputError


def test_calibration_of_calibrated_data():
    rng = np.random.default_rng(0)
    p = special.expit(rng.normal(-0.5, 1.2, size=40_000))
    y = (rng.uniform(size=p.size) < p).astype(int)
    c = C.calibration(y, p)
    assert c["slope"] == pytest.approx(1.0, abs=0.05)
    assert c["intercept"] == pytest.approx(0.0, abs=0.05)
    assert c["citl"] == pytest.approx(0.0, abs=0.05)
    assert c["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert c["bin_count"].sum() == p.size and len(c["bin_count"]) == 10
    np.testing.assert_allclose(c["bin_observed"], c["bin_mean_predicted"], atol=0.03)


def test_calibration_detects_overconfidence():
    rng = np.random.default_rng(1)
    true = rng.normal(-0.5, 1.0, size=40_000)
    y = (rng.uniform(size=true.size) < special.expit(true)).astype(int)
    c = C.calibration(y, special.expit(2.0 * true + 0.4), strategy="uniform")
    assert c["slope"] == pytest.approx(0.5, abs=0.04)
    assert c["intercept"] == pytest.approx(-0.2, abs=0.05)


def test_net_benefit_hand_computed():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.2])
    nb = C.net_benefit(y, p, [0.25, 0.5])
    # t=.25: positives 0.9, 0.3, 0.6 -> tp 2, fp 1: 2/5 - 1/5 * 1/3
    # t=.5: 0.9, 0.6 -> tp 1, fp 1: 1/5 - 1/5
    np.testing.assert_allclose(nb, [2 / 5 - 1 / 15, 0.0])
    np.testing.assert_allclose(C.net_benefit_treat_all(y, [0.25]), [0.4 - 0.6 / 3])
    with pytest.raises(MetricInputError, match="inside"):
        C.net_benefit(y, p, [0.0, 0.5])


def test_cumulative_risk():
    r = C.cumulative_risk([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.5])
    np.testing.assert_allclose(r["share_events"], [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(r["observed_rate"], [1.0, 0.5, 1 / 3, 0.5])


def test_brier_skill_against_sklearn():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, size=500)
    y = (rng.uniform(size=p.size) < p).astype(int)
    c = C.calibration(y, p)
    reference = brier_score_loss(y, np.full(y.size, y.mean()))
    assert c["brier_reference"] == pytest.approx(reference)
    assert c["brier_skill"] == pytest.approx(1 - brier_score_loss(y, p) / reference)
    assert c["brier_skill"] > 0  # p is the true risk: better than the prevalence
    flat = C.calibration(y, np.full(y.size, y.mean()))
    assert flat["brier_skill"] == pytest.approx(0.0, abs=1e-12)
    assert C.calibration(y, 1 - p)["brier_skill"] < 0  # inverted: worse than the prevalence
