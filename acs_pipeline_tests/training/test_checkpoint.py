"""Tests for acs_pipeline.training.checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acs_pipeline.training.checkpoint import AtomicCheckpointIO, WeightsError, load_weights


def test_atomic_checkpoint_io_keeps_old_file_on_failure(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"model.w": torch.ones(2)}}, path)
    assert torch.equal(load_weights(path)["w"], torch.ones(2))
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails part-way)
        io.save_checkpoint({"state_dict": {"model.w": torch.zeros(2)}, "f": lambda: 0}, path)
    assert torch.equal(load_weights(path)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    torch.save({"state_dict": {"other.w": torch.ones(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(WeightsError, match="prefix"):
        load_weights(tmp_path / "x.ckpt")
