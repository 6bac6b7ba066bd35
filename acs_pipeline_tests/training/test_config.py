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
