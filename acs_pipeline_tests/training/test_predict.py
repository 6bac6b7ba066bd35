"""Tests for acs_pipeline.training.predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acs_pipeline.training.predict import (
    DEFAULT_PREDICT_MEMORY_MB,
    MAX_PREDICT_BATCH,
    MEMORY_MARGIN,
    PREDICT_MB_PER_ECG,
    predict,
    predict_batch_size,
    predict_model,
)
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


def test_batch_size_follows_the_memory_budget() -> None:
    for model, raw in PREDICT_MB_PER_ECG.items():
        assert raw > 0
        mb = raw * MEMORY_MARGIN
        b = predict_batch_size(model, 2048)
        assert 1 <= b <= MAX_PREDICT_BATCH
        assert b == MAX_PREDICT_BATCH or (b * mb <= 2048 < (b + 1) * mb) or b == 1
    s4 = PREDICT_MB_PER_ECG["s4"] * MEMORY_MARGIN
    assert predict_batch_size("s4", 20 * s4 + 1) == 20
    assert predict_batch_size("s4", s4 / 2) == 1  # never below one ECG
    assert predict_batch_size("resnet18", 1e9) == MAX_PREDICT_BATCH
    assert predict_batch_size("resnet18", 1e9, cap=7) == 7
    # the released S4 step that the OOM killer stopped at 20 GB: 256 ECGs a batch; the default
    # budget keeps a batch's activations within 2 GB on any model
    assert predict_batch_size("s4") * s4 <= DEFAULT_PREDICT_MEMORY_MB < 256 * s4
    with pytest.raises(ValueError, match="positive"):
        predict_batch_size("s4", 0)
    with pytest.raises(ValueError, match="no prediction memory figure"):
        predict_batch_size("unknown", 100)


def test_predict_model_runs_batches_of_the_budget(monkeypatch) -> None:
    monkeypatch.setitem(PREDICT_MB_PER_ECG, "resnet18", 10.0 / MEMORY_MARGIN)
    seen: list[int] = []
    torch.manual_seed(0)
    net = TinyNet()
    net.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    x, _ = make_data(23, 4)
    p = predict_model("resnet18", net, x, budget_mb=45)
    assert seen == [4] * 5 + [3]
    np.testing.assert_allclose(p, predict(net, x, batch_size=256), rtol=1e-6)
