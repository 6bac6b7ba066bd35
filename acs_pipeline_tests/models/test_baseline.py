import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS
from acs_pipeline.models.baseline import BaselineError, fit_logistic

TRUE_COEFS = np.array([1.0, 0.8, -0.5, 0.3])
TRUE_INTERCEPT = -1.5


def simulate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, 4)) < [0.3, 0.1, 0.2, 0.4]).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-(TRUE_INTERCEPT + X @ TRUE_COEFS)))
    return X, (rng.random(n) < p).astype(int)


def newton_mle(X: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Independent maximum-likelihood fit by Newton-Raphson: [intercept, coefs...]."""
    A = np.column_stack([np.ones(len(X)), X])
    beta = np.zeros(A.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-A @ beta))
        hessian = A.T @ (A * (p * (1 - p))[:, None])
        beta += np.linalg.solve(hessian, A.T @ (y - p))
    return beta


def test_recovers_known_logistic_relation():
    X, y = simulate(40_000)
    fit = fit_logistic(X, y)
    coefs = fit.coefficients
    assert list(coefs) == [*CLASSICAL_FLAGS, "intercept"]
    assert coefs["intercept"] == pytest.approx(TRUE_INTERCEPT, abs=0.1)
    for name, true in zip(CLASSICAL_FLAGS, TRUE_COEFS, strict=True):
        assert coefs[name] == pytest.approx(true, abs=0.12)


def test_is_the_unpenalised_mle_and_matches_sklearn():
    X, y = simulate(3_000, seed=1)
    fit = fit_logistic(X, y)
    mle = newton_mle(X, y)
    got = np.array([fit.coefficients["intercept"], *(fit.coefficients[n] for n in CLASSICAL_FLAGS)])
    np.testing.assert_allclose(got, mle, atol=1e-3)
    reference = LogisticRegression(C=np.inf, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(fit.predict_proba(X), reference.predict_proba(X)[:, 1], atol=1e-8)


def test_deterministic_and_shapes():
    X, y = simulate(2_000, seed=2)
    a, b = fit_logistic(X, y), fit_logistic(X.copy(), y.copy())
    assert a.coefficients == b.coefficients
    proba = a.predict_proba(X[:7])
    assert proba.shape == (7,) and ((proba > 0) & (proba < 1)).all()


def test_rejects_bad_inputs():
    X, y = simulate(200, seed=3)
    X_nan = X.copy()
    X_nan[5, 1] = np.nan
    with pytest.raises(BaselineError, match="has_st_eleva: 1 missing.*row 5"):
        fit_logistic(X_nan, y)
    with pytest.raises(BaselineError, match=r"shape \(N, 4\)"):
        fit_logistic(X[:, :3], y)
    with pytest.raises(BaselineError, match="200 rows of flags but 199 labels"):
        fit_logistic(X, y[:-1])
    with pytest.raises(BaselineError, match="single class"):
        fit_logistic(X, np.zeros(200))
    with pytest.raises(BaselineError, match="labels: expected 0/1"):
        fit_logistic(X, np.where(y == 1, 2, 0))
    with pytest.raises(BaselineError, match="has_depress"):
        fit_logistic(X, y).predict_proba(np.full((2, 4), np.nan))

