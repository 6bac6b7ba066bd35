"""The classical-ECG baseline: unpenalised logistic regression on the four machine-read flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS


class BaselineError(ValueError):
    """Inputs the baseline cannot use (NaN flags, wrong shapes, a single class)."""


def _check_finite(values: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise BaselineError(
            f"{name}: {int(bad.sum())} missing or non-finite values (first at row "
            f"{int(np.argmax(bad.reshape(len(values), -1).any(axis=1)))}); flags must be 0/1"
        )


def _check_binary(values: np.ndarray, name: str) -> None:
    odd = ~np.isin(values, (0, 1))
    if odd.any():
        raise BaselineError(f"{name}: expected 0/1 values, found {sorted(set(values[odd]))[:5]}")


def _as_matrix(X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise BaselineError(
            f"expected flags of shape (N, {len(feature_names)}) for columns "
            f"{list(feature_names)}, got {X.shape}"
        )
    for j, name in enumerate(feature_names):
        _check_finite(X[:, j], name)
    return X


@dataclass(frozen=True)
class LogisticBaseline:
    """A fitted unpenalised logistic regression on named binary features."""

    model: LogisticRegression
    feature_names: tuple[str, ...]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1) for each row of ``X`` (N, n_features), shape (N,)."""
        return self.model.predict_proba(_as_matrix(X, self.feature_names))[:, 1]

    @property
    def coefficients(self) -> dict[str, float]:
        """Log-odds coefficient per feature, plus ``intercept``."""
        coefs = dict(zip(self.feature_names, map(float, self.model.coef_[0]), strict=True))
        coefs["intercept"] = float(self.model.intercept_[0])
        return coefs


def fit_logistic(
    X_flags: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str] = CLASSICAL_FLAGS,
    *,
    max_iter: int = 1000,
) -> LogisticBaseline:
    """Fit P(y=1) = sigmoid(b0 + sum b_j x_j) by maximum likelihood (no penalty; lbfgs, which
    is deterministic). ``C=inf`` is scikit-learn 1.8+'s spelling of ``penalty=None``. Perfectly
    separated data has no finite optimum: the coefficients then grow until ``max_iter``."""
    X = _as_matrix(X_flags, feature_names)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(X):
        raise BaselineError(f"{len(X)} rows of flags but {len(y)} labels")
    _check_finite(y, "labels")
    _check_binary(y, "labels")
    if len(np.unique(y)) < 2:
        raise BaselineError(f"labels hold a single class ({int(y[0])}); need both 0 and 1")
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=max_iter)
    model.fit(X, y.astype(int))
    return LogisticBaseline(model=model, feature_names=tuple(feature_names))

