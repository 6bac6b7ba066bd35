"""Training: the benchmark's recipe as a Lightning module, resumable fitting and prediction.

The recipe (DATA-CONTRACT section 4): ``BCEWithLogitsLoss`` on one logit, Adam (lr 1e-4, betas
0.9/0.999), ``ReduceLROnPlateau`` on the validation loss, 50 epochs, bf16 mixed precision on a GPU,
keep the checkpoint with the best validation AUROC; two stages (MACE pretraining on the untested
cohort, then ACS fine-tuning on the tested cohort from the MACE weights, see ``fit_two_stage``).

``fit`` writes into one output folder::

    best.ckpt  last.ckpt      Lightning checkpoints (written to a temp file, then renamed)
    metrics.csv               one row per epoch: epoch, step, train_loss, val_loss, val_auroc, lr
    run_state.json            fingerprint of config + model + data + init weights, finished flag
    lightning_logs/           the CSV or TensorBoard logger's files (MLflow logs to its server)

Calling ``fit`` again on the same folder resumes an interrupted run from ``last.ckpt`` and
returns a finished run's recorded result without training. Batches are drawn by
``EpochBatchSampler`` from a permutation seeded by (seed, epoch), so a resumed run sees the same
batches as one that was never interrupted.

Several devices train data-parallel (DDP): each process draws its own shard of every epoch's
batches, so an epoch takes ``1 / world_size`` of the single-process steps with an effective
batch of ``batch_size * world_size``; the validation AUROC and loss are computed over the whole
validation set (torchmetrics gathers every process's predictions); only rank 0 writes files.
``fit`` is a library call inside a longer-lived process (a Dagster step, pytest, a notebook), so
strategies that re-run the command line once per device (``'ddp'``, and ``'auto'`` on several
devices) are started as spawned worker processes instead (``'ddp_spawn'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

__all__ = [
    "ArrayDataset",
    "AtomicCheckpointIO",
    "ECGClassifier",
    "ECGDataModule",
    "EpochBatchSampler",
    "InsufficientLabelsError",
    "LoggerUnavailableError",
    "RunStateMismatchError",
    "TrainConfig",
    "TrainResult",
    "TrainingDataError",
    "check_trainable",
    "fit",
    "fit_two_stage",
    "load_weights",
    "predict",
]

ModelLike = nn.Module | Callable[[], nn.Module]
Split = tuple[np.ndarray, np.ndarray]

BEST_NAME = "best"
LAST_NAME = "last"
STATE_FILE = "run_state.json"
METRICS_FILE = "metrics.csv"
MODEL_PREFIX = "model."
_LOGGERS = ("csv", "tensorboard", "mlflow", "none")
# The package each experiment logger needs, as pyproject.toml pins it.
_LOGGER_PACKAGES = {"tensorboard": "tensorboard==2.21.0", "mlflow": "mlflow-skinny==3.17.2"}
_OPTIMIZERS = ("adam", "adamw")
# Fields that do not change what is trained; they are left out of the resume fingerprint.
_NOT_HASHED = ("logger", "num_workers", "experiment_name", "tracking_uri")


class TrainingDataError(ValueError):
    """Training inputs have the wrong shape, length or label values."""


class InsufficientLabelsError(TrainingDataError):
    """A split has too few positives or negatives to train or to compute a validation AUROC."""


class RunStateMismatchError(RuntimeError):
    """The output folder holds a run with a different config, model, data or init weights."""


class LoggerUnavailableError(ImportError):
    """The configured experiment logger's package is not installed."""


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the benchmark's recipe (use batch 32 for S4).

    ``precision=None`` means ``'bf16-mixed'`` on CUDA and ``'32-true'`` otherwise.
    ``deterministic`` is strict on CPU and ``'warn'`` on CUDA, where some kernels (pooling
    backward, scatter) have no deterministic implementation.

    ``devices``/``strategy`` are Lightning's: ``devices=2, strategy='ddp'`` (or ``'auto'``)
    trains data-parallel in two spawned processes; ``batch_size`` is per process. ``logger``
    is ``'csv'`` (``lightning_logs/`` in the output folder), ``'tensorboard'`` (same place),
    ``'mlflow'`` (a run named after the output folder in experiment ``experiment_name`` at
    ``tracking_uri``, e.g. ``sqlite:///path/mlflow.db`` or ``http://host:5000``) or ``'none'``.
    The logger settings do not change what is trained and stay out of the resume fingerprint.
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
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.logger not in _LOGGERS:
            raise ValueError(f"logger must be one of {_LOGGERS}, got {self.logger!r}")
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

    def hashed_dict(self) -> dict[str, Any]:
        """``to_dict`` without the fields that do not change what is trained (the logger
        settings, ``num_workers``): what a run's fingerprint or cache key should hold."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}

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


# ----------------------------------------------------------------------------------------- data


def _as_labels(y: np.ndarray | None, n: int, split: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise TrainingDataError(f"{split}: expected labels of shape ({n},), got {y.shape}")
    yf = y.astype(np.float32)
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        raise TrainingDataError(
            f"{split}: labels must be 0/1, found {np.unique(y[bad])[:5].tolist()} "
            f"at rows {np.flatnonzero(bad)[:5].tolist()}"
        )
    return yf


class ArrayDataset(Dataset):
    """(N, C, L) samples and optional (N,) 0/1 labels over numpy arrays, without copying them.

    ``ds[i]`` gives one sample; ``ds[list_of_indices]`` gives a whole batch from one numpy
    slice (contiguous indices) or fancy-index, which is what ``EpochBatchSampler`` feeds it.
    Samples come out as ``out_dtype`` tensors (float32; ``None`` keeps the stored dtype, e.g.
    float16 to halve host-to-GPU copies and convert on the device). float16 memmaps are fine.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        split: str = "data",
        out_dtype: type | np.dtype | None = np.float32,
    ) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            shape = getattr(x, "shape", None)
            raise TrainingDataError(f"{split}: expected an (N, C, L) numpy array, got {shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TrainingDataError(f"{split}: expected floating samples, got {x.dtype}")
        self.x = x
        self.y = _as_labels(y, len(x), split)
        self.split = split
        self.out_dtype = np.dtype(out_dtype) if out_dtype is not None else x.dtype

    def _convert(self, a: np.ndarray) -> Tensor:
        # numpy's float16 -> float32 conversion beats torch's on CPU; a gathered batch is
        # already a fresh array, so only a slice of a read-only memmap needs a copy
        if a.dtype != self.out_dtype:
            a = a.astype(self.out_dtype)
        elif not a.flags.writeable or not a.flags.c_contiguous:
            a = np.array(a, order="C")
        return torch.from_numpy(a)

    def __len__(self) -> int:
        return len(self.x)

    def _rows(self, idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray | slice]:
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
            sel: np.ndarray | slice = slice(int(idx[0]), int(idx[-1]) + 1)
        else:
            sel = idx
        return self.x[sel], sel

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> Any:
        if isinstance(index, int | np.integer):
            xb = self._convert(self.x[index])
            if self.y is None:
                return xb
            return xb, torch.tensor(self.y[index])
        xs, sel = self._rows(index)
        xb = self._convert(xs)
        if self.y is None:
            return xb
        return xb, torch.from_numpy(self.y[sel].copy())


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches from a permutation seeded by ``(seed, epoch)``; shards across replicas.

    Lightning calls ``set_epoch`` before each epoch, so the order depends on the epoch number
    only and a resumed run repeats it. A trailing batch smaller than ``min_last_batch`` is
    dropped (BatchNorm cannot train on a batch of one).

    With ``num_replicas > 1`` replica ``rank`` takes every ``num_replicas``-th index of the
    epoch's permutation. ``pad=True`` (training) repeats a few indices so that every replica
    gets the same number of batches, which DDP's gradient synchronisation needs; ``pad=False``
    (validation, prediction) gives disjoint shards that together hold every index exactly once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        min_last_batch: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.min_last_batch, self.num_replicas, self.rank = min_last_batch, num_replicas, rank
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            idx = np.arange(self.n)
        if self.num_replicas > 1:
            if self.pad:
                idx = np.resize(idx, math.ceil(self.n / self.num_replicas) * self.num_replicas)
            idx = idx[self.rank :: self.num_replicas]
        return idx

    def _n_per_replica(self) -> int:
        if self.num_replicas == 1:
            return self.n
        if self.pad:
            return math.ceil(self.n / self.num_replicas)
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._indices()
        for start in range(0, len(idx), self.batch_size):
            batch = idx[start : start + self.batch_size]
            if len(batch) < min(self.min_last_batch, len(idx)):
                break
            yield batch.tolist()

    def __len__(self) -> int:
        m = self._n_per_replica()
        full, rest = divmod(m, self.batch_size)
        return full + int(rest > 0 and rest >= min(self.min_last_batch, m))


def make_loader(
    dataset: ArrayDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    min_last_batch: int = 1,
    num_replicas: int = 1,
    rank: int = 0,
    pad: bool = True,
) -> DataLoader:
    """A DataLoader that fetches each batch with one numpy indexing operation."""
    sampler = EpochBatchSampler(
        len(dataset), batch_size, shuffle, seed, min_last_batch, num_replicas, rank, pad
    )
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


class ECGDataModule(L.LightningDataModule):
    """Train / validation / predict arrays as loaders; pinned memory and workers only on GPU.

    With ``device_cast`` (default: when CUDA is present) batches keep the stored dtype (float16)
    on the way to the GPU and ``ECGClassifier`` converts them there to float32. Under DDP each
    process loads its own shard (``EpochBatchSampler``): padded to equal length for training,
    disjoint and complete for validation and prediction.
    """

    def __init__(
        self,
        train: Split | None = None,
        val: Split | None = None,
        predict_x: np.ndarray | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        device_cast: bool | None = None,
    ) -> None:
        super().__init__()
        gpu = torch.cuda.is_available()
        out = None if (gpu if device_cast is None else device_cast) else np.float32
        self.train_ds = ArrayDataset(*train, "train", out) if train is not None else None
        self.val_ds = ArrayDataset(*val, "val", out) if val is not None else None
        self.predict_ds = (
            ArrayDataset(predict_x, None, "predict", out) if predict_x is not None else None
        )
        self.batch_size, self.seed = batch_size, seed
        self.pin_memory = gpu if pin_memory is None else pin_memory
        self.num_workers = num_workers if gpu else 0

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, ds: ArrayDataset | None, shuffle: bool, min_last: int) -> DataLoader:
        if ds is None:
            raise TrainingDataError("no data given for this stage")
        replicas, rank = self._replicas()
        if not shuffle and len(ds) < replicas:
            # an empty shard would leave one process out of DDP's first-forward buffer sync
            raise TrainingDataError(
                f"{ds.split}: {len(ds)} samples cannot be sharded over {replicas} processes"
            )
        return make_loader(
            ds,
            self.batch_size,
            shuffle,
            self.seed,
            self.num_workers,
            self.pin_memory,
            min_last,
            replicas,
            rank,
            pad=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_ds, shuffle=True, min_last=2)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_ds, shuffle=False, min_last=1)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_ds, shuffle=False, min_last=1)


