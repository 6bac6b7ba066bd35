"""The callbacks ``fit`` adds: the epoch history (kept in the checkpoint) and the logged config."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.module import ECGClassifier


class EpochHistory(Callback):
    """One row per validation (epoch, step, train_loss, val_loss, val_auroc, lr) and the
    training throughput, kept in the checkpoint so that a resumed run continues the history and
    the parent of spawned DDP workers can read it back from rank 0's ``last.ckpt``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.train_s = 0.0
        self.train_samples = 0
        self._t: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        now = time.perf_counter()
        if self._t is not None:
            self.train_s += now - self._t
        self._t = now
        self.train_samples += int(batch[0].shape[0]) * trainer.world_size

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        assert isinstance(pl_module, ECGClassifier)
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": pl_module.train_epoch_loss,
            "val_loss": pl_module.last_val[0],
            "val_auroc": pl_module.last_val[1],
            "lr": pl_module.epoch_lr,
        }
        # keyed by step: step-based validation (HuBERT-ECG) may validate twice in an epoch
        self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        # the timing covers this process's run only; it is saved for the parent of spawned DDP
        # workers to read back, and is not restored on resume
        return {
            "rows": [dict(r) for r in self.rows],
            "train_s": self.train_s,
            "train_samples": self.train_samples,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


class LogConfig(Callback):
    """Records the training config as the experiment logger's hyperparameters (rank 0)."""

    def __init__(self, config: TrainConfig) -> None:
        self.params = {k: v for k, v in config.to_dict().items() if k != "tracking_uri"}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for lg in trainer.loggers:
            lg.log_hyperparams(self.params)
