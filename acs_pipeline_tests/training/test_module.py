"""Tests for acs_pipeline.training.module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from acs_pipeline.training.data import TrainingDataError
from acs_pipeline.training.module import ECGClassifier
from acs_pipeline_tests.tiny_training import TinyNet, make_data


def test_one_step_lowers_loss_on_fixed_batch() -> None:
    torch.manual_seed(0)
    x, y = make_data(32, 5)
    batch = (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    clf = ECGClassifier(TinyNet(), lr=1e-2)
    opt = clf.configure_optimizers()
    before, _ = clf.loss(batch)
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = clf.loss(batch)
    assert after.item() < before.item() - 1e-4
    with pytest.raises(TrainingDataError, match=r"shape \(32, 2\)"):
        ECGClassifier(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))(batch[0])