def check_trainable(y_train: np.ndarray, y_val: np.ndarray, min_pos: int = 2) -> None:
    """Raise ``InsufficientLabelsError`` if a split has fewer than ``min_pos`` of either class."""
    for split, y in (("train", y_train), ("val", y_val)):
        yf = _as_labels(np.asarray(y), len(y), split)
        assert yf is not None
        pos = int(yf.sum())
        neg = len(yf) - pos
        if pos < min_pos or neg < min_pos:
            raise InsufficientLabelsError(
                f"{split} split has {pos} positive(s) and {neg} negative(s) among {len(yf)}; "
                f"need at least {min_pos} of each"
            )


# ---------------------------------------------------------------------------------------- model


def _logits(model: nn.Module, x: Tensor) -> Tensor:
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
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
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
        return _logits(self.model, x)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean BCE-with-logits of a batch, and its logits."""
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y.float()), logits

    def on_train_epoch_start(self) -> None:
        self.train_loss.reset()
        self.train_epoch_loss = float("nan")
        opts = self.trainer.optimizers if self._trainer is not None else []
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

    def predict_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return torch.sigmoid(self(x))

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


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- files and state


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, lambda f: f.write(text.encode()))


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
        _atomic_write_bytes(Path(path), lambda f: torch.save(checkpoint, f))


class _EpochHistory(Callback):
    """One row per validated epoch, kept in the checkpoint and mirrored to ``metrics.csv``."""

    COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_auroc", "lr")

    def __init__(self, path: Path) -> None:
        self.path = path
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
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        lines = [",".join(self.COLUMNS)]
        lines += [",".join(repr(r[c]) for c in self.COLUMNS) for r in self.rows]
        _atomic_write_text(self.path, "\n".join(lines) + "\n")

    def state_dict(self) -> dict[str, Any]:
        # the timing covers this process's run only; it is saved so that the parent of spawned
        # DDP workers can read it back, and is not restored on resume
        return {
            "rows": [dict(r) for r in self.rows],
            "train_s": self.train_s,
            "train_samples": self.train_samples,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


class _LogConfig(Callback):
    """Records the training config as the experiment logger's hyperparameters (rank 0)."""

    def __init__(self, config: TrainConfig) -> None:
        self.params = {k: v for k, v in config.to_dict().items() if k != "tracking_uri"}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for lg in trainer.loggers:
            lg.log_hyperparams(self.params)


