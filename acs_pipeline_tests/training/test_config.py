"""Tests for acs_pipeline.training.config."""

from __future__ import annotations

import json

import pytest
import torch

from acs_pipeline.training.config import TrainConfig


def test_config_defaults_are_the_recipe_and_validate() -> None:
    c = TrainConfig()
    assert (c.max_epochs, c.batch_size, c.lr, c.betas, c.optimizer) == (
        50,
        64,
        1e-4,
        (0.9, 0.999),
        "adam",
    )
    d = c.to_dict()
    assert d["betas"] == [0.9, 0.999] and json.loads(json.dumps(d)) == d
    assert TrainConfig(**d) == c
    expected = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    assert c.resolved_precision == expected
    assert TrainConfig(precision="16-mixed").resolved_precision == "16-mixed"
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="logger"):
        TrainConfig(logger="wandb")


def test_step_based_schedule_settings_validate() -> None:
    c = TrainConfig(max_epochs=-1, max_steps=7000, schedule="linear", val_check_interval=50)
    assert TrainConfig(**c.to_dict()) == c
    assert TrainConfig().plateau_patience == 10  # torch's ReduceLROnPlateau default
    with pytest.raises(ValueError, match="max_epochs"):
        TrainConfig(max_epochs=-1)
    with pytest.raises(ValueError, match="needs max_steps"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="warmup_frac"):
        TrainConfig(warmup_frac=1.5)
    with pytest.raises(ValueError, match="val_check_interval"):
        TrainConfig(val_check_interval=0)
    with pytest.raises(ValueError, match="unfrozen_blocks"):
        TrainConfig(unfrozen_blocks=-1)
