"""The checkpoints ``fit`` writes (``best.ckpt``, ``last.ckpt``): atomic saves, weights back."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO
from torch import Tensor

from acs_pipeline.io.storage import Storage

BEST = "best.ckpt"
LAST = "last.ckpt"
MODEL_PREFIX = "model."  # ECGClassifier keeps the network as ``self.model``


class WeightsError(RuntimeError):
    """A checkpoint or state dict does not hold weights that fit the model."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves local checkpoints to a temp file in the same folder, fsyncs, then renames.

    Lightning's own save goes through an fsspec transaction whose temp file lives in the system
    temp dir; when that is another filesystem the final move is a copy, not atomic.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        with Storage(str(path.parent)).open_write(path.name) as f:
            torch.save(checkpoint, f)


def clear_temps(out_dir: Path) -> None:
    """Remove the temp files of checkpoint saves that a killed process left behind."""
    for p in out_dir.glob(".*.ckpt.*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def load_weights(path: Path | str, prefix: str = MODEL_PREFIX) -> dict[str, Tensor]:
    """The wrapped model's state dict from one of our checkpoints (loaded with weights_only)."""
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: no state_dict of tensors in this checkpoint")
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise WeightsError(f"{path}: no parameters under the prefix {prefix!r}")
    return out