class _QuietWorker(Callback):
    """In spawned DDP workers, the filters of ``_quiet_lightning`` (which the parent set only
    for itself) for the length of the run."""

    def __init__(self) -> None:
        self._ctx: Any = None
        self._levels: list[tuple[logging.Logger, int]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._ctx is not None or not isinstance(
            trainer.strategy.launcher, _MultiProcessingLauncher
        ):
            return
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        for msg in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=msg)
        for name in _QUIET_LOGGERS:
            lg = logging.getLogger(name)
            self._levels.append((lg, lg.level))
            lg.setLevel(logging.WARNING)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._ctx is None:
            return
        self._ctx.__exit__(None, None, None)
        for lg, level in self._levels:
            lg.setLevel(level)
        self._ctx, self._levels = None, []


@dataclass
class TrainResult:
    """What one ``fit`` call produced; ``best_val_loss`` is the val loss of the best epoch."""

    best_path: Path
    last_path: Path
    best_val_auroc: float
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    global_step: int
    resumed: bool
    start_epoch: int
    wall_s: float
    samples_per_s: float
    n_params: int
    metrics_csv: Path | None
    reused: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("best_path", "last_path", "metrics_csv"):
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainResult:
        d = dict(d)
        for k in ("best_path", "last_path", "metrics_csv"):
            d[k] = None if d.get(k) is None else Path(d[k])
        return cls(**d)


