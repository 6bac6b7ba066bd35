"""Tests for acs_pipeline.training.module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.data import TrainingDataError
from acs_pipeline.training.module import ECGClassifier, positive_weight
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


def test_class_weighted_bce_weighs_positives_by_negatives_over_positives() -> None:
    y = np.array([1, 0, 0, 0], dtype=np.float32)
    assert positive_weight(y) == 3.0
    with pytest.raises(TrainingDataError, match="both classes"):
        positive_weight(np.zeros(4))
    x = torch.zeros(4, 2, 8)
    plain = ECGClassifier(ZeroNet())
    weighted = ECGClassifier.from_config(ZeroNet(), TrainConfig(pos_weight=True), train_y=y)
    lp, _ = plain.loss((x, torch.from_numpy(y)))
    lw, _ = weighted.loss((x, torch.from_numpy(y)))
    # logit 0: each sample's BCE is log 2; the positive counts 3 times
    assert lp.item() == pytest.approx(np.log(2))
    assert lw.item() == pytest.approx(np.log(2) * (3 + 3) / 4)
    with pytest.raises(ValueError, match="train_y"):
        ECGClassifier.from_config(ZeroNet(), TrainConfig(pos_weight=True))


def test_linear_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = TrainConfig(optimizer="adamw", betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01,
                      lr=1e-3, schedule="linear", max_steps=100, max_epochs=-1)
    clf = ECGClassifier.from_config(TinyNet(), cfg)
    conf = clf.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.98), 1e-9, 0.01)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[8] == pytest.approx(1e-3)  # ceil(0.08 * 100) warm-up steps
    assert lrs[4] == pytest.approx(0.5e-3) and lrs[54] == pytest.approx(0.5e-3)
    assert opt.param_groups[0]["lr"] == 0.0


def test_plateau_schedule_uses_torch_defaults_and_frozen_parameters_are_left_out() -> None:
    clf = ECGClassifier(TinyNet())
    clf.configure_optimizers()
    assert (clf.plateau.patience, clf.plateau.factor, clf.plateau.mode) == (10, 0.1, "min")
    net = TinyNet()
    first = next(net.parameters())
    first.requires_grad_(False)
    opt = ECGClassifier(net).configure_optimizers()
    assert all(p is not first for g in opt.param_groups for p in g["params"])
    with pytest.raises(ValueError, match="no transformer blocks"):
        ECGClassifier(TinyNet(), unfrozen_blocks=2)


class ZeroNet(nn.Module):
    """Logit 0 for every sample, with one parameter to optimise."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(1, 2)) * self.w
