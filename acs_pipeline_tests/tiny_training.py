"""A tiny conv net and planted-signal data for the training tests (CPU, seconds).

A module of its own so that spawned DDP workers and the kill-and-resume child process import
the same definitions by name.
"""

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, channels: int = 3, width: int = 8, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv1d(channels, width, 9, padding=4)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean(-1)
        return self.fc(self.drop(h))[:, 0]


def make_data(n: int, seed: int, flip: bool = False, length: int = 500
              ) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 3, length) float16, y (n,)): half positives, a bump planted in channel 0 of the
    positives (of the negatives with ``flip``)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.float32)
    y[rng.permutation(n)[: n // 2]] = 1
    x = rng.normal(size=(n, 3, length)).astype(np.float32)
    planted = (1 - y) if flip else y
    at = 2 * length // 5
    x[planted == 1, 0, at:at + 60] += 1.5
    return x.astype(np.float16), y


class Interrupt(Exception):
    pass


class RaiseAfter(Callback):
    """Interrupts training once epoch ``k`` has been validated and checkpointed."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.k + 1:
            raise Interrupt(f"interrupted after epoch {self.k}")
