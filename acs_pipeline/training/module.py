"""The benchmark's recipe as a LightningModule: BCE-with-logits on one logit, Adam or AdamW,
``ReduceLROnPlateau`` on the validation loss, exact validation AUROC."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from acs_pipeline.training.config import OPTIMIZERS
from acs_pipeline.training.data import TrainingDataError


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` as float32 logits of shape (B,); (B, 1) is accepted and squeezed.

    ``x`` is cast to float32 first, so float16 batches are converted where they are (the GPU).
    """
    logits = model(x.float())
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.shape != (x.shape[0],):
        raise TrainingDataError(
            f"{type(model).__name__} returned logits of shape {tuple(logits.shape)}, "
            f"expected ({x.shape[0]},)"
        )
    return logits.float()


class ECGClassifier(L.LightningModule):
    """Wraps a model mapping (B, C, L) to logits (B,): BCE-with-logits, Adam + plateau schedule.

    Logs ``train_loss`` (per step, this process), ``train_loss_epoch``, ``val_loss`` and
    ``val_auroc`` (exact AUROC); the epoch values are torchmetrics states synchronised across
    processes, so under DDP they cover every process's samples. The ``ReduceLROnPlateau`` step
    on the val loss is taken here at the end of validation, before the epoch's checkpoints are
    written, and its state is kept in the checkpoint: Lightning's own plateau stepping comes
    after the checkpoint and is skipped on resume, so a resumed run would lose one step.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        plateau_patience: int = 5,
        plateau_factor: float = 0.1,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.model = model
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.optimizer_name = optimizer
        self.plateau_patience, self.plateau_factor = plateau_patience, plateau_factor
        self.criterion = nn.BCEWithLogitsLoss()
        self.val_auroc = BinaryAUROC()
        self.val_loss = MeanMetric()
        self.train_loss = MeanMetric()
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None
        self.train_epoch_loss = float("nan")
        self.epoch_lr = float("nan")
        self.last_val: tuple[float, float] = (float("nan"), float("nan"))

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.model, x)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean BCE-with-logits of a batch, and its logits."""
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y.float()), logits

    def on_train_epoch_start(self) -> None:
        self.train_loss.reset()
        self.train_epoch_loss = float("nan")
        opts = self.trainer.optimizers
        self.epoch_lr = float(opts[0].param_groups[0]["lr"]) if opts else float("nan")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.loss(batch)
        b = batch[0].shape[0]
        self.train_loss.update(loss.detach(), weight=b)
        self.log("train_loss", loss, on_step=True, on_epoch=False, batch_size=b)
        return loss

    def _log_global(self, name: str, value: Tensor) -> None:
        # the value is already the same on every process (a synced torchmetrics compute): the
        # "max" reduction keeps it exact and tells Lightning that it is synchronised
        self.log(name, value, sync_dist=True, reduce_fx="max")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits = self.loss(batch)
        self.val_auroc.update(torch.sigmoid(logits), batch[1].int())
        self.val_loss.update(loss.detach(), weight=batch[0].shape[0])

    def on_validation_epoch_end(self) -> None:
        loss, auroc = self.val_loss.compute(), self.val_auroc.compute()
        self.val_loss.reset()
        self.val_auroc.reset()
        self._log_global("val_loss", loss)
        self._log_global("val_auroc", auroc)
        self.last_val = (float(loss), float(auroc))
        if self.train_loss.update_called and not self.trainer.sanity_checking:
            # sample-weighted mean training loss of the epoch over all processes
            train = self.train_loss.compute()
            self.train_epoch_loss = float(train)
            self._log_global("train_loss_epoch", train)
        if self.plateau is not None and not self.trainer.sanity_checking:
            self.plateau.step(float(loss))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.AdamW
        opt = cls(self.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
        )
        if self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)
        return opt

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["acs_pipeline"] = {
            "model_class": type(self.model).__name__,
            "n_params": n_params(self.model),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._plateau_state = checkpoint.get("acs_pipeline", {}).get("plateau")
