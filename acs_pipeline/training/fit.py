"""``fit``: train one network on labelled arrays into a folder, resuming an interrupted run.

``fit`` writes into its output folder::

    best.ckpt  last.ckpt      Lightning checkpoints (written to a temp file, then renamed)
    lightning_logs/           the CSV or TensorBoard logger's files (MLflow logs to its server)

When the folder holds a ``last.ckpt``, ``fit`` resumes that run from it (the batches, the
plateau schedule and the epoch history continue as if it had never stopped); otherwise it
trains from scratch. ``fit`` keeps no record of finished runs: the caller gives each run its own
folder and removes ``last.ckpt`` once the run's outputs are stored (``training.stages`` does).

Several devices train data-parallel (DDP, see ``training.trainer``): each process draws its own
shard of every epoch's batches, so an epoch takes ``1 / world_size`` of the single-process steps
with an effective batch of ``batch_size * world_size``; the validation AUROC and loss are
computed over the whole validation set; only rank 0 writes files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import Tensor, nn

from acs_pipeline.training.callbacks import EpochHistory, LogConfig
from acs_pipeline.training.checkpoint import BEST, LAST, WeightsError, clear_temps, load_weights
from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.data import ECGDataModule, Split, check_split, check_trainable
from acs_pipeline.training.module import ECGClassifier, n_params
from acs_pipeline.training.trainer import (
    QuietWorker,
    launch,
    make_logger,
    make_trainer,
    quiet_lightning,
)

ModelLike = nn.Module | Callable[[], nn.Module]


class MissingCheckpointError(RuntimeError):
    """A run finished without a best checkpoint (no validated epoch was ever kept)."""


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
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: ModelLike,
    train: Split,
    val: Split,
    out_dir: Path | str,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen dataclass)
    init_state_dict: Mapping[str, Tensor] | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    init_strict: bool = True,
    min_pos: int = 2,
) -> TrainResult:
    """Train ``model`` on ``train`` = (x, y), keep the best-val-AUROC checkpoint in ``out_dir``.

    ``model`` is a module or a zero-argument factory (built after seeding, so its initial
    weights follow ``config.seed``). ``init_state_dict`` (e.g. ``load_weights`` of the MACE
    stage's ``best.ckpt``) is loaded before training starts; a resumed run starts from its
    ``last.ckpt`` instead. On return ``model`` holds the best checkpoint's weights; a run that
    kept no best checkpoint raises ``MissingCheckpointError``.

    With several devices the run happens in spawned worker processes: ``model``, the arrays and
    ``callbacks`` are pickled to them, so the callbacks must be picklable and the caller's
    callback objects are not updated; the result is read back from rank 0's ``last.ckpt``.
    """
    t0 = time.perf_counter()
    check_split("train", train)
    check_split("val", val)
    check_trainable(train[1], val[1], min_pos=min_pos)
    out_dir = Path(out_dir)
    how = launch(config)  # these two fail early, before any file is written
    logger = make_logger(config, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_temps(out_dir)
    best_path, last_path = out_dir / BEST, out_dir / LAST
    resume = last_path.exists()
    if not resume:  # an earlier run's best checkpoint must not pass for this run's
        best_path.unlink(missing_ok=True)

    with quiet_lightning():
        L.seed_everything(config.seed, workers=True, verbose=False)
        net = model if isinstance(model, nn.Module) else model()
        if init_state_dict is not None and not resume:
            try:
                net.load_state_dict(dict(init_state_dict), strict=init_strict)
            except RuntimeError as e:
                raise WeightsError(f"init_state_dict does not fit {type(net).__name__}: {e}") from e
        module = ECGClassifier.from_config(net, config, train_y=train[1])
        dm = ECGDataModule(train, val, config.batch_size, config.num_workers, config.seed,
                           device_cast=config.uses_cuda)
        history = EpochHistory()
        # Lightning >= 2.6 writes last.ckpt only when a top-k checkpoint is written at the same
        # step, so a second, unmonitored checkpoint callback writes last.ckpt every epoch. It
        # comes after the best one, so last.ckpt holds the best callback's updated state.
        best_ckpt = ModelCheckpoint(dirpath=out_dir, filename=Path(BEST).stem, monitor="val_auroc",
                                    mode="max", save_top_k=1, enable_version_counter=False,
                                    auto_insert_metric_name=False)
        last_ckpt = ModelCheckpoint(dirpath=out_dir, filename=Path(LAST).stem, monitor=None,
                                    save_top_k=1, enable_version_counter=False,
                                    auto_insert_metric_name=False)
        cbs: list[Callback] = [QuietWorker()] if how.workers else []
        cbs += [history, best_ckpt, last_ckpt, *callbacks]
        if config.early_stop_patience is not None:
            cbs.append(EarlyStopping(monitor="val_auroc", mode="max",
                                     patience=config.early_stop_patience,
                                     min_delta=config.early_stop_min_delta))
        if logger:
            cbs.append(LogConfig(config))
        trainer = make_trainer(config, how, out_dir, cbs, logger, len(train[0]))
        start_epoch = _checkpoint_epoch(last_path) + 1 if resume else 0
        trainer.fit(module, datamodule=dm, ckpt_path=str(last_path) if resume else None)

    nan = float("nan")
    if not trainer.is_global_zero:  # a rank started by an external launcher: rank 0 reports
        return TrainResult(best_path, last_path, nan, nan, -1, 0, 0, resume, start_epoch, 0.0,
                           0.0, n_params(net))
    if not best_path.exists():
        raise MissingCheckpointError(
            f"{out_dir}: training ended without a best checkpoint ({BEST}): no validated epoch "
            "had a validation AUROC to keep"
        )
    epochs_run, global_step = trainer.current_epoch, trainer.global_step
    best_score = best_ckpt.best_model_score
    if how.workers:  # their callbacks and loops are gone: read rank 0's state back
        epochs_run, global_step = read_worker_state(last_path, history)
        best_score = None
    best_epoch = _checkpoint_epoch(best_path)
    best_row = next((r for r in history.rows if r["epoch"] == best_epoch), None)
    if best_score is not None:
        best_auroc = float(best_score)
    else:
        best_auroc = float(best_row["val_auroc"]) if best_row else nan
    net.load_state_dict(load_weights(best_path))
    return TrainResult(
        best_path=best_path,
        last_path=last_path,
        best_val_auroc=best_auroc,
        best_val_loss=float(best_row["val_loss"]) if best_row else nan,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        global_step=global_step,
        resumed=resume,
        start_epoch=start_epoch,
        wall_s=time.perf_counter() - t0,
        samples_per_s=history.train_samples / history.train_s if history.train_s else 0.0,
        n_params=n_params(net),
        history=[dict(r) for r in history.rows],
    )


def _checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def read_worker_state(last_path: Path, history: EpochHistory) -> tuple[int, int]:
    """Epochs run and optimizer steps of a finished run from its ``last.ckpt``; loads the
    epoch history and the timing into ``history``."""
    ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
    state = ckpt.get("callbacks", {}).get(history.state_key, {})
    history.load_state_dict(state)
    history.train_s = float(state.get("train_s", 0.0))
    history.train_samples = int(state.get("train_samples", 0))
    return int(ckpt["epoch"]) + 1, int(ckpt["global_step"])

