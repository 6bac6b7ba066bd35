"""The benchmark's two training stages and their predictions, on top of the storage root.

Stage ``mace`` trains on the untested cohort with the MACE label; stage ``acs`` fine-tunes on the
tested cohort with the ACS label, starting from the MACE weights (``data.STAGES``). Whether a
stage trains at all is the caller's decision (Dagster's code and data versions): ``train_stage``
always trains. It trains into the stage's work folder under the storage root::

    models/<model>/<stage>/runs/<work_key>/
        best.ckpt         the Lightning checkpoint with the best AUROC on the rows that
                          select it (the ``selection`` split by default, ``data.SELECTIONS``)
        weights.pt        its network's state dict, under the benchmark's names
        model_card.md
        last.ckpt         only while the stage is unfinished
        lightning_logs/   the CSV or TensorBoard logs (local storage roots)

The caller's ``work_key`` is the same for a retry or a re-execution of one run and new for a new
run, so only a crashed attempt of the same run resumes (from ``last.ckpt``; with S3 storage it
is uploaded at every epoch start). A finished stage deletes its ``last.ckpt``: it is never
resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch

from acs_pipeline.ingest.subset import iter_subset, read_subset, view_ids
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.registry import build_model
from acs_pipeline.training.checkpoint import BEST, LAST
from acs_pipeline.training.data import (
    SELECTION_LABELS,
    STAGES,
    StageData,
    check_trainable,
    stage_rows,
)
from acs_pipeline.training.fit import TrainResult, fit
from acs_pipeline.training.predict import (
    DEFAULT_PREDICT_MEMORY_MB,
    predict_model,
    predict_parts,
)
from acs_pipeline.training.recipes import StagePlan, adapt

WEIGHTS = "weights.pt"
MODEL_CARD = "model_card.md"


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch in this process (0 leaves torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


def stage_dir(model: str, stage: str, work_key: str) -> str:
    """The work folder of one run of a stage, relative to the storage root."""
    if not work_key or "/" in work_key:
        raise ValueError(f"work_key must be a non-empty name without '/', got {work_key!r}")
    return f"models/{model}/{stage}/runs/{work_key}"


@dataclass
class StageResult:
    """A trained stage: where its files are, how the training went, what it was trained on."""

    model: str
    stage: str
    profile: str
    work_key: str
    checkpoint_uri: str
    weights_uri: str
    model_card_uri: str
    weights_sha256: str
    weights_bytes: int
    n_params: int
    best_val_auroc: float
    best_val_loss: float
    epochs_run: int
    global_step: int
    resumed: bool
    wall_s: float
    samples_per_s: float
    config: dict
    counts: dict
    inputs: dict = field(default_factory=dict)
    selection: str = "selection_split"  # the rows that chose the checkpoint (data.SELECTIONS)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> StageResult:
        d = json.loads(text)
        if set(d) != {f.name for f in fields(cls)}:
            raise ValueError("not a stage result of this training code version (its fields "
                             f"{sorted(d)} differ); materialize the stage's checkpoint again")
        return cls(**d)


def _model_card(res: StageResult) -> str:
    lines = [f"# {res.model} - {res.stage} stage ({res.profile} profile)", "",
             f"- label: {STAGES[res.stage][1].upper()} on the {STAGES[res.stage][0]} cohort",
             f"- parameters: {res.n_params:,}",
             f"- {SELECTION_LABELS[res.selection]} (`{res.selection}`): best AUROC "
             f"{res.best_val_auroc:.4f} (loss {res.best_val_loss:.4f})",
             f"- epochs run: {res.epochs_run}, steps: {res.global_step}, wall time "
             f"{res.wall_s:.1f} s, {res.samples_per_s:.1f} samples/s",
             f"- data: {json.dumps(res.counts)}",
             f"- inputs (data versions): {json.dumps(res.inputs)}",
             f"- weights: `{res.weights_uri}` (sha256 {res.weights_sha256[:16]}...)", "",
             "## Training config", "", "```json", json.dumps(res.config, indent=1, default=str),
             "```", "",
             "Intended use: research benchmark (ACS-BenchWork). Not a medical device."]
    return "\n".join(lines) + "\n"


class UploadProgress(L.Callback):
    """With remote storage, upload ``last.ckpt`` (and ``best.ckpt`` when it changed) at each
    epoch start, so a killed run resumes from the storage root losing at most one epoch."""

    def __init__(self, storage: Storage, base: str, local: Path) -> None:
        self.storage, self.base, self.local = storage, base, local
        self.sent: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # under DDP only rank 0 uploads
            return
        for name in (BEST, LAST):
            path = self.local / name
            if path.exists() and self.sent.get(name) != path.stat().st_mtime:
                self.storage.put_file(f"{self.base}/{name}", path)
                self.sent[name] = path.stat().st_mtime


def train_stage(storage: Storage, p: StagePlan, data: StageData, *, work_key: str,
                inputs: Mapping[str, str], init_weights: Mapping[str, torch.Tensor] | None = None,
                scratch: Path | None = None) -> StageResult:
    """Train one stage in its work folder (resuming a crashed attempt of the same ``work_key``)
    and store its checkpoint, weights and model card there.

    ``inputs`` (data versions) go to the result and the model card; ``init_weights`` are the
    starting weights (the MACE stage's, for ``acs``). With a remote storage root the stage
    trains in a local folder under ``scratch`` (default: the system temp dir) named after the
    work folder, the same on every attempt, so that Lightning's checkpoint state resumes whole.
    """
    check_trainable(data.train_y, data.val_y)
    base = stage_dir(p.model, p.stage, work_key)
    local = storage.local_path(f"{base}/{LAST}")
    remote = local is None
    if remote:
        local = Path(scratch or tempfile.gettempdir()) / "acs-train" / base.replace("/", "--")
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
    else:
        local = local.parent
    try:
        if remote and storage.exists(f"{base}/{LAST}"):
            for name in (BEST, LAST):
                if storage.exists(f"{base}/{name}"):
                    storage.get_file(f"{base}/{name}", local / name)
        torch.manual_seed(p.config.seed)  # the starting weights follow ACS_SEED, like the rest
        core = build_model(p.model, p.profile)
        net = adapt(p.model, core)
        init = None
        if init_weights is not None:
            core.load_state_dict(dict(init_weights))
            init = net.state_dict()
        callbacks = [UploadProgress(storage, base, local)] if remote else []
        tr = fit(net, (data.train_x, data.train_y), (data.val_x, data.val_y), local, p.config,
                 init_state_dict=init, callbacks=callbacks)
        torch.save(core.state_dict(), local / WEIGHTS)  # fit left the best weights in ``net``
        res = _result(storage, p, data, work_key, tr, (local / WEIGHTS).read_bytes(), inputs)
        (local / MODEL_CARD).write_text(_model_card(res))
        if remote:
            for name in (BEST, WEIGHTS, MODEL_CARD):
                storage.put_file(f"{base}/{name}", local / name)
        storage.delete(f"{base}/{LAST}")  # finished: never resumed
    finally:
        if remote:
            shutil.rmtree(local, ignore_errors=True)
    return res


def _result(storage: Storage, p: StagePlan, data: StageData, work_key: str, tr: TrainResult,
            weights: bytes, inputs: Mapping[str, str]) -> StageResult:
    base = stage_dir(p.model, p.stage, work_key)
    return StageResult(
        model=p.model, stage=p.stage, profile=p.profile, work_key=work_key,
        checkpoint_uri=storage.uri(f"{base}/{BEST}"), weights_uri=storage.uri(f"{base}/{WEIGHTS}"),
        model_card_uri=storage.uri(f"{base}/{MODEL_CARD}"),
        weights_sha256=hashlib.sha256(weights).hexdigest(), weights_bytes=len(weights),
        n_params=tr.n_params, best_val_auroc=float(tr.best_val_auroc),
        best_val_loss=float(tr.best_val_loss), epochs_run=tr.epochs_run,
        global_step=tr.global_step, resumed=tr.resumed, wall_s=tr.wall_s,
        samples_per_s=tr.samples_per_s, config=p.config.to_dict(), counts=data.counts(),
        inputs=dict(inputs), selection=data.selection)


def load_stage_weights(storage: Storage, res: StageResult) -> dict[str, torch.Tensor]:
    """A stage's best weights, under the benchmark's names."""
    rel = f"{stage_dir(res.model, res.stage, res.work_key)}/{WEIGHTS}"
    return torch.load(io.BytesIO(storage.read_bytes(rel)), weights_only=True)


def stage_network(storage: Storage, res: StageResult) -> torch.nn.Module:
    """A stage's registry network holding its best weights."""
    net = build_model(res.model, res.profile)
    net.load_state_dict(load_stage_weights(storage, res))
    return net


def predict_stage(storage: Storage, res: StageResult, x: np.ndarray,
                  budget_mb: float = DEFAULT_PREDICT_MEMORY_MB) -> np.ndarray:
    """Probabilities of a stage's best weights on (N, C, 5000) tensors."""
    return predict_model(res.model, stage_network(storage, res), x, budget_mb)


def predict_view(storage: Storage, results: Mapping[str, StageResult], view: str,
                 ids: Collection[str] | None = None, *, prefix: str = "tensors",
                 budget_mb: float = DEFAULT_PREDICT_MEMORY_MB
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Probabilities of each stage in ``results`` (output name -> stage) for the ECGs ``ids``
    of a view (all when ``None``) that have a tensor, reading the view part by part: the sorted
    ids found and each name's probabilities. Memory: one part, one batch within ``budget_mb``.
    """
    nets = {name: (res.model, stage_network(storage, res)) for name, res in results.items()}
    return predict_parts(iter_subset(storage, view, ids, prefix), nets, budget_mb)


def load_stage_data(storage: Storage, view: str, cohort: pl.DataFrame, stage: str, folder: Path,
                    *, max_train: int | None = None, seed: int = 0,
                    prefix: str = "tensors", selection: str = "selection_split") -> StageData:
    """A stage's rows (``data.stage_rows``) with their tensors, read part by part from the view
    into one local file under ``folder`` and memory-mapped: the process holds one part and the
    pages training touches, and DDP ranks map the same file. ``folder`` must outlive training.
    """
    rows = stage_rows(cohort, view_ids(storage, view, prefix), stage, max_train, seed,
                      selection)
    ids = np.concatenate([rows.train_ids, rows.val_ids]).tolist()
    folder.mkdir(parents=True, exist_ok=True)
    x = read_subset(storage, view, ids, prefix, out=folder / f"{stage}-{view}.npy").x
    n = len(rows.train_ids)
    return StageData(rows.train_ids, x[:n], rows.train_y, rows.val_ids, x[n:], rows.val_y,
                     rows.missing_tensors, rows.selection)
