"""The Lightning ``Trainer`` of one ``fit`` call: how its processes start, its logger, quiet.

``fit`` is a library call inside a longer-lived process (a Dagster step, pytest, a notebook), so
strategies that would re-run the command line once per device (``'ddp'``, and ``'auto'`` on
several devices) are started as spawned worker processes instead (``'ddp_spawn'``). That is
decided from the config before the Trainer is built, with Lightning's public accelerator and
cluster-environment classes; processes started by an external launcher (torchrun, SLURM) are
left alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.environments import (
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from acs_pipeline.training.checkpoint import AtomicCheckpointIO
from acs_pipeline.training.config import TrainConfig

# The package each experiment logger needs, as pyproject.toml pins it.
LOGGER_PACKAGES = {"tensorboard": "tensorboard==2.21.0", "mlflow": "mlflow-skinny==3.17.2"}
# Strategies whose processes Lightning starts by spawning or forking (never via sys.argv).
_WORKER_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook", "xla")
_ACCELERATORS = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "gpu": CUDAAccelerator,
                 "mps": MPSAccelerator}
_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*exists and is not empty.*",
    ".*LeafSpec.*",
)


class LoggerUnavailableError(ImportError):
    """The configured experiment logger's package is not installed."""


# ------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Launch:
    """How the Trainer runs: the Lightning strategy, its number of processes, and whether they
    are worker processes that this process starts (and whose state it reads back after)."""

    strategy: str
    processes: int
    workers: bool


def n_processes(accelerator: str, devices: int | str) -> int:
    """How many devices (one process each) Lightning would use for these settings."""
    if accelerator == "auto":
        acc = next((a for a in (CUDAAccelerator, MPSAccelerator) if a.is_available()),
                   CPUAccelerator)
    elif accelerator in _ACCELERATORS:
        acc = _ACCELERATORS[accelerator]
    else:
        return 1
    if devices == "auto":
        return acc.auto_device_count()
    return len(acc.get_parallel_devices(acc.parse_devices(devices)))


def external_launcher() -> bool:
    """Whether this process was started by a launcher that starts every rank (torchrun, SLURM,
    LSF, MPI, or ``LOCAL_RANK`` set): the cluster environments Lightning checks, in its order."""
    envs = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment)
    return any(e.detect() for e in envs) or LightningEnvironment().creates_processes_externally


def launch(config: TrainConfig) -> Launch:
    """The strategy to build the Trainer with: on several devices, ``'ddp'`` and ``'auto'``
    become ``'ddp_spawn'`` (``ddp_find_unused_parameters_*`` its spawned form); any other
    strategy that would re-run the command line is refused."""
    strategy = config.strategy
    n = n_processes(config.accelerator, config.devices)
    if n <= 1 or external_launcher():
        return Launch(strategy, n, workers=False)
    if strategy in ("auto", "ddp"):
        return Launch("ddp_spawn", n, workers=True)
    if strategy.startswith("ddp_find_unused_parameters_"):
        return Launch("ddp_spawn_" + strategy.removeprefix("ddp_"), n, workers=True)
    if strategy.startswith(_WORKER_STRATEGIES):
        return Launch(strategy, n, workers=True)
    raise ValueError(
        f"strategy={strategy!r} starts one process per device by re-running the command line, "
        "which would re-run the whole pipeline step; use strategy='ddp' (run as 'ddp_spawn')"
    )


# --------------------------------------------------------------------------------- logger


def require_package(logger: str) -> None:
    """Raise ``LoggerUnavailableError`` naming the install command if the logger's package is
    missing (the logger's name is its module's name)."""
    if logger in LOGGER_PACKAGES and importlib.util.find_spec(logger) is None:
        raise LoggerUnavailableError(
            f"logger={logger!r} needs the {logger!r} package, which is not installed; install it "
            f"with `pip install -c constraints.txt {LOGGER_PACKAGES[logger]}` or choose "
            f"logger='csv'"
        )


def make_logger(config: TrainConfig, out_dir: Path) -> Any:
    """The configured Lightning logger (``False`` for ``'none'``); fails early without its
    package."""
    if config.logger == "none":
        return False
    require_package(config.logger)
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


# -------------------------------------------------------------------------------- trainer


def make_trainer(
    config: TrainConfig,
    how: Launch,
    out_dir: Path,
    callbacks: Sequence[Callback],
    logger: Any,
    n_train: int,
) -> L.Trainer:
    """The Lightning Trainer for ``config`` started as ``how`` says; the step loss is logged
    about once an epoch, at most every 50 steps."""
    per_process = math.ceil(n_train / max(how.processes, 1))
    return L.Trainer(
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        # validation every val_check_interval optimizer steps, across epochs (HuBERT-ECG)
        val_check_interval=config.val_check_interval,
        check_val_every_n_epoch=None if config.val_check_interval else 1,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=how.strategy,
        precision=config.resolved_precision,
        deterministic=(True if not config.uses_cuda else "warn") if config.deterministic else False,
        callbacks=list(callbacks),
        logger=logger,
        default_root_dir=str(out_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        log_every_n_steps=min(50, max(1, per_process // config.batch_size)),
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
    )


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info banners and its hints about workers and logging intervals;
    restore torch's determinism settings (the Trainer changes them) afterwards."""
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


class QuietWorker(Callback):
    """``quiet_lightning`` inside spawned DDP workers (the parent set it only for itself), for
    the length of the run."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._stack is None:
            self._stack = contextlib.ExitStack()
            self._stack.enter_context(quiet_lightning())

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
