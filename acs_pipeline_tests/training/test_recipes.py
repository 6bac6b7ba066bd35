"""The profiles' training plans (training.recipes): the paper recipe, the smoke profile's
budget, and that the smoke ResNet-18 learns a small planted waveform feature within that budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from acs_pipeline.evaluation.ranking import auroc
from acs_pipeline.models.resnet1d import ResidualBlock1D
from acs_pipeline.models.specs import model_spec
from acs_pipeline.training import recipes
from acs_pipeline.training.data import STAGES, EpochBatchSampler
from acs_pipeline.training.fit import fit
from acs_pipeline.training.predict import predict

SMOKE_MODELS = ("resnet18", "resnet50", "ecg_omi", "s4", "hubert_small")
DEMO_TESTED_TRAIN = 341  # tested-cohort training ECGs of the demo cohort (make demo)
TINY_TESTED_TRAIN = 87  # ... of the tests' tiny cohort (conftest.tiny_cohort)


def steps(p: recipes.StagePlan, n_train: int) -> int:
    """Optimizer steps a plan takes on ``n_train`` training rows (as ``fit`` runs it)."""
    cfg = p.config
    n = min(n_train, p.max_train or n_train)
    per_epoch = len(EpochBatchSampler(n, cfg.batch_size, True, min_last_batch=2))
    if cfg.limit_train_batches is not None:
        per_epoch = min(per_epoch, int(cfg.limit_train_batches))
    return cfg.max_epochs * per_epoch


def test_paper_plan_is_the_benchmark_recipe():
    for model in SMOKE_MODELS:
        spec = model_spec(model)
        for stage in STAGES:
            p = recipes.plan(model, stage, "paper")
            assert (p.config.max_epochs, p.config.batch_size, p.config.lr) == (
                50,
                spec.batch_size,
                spec.lr,
            )
            assert p.config.limit_train_batches is None and p.max_train is None
    assert recipes.plan("hubert_small", "acs", "paper").config.optimizer == "adamw"
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        recipes.plan("resnet18", "acs", "fast")


def test_smoke_resnet18_gets_about_a_hundred_acs_steps_on_the_demo_and_fewer_on_less_data():
    p = recipes.plan("resnet18", "acs", "smoke")
    assert 100 <= steps(p, DEMO_TESTED_TRAIN) <= 200
    assert steps(p, TINY_TESTED_TRAIN) == p.config.max_epochs * 3  # scales with the data
    assert steps(p, 100_000) == p.config.max_epochs * p.config.limit_train_batches  # capped


@pytest.mark.parametrize("model", SMOKE_MODELS)
def test_smoke_mace_stage_is_a_short_warm_up_with_few_validation_batches(model):
    mace, acs = recipes.plan(model, "mace", "smoke"), recipes.plan(model, "acs", "smoke")
    assert steps(mace, 10_000) <= 16 <= steps(acs, DEMO_TESTED_TRAIN)
    assert mace.config.limit_val_batches == 4 and acs.config.limit_val_batches is None
    assert mace.config.lr == acs.config.lr


def test_smoke_ecg_omi_trains_at_its_paper_lr():
    # At 1e-3 and above Adam kills most ReLU units of ECG-OMI's head (a Linear over 4,800
    # non-negative flattened features) within a few steps and it predicts a constant.
    assert recipes.plan("ecg_omi", "acs", "smoke").config.lr <= model_spec("ecg_omi").lr


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_smoke_resnets_start_with_identity_blocks_and_no_dropout(model):
    torch.manual_seed(0)
    smoke, paper = recipes.trainable_model(model, "smoke"), recipes.trainable_model(model, "paper")
    identity = [
        b for b in smoke.modules() if isinstance(b, ResidualBlock1D) and len(b.shortcut) == 0
    ]
    assert len(identity) >= 12
    x = torch.randn(2, identity[0].conv1.in_channels, 64)
    assert torch.equal(identity[0].eval()(x), F.relu(x))
    assert all(m.p == 0 for m in smoke.modules() if isinstance(m, nn.Dropout))
    assert all(m.p == 0.5 for m in paper.modules() if isinstance(m, nn.Dropout))
    assert all(
        bool((m.weight.detach() == 1).all())
        for m in paper.modules()
        if isinstance(m, nn.BatchNorm1d)
    )


def planted_notch(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 5000) spike-and-wave 'beats' at a random rate and phase in noise; positives carry
    a 6-ms terminal notch of 15 % of the spike height after every spike (the kind of feature the
    synthetic cohort's ischaemia adds)."""
    t = np.arange(5000, dtype=np.float32)
    x = rng.normal(0.0, 0.05, (n, 3, 5000)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    for i in range(n):
        rr = int(rng.integers(350, 500))
        r = np.arange(int(rng.integers(0, rr)), 5000, rr, dtype=np.float32)[:, None]
        beat = (
            np.exp(-0.5 * ((t - r) / 6) ** 2)
            - 0.3 * np.exp(-0.5 * ((t - r - 150) / 40) ** 2)
            + 0.15 * y[i] * np.exp(-0.5 * ((t - r - 22) / 3) ** 2)
        ).sum(0)
        x[i] += rng.uniform(0.5, 1.5, (3, 1)).astype(np.float32) * beat
    return x, y


def test_smoke_resnet18_learns_a_planted_notch(tmp_path, single_thread_torch):
    # The smoke profile before this plan (dropout 0.5, lr 3e-3, 24 steps) stays near 0.5 here.
    rng = np.random.default_rng(0)
    train, val = planted_notch(192, rng), planted_notch(96, rng)
    p = recipes.plan("resnet18", "acs", "smoke", accelerator="cpu", logger="none")
    torch.manual_seed(0)
    net = recipes.trainable_model("resnet18", "smoke")
    res = fit(net, train, val, tmp_path, p.config)
    assert res.global_step == steps(p, 192)
    assert auroc(val[1], predict(net, val[0])) >= 0.9
