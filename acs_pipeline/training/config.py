"""The training settings of one ``fit`` call; the defaults are the benchmark's recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

LOGGERS = ("csv", "tensorboard", "mlflow", "none")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the benchmark's recipe (use batch 32 for S4).

    The recipe (docs/data-contract.md §4, docs/recipes.md): ``BCEWithLogitsLoss`` on one logit,
    Adam (lr 1e-4, betas 0.9/0.999), ``ReduceLROnPlateau`` on the validation loss at torch's
    defaults (factor 0.1, patience 10), 50 epochs, bf16 mixed precision on a GPU, keep the
    checkpoint with the best validation AUROC.

    HuBERT-ECG's fine-tuning (``finetune.py``) is step based: ``max_steps`` optimizer steps
    (``max_epochs=-1``: as many epochs as they take), validation every ``val_check_interval``
    steps across epochs, ``schedule='linear'`` (linear warm-up over ``warmup_frac`` of the
    steps, then linear decay to 0, stepped every optimizer step), ``pos_weight=True``
    (BCE's positive class weighted by the training set's negatives / positives),
    ``unfrozen_blocks`` (only the network's last n transformer blocks and the layers after
    the encoder train: ``HubertBinary.freeze_for_finetuning``) and early stopping after
    ``early_stop_patience`` validations without a validation AUROC better by
    ``early_stop_min_delta``.

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
    eps: float = 1e-8
    optimizer: str = "adam"
    schedule: str = "plateau"
    plateau_patience: int = 10
    plateau_factor: float = 0.1
    warmup_frac: float = 0.08
    max_steps: int = -1
    val_check_interval: int | None = None
    pos_weight: bool = False
    unfrozen_blocks: int | None = None
    early_stop_patience: int | None = None
    early_stop_min_delta: float = 0.0
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
        if self.max_epochs < 1 and not (self.max_epochs == -1 and self.max_steps > 0):
            raise ValueError(f"max_epochs must be >= 1 (or -1 with max_steps), got "
                             f"{self.max_epochs}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "linear" and self.max_steps < 1:
            raise ValueError("schedule='linear' needs max_steps (its decay ends there)")
        if not 0.0 <= self.warmup_frac <= 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1], got {self.warmup_frac}")
        if self.val_check_interval is not None and self.val_check_interval < 1:
            raise ValueError(f"val_check_interval must be >= 1, got {self.val_check_interval}")
        if self.unfrozen_blocks is not None and self.unfrozen_blocks < 0:
            raise ValueError(f"unfrozen_blocks must be >= 0, got {self.unfrozen_blocks}")
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
