"""The profiles' training plans (training.recipes): the paper recipe, the smoke profile's
budget, and that the smoke ResNet-18 learns a small planted waveform feature within that budget."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from acs_pipeline.evaluation.ranking import auroc
from acs_pipeline.models.hubert import hubert_config
from acs_pipeline.models.resnet1d import ResidualBlock1D
from acs_pipeline.models.specs import hubert_size, model_spec
from acs_pipeline.training import recipes
from acs_pipeline.training.data import STAGES, EpochBatchSampler
from acs_pipeline.training.fit import fit
from acs_pipeline.training.predict import predict

SMOKE_MODELS = ("resnet18", "resnet50", "ecg_omi", "s4", "hubert")
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


RECIPES_MD = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
CNN_S4 = ("resnet18", "resnet50", "ecg_omi", "s4")


def paper_tables() -> dict[str, dict[str, dict[str, object]]]:
    """docs/recipes.md's tables: model -> stage -> setting -> value (a Python literal)."""
    tables: dict[str, dict[str, dict[str, object]]] = {}
    model = None
    for line in RECIPES_MD.read_text().splitlines():
        if line.startswith("## "):
            model = line[3:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if model is None or len(cells) != 4 or cells[0] in ("setting", "") or \
                set(cells[0]) <= {"-"}:
            continue
        assert all(cells[3:]), f"{model} {cells[0]}: no source cited"
        for stage, value in zip(STAGES, cells[1:3], strict=True):
            assert value.startswith("`") and value.endswith("`"), (model, cells[0], value)
            tables.setdefault(model, {}).setdefault(stage, {})[cells[0]] = ast.literal_eval(
                value.strip("`"))
    return tables


def planned(model: str, stage: str, setting: str) -> object:
    """The value of a docs/recipes.md setting row in the paper plan of ``model``'s ``stage``."""
    kind, name = setting.split(".", 1)
    p = recipes.plan(model, stage, "paper")
    if kind == "config":
        return getattr(p.config, name)
    if kind == "plan":
        return getattr(p, name)
    assert kind == "model", setting
    return getattr(hubert_config(hubert_size(model, "paper")), name)


def test_docs_table_every_paper_model_and_stage():
    tables = paper_tables()
    assert set(tables) == {*CNN_S4, "hubert"}
    for model, stages in tables.items():
        for stage, rows in stages.items():
            assert len(rows) >= 13, (model, stage)
            got = {k: planned(model, stage, k) for k in rows}
            assert got == rows, (model, stage)


def test_the_graph_trains_the_tabled_models_hubert_large_in_the_paper_profile():
    from acs_pipeline.defs.models.assets import MODELS

    assert set(MODELS) == set(paper_tables())
    assert hubert_size("hubert", "paper") == "large"
    net = recipes.trainable_model("hubert", "paper").model
    assert net.hubert_ecg.config.hidden_size == hubert_config("large").hidden_size
    assert len(net.hubert_ecg.encoder.layers) == 16
    for stage in STAGES:
        a, b = (recipes.plan(m, stage, "paper", logger="none") for m in ("hubert", "hubert_large"))
        assert dataclasses.replace(a, model="hubert_large") == b


def test_paper_hubert_sizes_differ_from_the_tabled_large_only_in_size():
    large = paper_tables()["hubert"]
    for model, blocks in (("hubert_small", 8), ("hubert_base", 12), ("hubert_large", 16)):
        for stage, rows in large.items():
            got = {k: planned(model, stage, k) for k in rows if not k.startswith("model.")}
            want = {k: v for k, v in rows.items() if not k.startswith("model.")}
            assert got == {**want, "config.unfrozen_blocks": blocks}


def test_paper_plan_details_and_errors():
    for model in CNN_S4:
        for stage in STAGES:
            p = recipes.plan(model, stage, "paper")
            assert p.config.limit_train_batches is None and p.max_train is None
            assert p.config.lr == model_spec(model).lr
    assert recipes.plan("hubert_large", "acs", "paper").config.batch_size == 64
    # the smoke profile keeps its own plateau patience (its data versions must not move)
    assert recipes.plan("resnet18", "acs", "smoke").config.plateau_patience == 5
    assert recipes.plan("hubert_small", "mace", "smoke").train
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        recipes.plan("resnet18", "acs", "fast")
    with pytest.raises(ValueError, match="unknown stage 'pre'"):
        recipes.plan("resnet18", "pre", "paper")


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


def test_paper_hubert_recipe_trains_step_based_with_frozen_encoder(tmp_path, single_thread_torch):
    # the paper recipe's mechanics on the smoke-sized network: steps, not epochs; validation
    # every val_check_interval steps across epochs; a linear schedule ending at 0; frozen
    # conv encoder; class-weighted loss
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (40, 12, 5000)).astype(np.float32)
    y = (np.arange(40) % 4 == 0).astype(np.float32)
    p = recipes.plan("hubert_small", "acs", "paper", accelerator="cpu", logger="none")
    cfg = dataclasses.replace(p.config, batch_size=8, max_steps=12, val_check_interval=5,
                              unfrozen_blocks=1)
    torch.manual_seed(0)
    net = recipes.trainable_model("hubert_small", "smoke")
    conv = {k: v.clone() for k, v in net.model.hubert_ecg.feature_extractor.state_dict().items()}
    res = fit(net, (x[:32], y[:32]), (x[32:], y[32:]), tmp_path, cfg)
    assert res.global_step == 12  # 4 steps an epoch: validation crosses epoch ends
    assert [r["step"] for r in res.history] == [5, 10]
    assert res.history[0]["epoch"] == 1 and res.history[1]["epoch"] == 2
    for k, v in net.model.hubert_ecg.feature_extractor.state_dict().items():
        assert torch.equal(v, conv[k]), k
