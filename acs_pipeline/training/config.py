"""The training settings of one ``fit`` call; the defaults are the benchmark's recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

LOGGERS = ("csv", "tensorboard", "mlflow", "none")
OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the benchmark's recipe (use batch 32 for S4).

    The recipe (docs/data-contract.md §4): ``BCEWithLogitsLoss`` on one logit, Adam (lr 1e-4,
    betas 0.9/0.999), ``ReduceLROnPlateau`` on the validation loss, 50 epochs, bf16 mixed
    precision on a GPU, keep the checkpoint with the best validation AUROC.

    ``precision=None`` means ``'bf16-mixed'`` on CUDA and ``'32-true'`` otherwise.
    ``deterministic`` is strict on CPU and ``'warn'`` on CUDA, where some kernels (pooling
    backward, scatter) have no deterministic implementation.

    ``devices``/``strategy`` are Lightning's: ``devices=2, strategy='ddp'`` (or ``'auto'``)
    trains data-parallel in two spawned processes; ``batch_size`` is per process. ``logger``
    is ``'csv'`` (``lightning_logs/`` in the output folder), ``'tensorboard'`` (same place),
    ``'mlflow'`` (a run named after the output folder in experiment ``experiment_name`` at
    ``tracking_uri``, e.g. ``sqlite:///path/mlflow.db`` or ``http://host:5000``) or ``'none'``.
    The logger settings do not change what is trained.
    """

    max_epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    optimizer: str = "adam"
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    early_stop_patience: int | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str | None = None
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = True
    logger: str = "csv"
    experiment_name: str = "acs-pipeline"
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.logger not in LOGGERS:
            raise ValueError(f"logger must be one of {LOGGERS}, got {self.logger!r}")
        if self.logger == "mlflow" and not self.tracking_uri:
            raise ValueError(
                "logger='mlflow' needs tracking_uri, e.g. 'sqlite:///path/mlflow.db' or "
                "'http://mlflow-host:5000'"
            )
        if len(self.betas) != 2:
            raise ValueError(f"betas must be a pair, got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @property
    def uses_cuda(self) -> bool:
        """Whether the run goes to a CUDA device."""
        if self.accelerator in ("cuda", "gpu"):
            return True
        return self.accelerator == "auto" and torch.cuda.is_available()

    @property
    def resolved_precision(self) -> str:
        if self.precision is not None:
            return self.precision
        return "bf16-mixed" if self.uses_cuda else "32-true"
