"""Tests for acs_pipeline.training.predict."""

from __future__ import annotations

import numpy as np
import torch

from acs_pipeline.training.predict import predict
from acs_pipeline_tests.tiny_training import TinyNet, make_data


def test_predict_probabilities_in_order_and_eval_mode() -> None:
    torch.manual_seed(0)
    model = TinyNet(dropout=0.5).train()
    x, _ = make_data(37, 2)
    p = predict(model, x, batch_size=8)
    assert p.shape == (37,) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1)) and p.std() > 0
    assert np.array_equal(predict(model, x, batch_size=8), p)  # dropout off
    assert model.training  # mode restored
    perm = np.random.default_rng(0).permutation(37)
    np.testing.assert_allclose(predict(model, x[perm], batch_size=5), p[perm], rtol=1e-6)
    doubled = predict(model, x, transform=lambda xb: xb * 0)
    assert np.allclose(doubled, doubled[0])
