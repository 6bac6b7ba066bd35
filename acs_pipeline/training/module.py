"""The benchmark's recipe as a LightningModule: BCE-with-logits on one logit (optionally
class-weighted), Adam or AdamW, ``ReduceLROnPlateau`` on the validation loss or a linear
warm-up/decay schedule, exact validation AUROC."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from acs_pipeline.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
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


def positive_weight(y: np.ndarray) -> float:
    """BCE's ``pos_weight`` for labels ``y``: negatives / positives (the authors'
    ``--use_loss_weights``), so both classes weigh the same in the loss."""
    y = np.asarray(y)
    pos = int((y == 1).sum())
    if pos == 0 or pos == len(y):
        raise TrainingDataError(f"class weights need both classes; got {pos} of {len(y)} positive")
    return (len(y) - pos) / pos


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
        plateau_patience: int = 10,
        plateau_factor: float = 0.1,
        *,
        eps: float = 1e-8,
        schedule: str = "plateau",
        warmup_frac: float = 0.08,
        max_steps: int = -1,
        pos_weight: float | None = None,
        unfrozen_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if schedule == "linear" and max_steps < 1:
            raise ValueError("schedule='linear' needs max_steps (its decay ends there)")
        if unfrozen_blocks is not None:
            freeze = getattr(model, "freeze_for_finetuning", None)
            if freeze is None:
                raise ValueError(f"{type(model).__name__} has no transformer blocks to freeze "
                                 f"(unfrozen_blocks={unfrozen_blocks})")
            freeze(unfrozen_blocks)
        self.model = model
        self.lr, self.betas, self.weight_decay, self.eps = lr, tuple(betas), weight_decay, eps
        self.optimizer_name = optimizer
        self.plateau_patience, self.plateau_factor = plateau_patience, plateau_factor
        self.schedule, self.warmup_frac, self.max_steps = schedule, warmup_frac, max_steps
        self.pos_weight = pos_weight
        weight = None if pos_weight is None else torch.tensor(float(pos_weight))
        self.criterion = nn.BCEWithLogitsLoss(pos_weight=weight)
        self.val_auroc = BinaryAUROC()
        self.val_loss = MeanMetric()
        self.train_loss = MeanMetric()
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None
        self.train_epoch_loss = float("nan")
        self.epoch_lr = float("nan")
        self.last_val: tuple[float, float] = (float("nan"), float("nan"))

    @classmethod
    def from_config(cls, model: nn.Module, config: TrainConfig,
                    train_y: np.ndarray | None = None) -> ECGClassifier:
        """The module ``config`` describes; ``train_y`` gives the class weight when
        ``config.pos_weight``."""
        if config.pos_weight and train_y is None:
            raise ValueError("config.pos_weight needs the training labels (train_y)")
        return cls(model, config.lr, config.betas, config.weight_decay, config.optimizer,
                   config.plateau_patience, config.plateau_factor, eps=config.eps,
                   schedule=config.schedule, warmup_frac=config.warmup_frac,
                   max_steps=config.max_steps,
                   pos_weight=positive_weight(train_y) if config.pos_weight else None,
                   unfrozen_blocks=config.unfrozen_blocks)

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

    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters, and its schedule: the plateau one is
        stepped here at validation end; the linear one by Lightning every optimizer step
        (``transformers.get_linear_schedule_with_warmup``, warm-up ``ceil(warmup_frac *
        max_steps)`` steps, as ``finetune.py``)."""
        cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.AdamW
        params = [p for p in self.parameters() if p.requires_grad]
        opt = cls(params, lr=self.lr, betas=self.betas, eps=self.eps,
                  weight_decay=self.weight_decay)
        if self.schedule == "linear":
            from transformers import get_linear_schedule_with_warmup

            warmup = math.ceil(self.warmup_frac * self.max_steps)
            sched = get_linear_schedule_with_warmup(opt, warmup, self.max_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
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