def _hash_array(a: np.ndarray, max_rows: int = 256) -> str:
    """Shape, dtype and the bytes of up to ``max_rows`` evenly spaced rows."""
    h = hashlib.sha256(f"{a.shape}|{a.dtype}".encode())
    if len(a):
        rows = np.unique(np.linspace(0, len(a) - 1, min(len(a), max_rows)).astype(np.int64))
        h.update(np.ascontiguousarray(a[rows]).tobytes())
    return h.hexdigest()[:16]


def _hash_state(sd: Mapping[str, Tensor] | None) -> str | None:
    if sd is None:
        return None
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _fingerprint(
    model: nn.Module, train: Split, val: Split, config: TrainConfig, init: Mapping | None
) -> dict[str, Any]:
    cfg = config.hashed_dict()
    cfg["precision"] = config.resolved_precision
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    parts = {
        "config": cfg,
        "model": [type(model).__qualname__, hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]],
        "train": [_hash_array(train[0]), _hash_array(np.asarray(train[1]), 1 << 30)],
        "val": [_hash_array(val[0]), _hash_array(np.asarray(val[1]), 1 << 30)],
        "init": _hash_state(init),
    }
    parts["hash"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return parts


def _read_state(out_dir: Path) -> dict[str, Any] | None:
    p = out_dir / STATE_FILE
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise RunStateMismatchError(f"{p} is not valid JSON: {e}") from e


def _clear_run(out_dir: Path) -> None:
    for name in (f"{BEST_NAME}.ckpt", f"{LAST_NAME}.ckpt", METRICS_FILE, STATE_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()


def _clear_temps(out_dir: Path) -> None:
    for p in out_dir.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# ----------------------------------------------------------------------------------------- fit


_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*exists and is not empty.*",
    ".*LeafSpec.*",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info banners and its hints about workers and logging intervals."""
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    det = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for msg in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=msg)
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _require_package(logger: str) -> None:
    """Raise ``LoggerUnavailableError`` naming the install command if the logger's package is
    missing (the logger's name is its module's name)."""
    if logger in _LOGGER_PACKAGES and importlib.util.find_spec(logger) is None:
        raise LoggerUnavailableError(
            f"logger={logger!r} needs the {logger!r} package, which is not installed; install it "
            f"with `pip install -c constraints.txt {_LOGGER_PACKAGES[logger]}` or choose "
            f"logger='csv'"
        )


def _make_logger(config: TrainConfig, out_dir: Path) -> Any:
    """The configured Lightning logger (``False`` for ``'none'``); fails early without its
    package."""
    if config.logger == "none":
        return False
    _require_package(config.logger)
    from lightning.pytorch import loggers as pl_loggers

    if config.logger == "csv":
        return pl_loggers.CSVLogger(save_dir=str(out_dir), name="lightning_logs")
    if config.logger == "tensorboard":
        return pl_loggers.TensorBoardLogger(
            save_dir=str(out_dir), name="lightning_logs", default_hp_metric=False
        )
    return pl_loggers.MLFlowLogger(
        experiment_name=config.experiment_name,
        tracking_uri=config.tracking_uri,
        run_name=out_dir.name,
        tags={"acs_pipeline.out_dir": str(out_dir)},
    )


def _spawned_strategy(strategy: str) -> str:
    """The spawn-launched form of a DDP strategy that would re-run the command line."""
    if strategy in ("auto", "ddp"):
        return "ddp_spawn"
    if strategy.startswith("ddp_find_unused_parameters_"):
        return "ddp_spawn_" + strategy.removeprefix("ddp_")
    raise ValueError(
        f"strategy={strategy!r} starts one process per device by re-running the command line, "
        "which would re-run the whole pipeline step; use strategy='ddp' (run as 'ddp_spawn')"
    )


def _relaunches_command_line(trainer: L.Trainer) -> bool:
    """Whether ``trainer.fit`` would start its workers by re-running ``sys.argv``.

    Processes already started by an external launcher (torchrun, SLURM) are left alone.
    """
    strategy = trainer.strategy
    return (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and getattr(strategy, "num_processes", 1) > 1
        and not strategy.cluster_environment.creates_processes_externally
    )


def _make_trainer(
    config: TrainConfig, out_dir: Path, callbacks: list[Callback], logger: Any, n_train: int
) -> L.Trainer:
    """The Lightning trainer; ``'ddp'`` (and ``'auto'`` on several devices) become spawned DDP."""

    def build(strategy: str) -> L.Trainer:
        return L.Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=strategy,
            precision=config.resolved_precision,
            deterministic=(
                (True if not config.uses_cuda else "warn") if config.deterministic else False
            ),
            callbacks=callbacks,
            logger=logger,
            default_root_dir=str(out_dir),
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_train_batches=config.limit_train_batches,
            limit_val_batches=config.limit_val_batches,
            log_every_n_steps=50,
            use_distributed_sampler=False,
            plugins=[AtomicCheckpointIO()],
        )

    trainer = build(config.strategy)
    if _relaunches_command_line(trainer):
        trainer = build(_spawned_strategy(config.strategy))
    per_process = math.ceil(n_train / trainer.world_size)
    trainer.log_every_n_steps = min(50, max(1, per_process // config.batch_size))
    return trainer


def _read_worker_state(last_path: Path, history: _EpochHistory) -> tuple[int, int]:
    """Epochs run and optimizer steps of a finished run from its ``last.ckpt``; loads the
    epoch history and the timing into ``history``."""
    if not last_path.exists():
        return 0, 0
    ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
    state = ckpt.get("callbacks", {}).get(history.state_key, {})
    history.load_state_dict(state)
    history.train_s = float(state.get("train_s", 0.0))
    history.train_samples = int(state.get("train_samples", 0))
    return int(ckpt["epoch"]) + 1, int(ckpt["global_step"])


def _check_split(split: str, data: Split) -> None:
    x, y = data
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise TrainingDataError(
            f"{split}: expected an (N, C, L) array, got {getattr(x, 'shape', x)}"
        )
    if len(np.asarray(y)) != len(x):
        raise TrainingDataError(f"{split}: {len(x)} samples but {len(np.asarray(y))} labels")


def _load_best_into(model: nn.Module, best_path: Path) -> None:
    if best_path.exists():
        model.load_state_dict(load_weights(best_path))


def fit(
    model: ModelLike,
    train: Split,
    val: Split,
    out_dir: Path | str,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen dataclass)
    init_state_dict: Mapping[str, Tensor] | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    on_mismatch: Literal["error", "restart"] = "error",
    init_strict: bool = True,
    min_pos: int = 2,
) -> TrainResult:
    """Train ``model`` on ``train`` = (x, y), keep the best-val-AUROC checkpoint in ``out_dir``.

    ``model`` is a module or a zero-argument factory (built after seeding, so its initial
    weights follow ``config.seed``). ``init_state_dict`` (e.g. ``load_weights`` of the MACE
    stage's ``best.ckpt``) is loaded before training starts. An unfinished run in ``out_dir``
    with the same fingerprint resumes from ``last.ckpt``; a finished one is returned as recorded
    (``reused=True``). A different fingerprint raises ``RunStateMismatchError``, or with
    ``on_mismatch='restart'`` deletes the old run's files and starts over. On return ``model``
    holds the best checkpoint's weights.

    With several devices the run happens in spawned worker processes (see the module doc):
    ``model``, the arrays and ``callbacks`` are pickled to them, so the callbacks must be
    picklable and the caller's callback objects are not updated; the result is read back from
    rank 0's ``last.ckpt``.
    """
    t0 = time.perf_counter()
    _check_split("train", train)
    _check_split("val", val)
    check_trainable(train[1], val[1], min_pos=min_pos)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_temps(out_dir)
    best_path, last_path = out_dir / f"{BEST_NAME}.ckpt", out_dir / f"{LAST_NAME}.ckpt"
    metrics_csv = out_dir / METRICS_FILE

    with _quiet_lightning():
        L.seed_everything(config.seed, workers=True, verbose=False)
        net = model if isinstance(model, nn.Module) else model()
        fp = _fingerprint(net, train, val, config, init_state_dict)
        state = _read_state(out_dir)
        stale = state is None and (last_path.exists() or best_path.exists())
        if stale or (state is not None and state.get("hash") != fp["hash"]):
            have = "checkpoints without run_state.json" if stale else f"run {state['hash']}"
            if on_mismatch != "restart":
                raise RunStateMismatchError(
                    f"{out_dir} holds {have}, not this run ({fp['hash']}): config, model, data "
                    "or init weights differ; pass on_mismatch='restart' to start over"
                )
            _clear_run(out_dir)
            state = None
        if state is not None and state.get("finished") and best_path.exists():
            res = TrainResult.from_dict(state["result"])
            res.reused, res.resumed = True, False
            res.best_path, res.last_path = best_path, last_path  # the folder may have moved
            res.metrics_csv = metrics_csv if metrics_csv.exists() else None
            res.wall_s = time.perf_counter() - t0
            _load_best_into(net, best_path)
            return res

        resume = state is not None and last_path.exists()
        if init_state_dict is not None and not resume:
            try:
                net.load_state_dict(dict(init_state_dict), strict=init_strict)
            except RuntimeError as e:
                raise RunStateMismatchError(
                    f"init_state_dict does not fit {type(net).__name__}: {e}"
                ) from e
        logger = _make_logger(config, out_dir)  # fails early if its package is missing

        module = ECGClassifier(
            net,
            config.lr,
            config.betas,
            config.weight_decay,
            config.optimizer,
            config.plateau_patience,
            config.plateau_factor,
        )
        dm = ECGDataModule(
            train,
            val,
            None,
            config.batch_size,
            config.num_workers,
            config.seed,
            device_cast=config.uses_cuda,
        )
        history = _EpochHistory(metrics_csv)
        # Lightning >= 2.6 writes last.ckpt only when a top-k checkpoint is written at the same
        # step, so a second, unmonitored checkpoint callback writes last.ckpt every epoch. It
        # comes after the best one, so last.ckpt holds the best callback's updated state.
        ckpt = ModelCheckpoint(
            dirpath=out_dir,
            filename=BEST_NAME,
            monitor="val_auroc",
            mode="max",
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
        last_ckpt = ModelCheckpoint(
            dirpath=out_dir,
            filename=LAST_NAME,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
        cbs: list[Callback] = [_QuietWorker(), history, ckpt, last_ckpt, *callbacks]
        if config.early_stop_patience is not None:
            cbs.append(
                EarlyStopping(monitor="val_auroc", mode="max", patience=config.early_stop_patience)
            )
        if logger:
            cbs.append(_LogConfig(config))
        trainer = _make_trainer(config, out_dir, cbs, logger, len(train[0]))
        if trainer.is_global_zero:
            state_text = json.dumps({**fp, "finished": False}, indent=1)
            _atomic_write_text(out_dir / STATE_FILE, state_text)
        start_epoch = 0
        if resume:
            start_epoch = (
                int(torch.load(last_path, map_location="cpu", weights_only=True)["epoch"]) + 1
            )
        trainer.fit(module, datamodule=dm, ckpt_path=str(last_path) if resume else None)

    if not trainer.is_global_zero:
        return TrainResult(
            best_path,
            last_path,
            float("nan"),
            float("nan"),
            -1,
            0,
            0,
            resume,
            start_epoch,
            0.0,
            0.0,
            n_params(net),
            metrics_csv,
        )
    epochs_run, global_step = trainer.current_epoch, trainer.global_step
    best_score = ckpt.best_model_score
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # the run happened in spawned workers: their callbacks and loops are gone, read rank
        # 0's state back from the last checkpoint
        epochs_run, global_step = _read_worker_state(last_path, history)
        best_score = None
    rows = history.rows
    best_row = max(rows, key=lambda r: (r["val_auroc"], -r["epoch"])) if rows else None
    if best_path.exists():
        best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=True)["epoch"])
        best_row = next((r for r in rows if r["epoch"] == best_epoch), best_row)
    if best_score is not None:
        best_auroc = float(best_score)
    else:
        best_auroc = float(best_row["val_auroc"]) if best_row else float("nan")
    result = TrainResult(
        best_path=best_path,
        last_path=last_path,
        best_val_auroc=best_auroc,
        best_val_loss=float(best_row["val_loss"]) if best_row else float("nan"),
        best_epoch=int(best_row["epoch"]) if best_row else -1,
        epochs_run=epochs_run,
        global_step=global_step,
        resumed=resume,
        start_epoch=start_epoch,
        wall_s=time.perf_counter() - t0,
        samples_per_s=history.train_samples / history.train_s if history.train_s else 0.0,
        n_params=n_params(net),
        metrics_csv=metrics_csv if metrics_csv.exists() else None,
        history=[dict(r) for r in rows],
    )
    _atomic_write_text(
        out_dir / STATE_FILE,
        json.dumps({**fp, "finished": True, "result": result.to_dict()}, indent=1),
    )
    _load_best_into(net, best_path)
    return result


def fit_two_stage(
    model: Callable[[], nn.Module],
    pretrain: tuple[Split, Split],
    finetune: tuple[Split, Split],
    out_dir: Path | str,
    pretrain_config: TrainConfig = TrainConfig(),  # noqa: B008
    finetune_config: TrainConfig | None = None,
    stage_names: tuple[str, str] = ("mace", "acs"),
    **fit_kwargs: Any,
) -> tuple[TrainResult, TrainResult]:
    """MACE pretraining then ACS fine-tuning from the pretraining's best weights.

    Each stage writes into ``out_dir/<stage name>``; ``pretrain`` and ``finetune`` are
    ``((x_train, y_train), (x_val, y_val))``.
    """
    out_dir = Path(out_dir)
    first = fit(model, *pretrain, out_dir / stage_names[0], pretrain_config, **fit_kwargs)
    init = load_weights(first.best_path)
    second = fit(
        model,
        *finetune,
        out_dir / stage_names[1],
        finetune_config or pretrain_config,
        init,
        **fit_kwargs,
    )
    return first, second


# ------------------------------------------------------------------------------------ inference


def load_weights(path: Path | str, prefix: str = MODEL_PREFIX) -> dict[str, Tensor]:
    """The wrapped model's state dict from one of our checkpoints (loaded with weights_only)."""
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise RunStateMismatchError(f"{path}: no state_dict of tensors in this checkpoint")
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise RunStateMismatchError(f"{path}: no parameters under the prefix {prefix!r}")
    return out


def predict(
    model: nn.Module,
    x: np.ndarray,
    batch_size: int = 256,
    transform: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    autocast_bf16: bool = False,
) -> np.ndarray:
    """Probabilities (N,) for (N, C, L) samples, in eval mode without gradients.

    ``transform`` maps each float32 batch (on ``device``) before the model. The default device
    is CUDA when present; ``autocast_bf16`` is off by default because bf16 logits tie often,
    which biases AUROC. The model's device and train/eval mode are restored afterwards.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ds = ArrayDataset(x, None, "predict", None if dev.type == "cuda" else np.float32)
    params = list(model.parameters())
    old_dev = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.to(dev).eval()
    out = np.empty(len(ds), dtype=np.float64)
    try:
        with torch.inference_mode():
            for start in range(0, len(ds), batch_size):
                idx = range(start, min(start + batch_size, len(ds)))
                xb = ds[list(idx)].to(dev).float()  # float16 is converted on the GPU
                if transform is not None:
                    xb = transform(xb)
                ctx = (
                    torch.autocast(dev.type, dtype=torch.bfloat16)
                    if autocast_bf16
                    else contextlib.nullcontext()
                )
                with ctx:
                    logits = _logits(model, xb)
                out[start : start + len(idx)] = torch.sigmoid(logits.float()).cpu().numpy()
    finally:
        model.to(old_dev).train(was_training)
    return out
