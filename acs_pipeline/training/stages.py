"""The benchmark's two training stages and predictions, on top of storage, tensors and training.

Stage ``mace`` trains on the untested cohort with the MACE label; stage ``acs`` fine-tunes on the
tested cohort with the ACS label, starting from the MACE weights. A stage's output directory is
keyed by everything that determines its result (model, profile, training config, input data
versions, initial weights, code version), so an unchanged stage is never trained twice and an
interrupted one resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from torch import nn

from acs_pipeline.io.storage import Storage
from acs_pipeline.io.tensors import TensorSet
from acs_pipeline.models.registry import build_model, model_spec
from acs_pipeline.models.specs import TRAINING_CODE_VERSION
from acs_pipeline.training import fit as training

STAGES = {"mace": ("untested", "mace"), "acs": ("tested", "acs")}


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch in this process (0 leaves torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


@dataclass(frozen=True)
class StageData:
    train_ids: np.ndarray
    train_x: np.ndarray
    train_y: np.ndarray
    val_ids: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    missing_tensors: int

    def counts(self) -> dict[str, int]:
        return {
            "train_ecgs": len(self.train_y), "train_positives": int(self.train_y.sum()),
            "validation_ecgs": len(self.val_y), "validation_positives": int(self.val_y.sum()),
            "missing_tensors": self.missing_tensors,
        }


def stage_data(cohort: pl.DataFrame, tset: TensorSet, stage: str,
               max_train: int | None = None, seed: int = 0) -> StageData:
    """Rows of a stage's cohort with a label and a tensor, split into train and validation.

    ECGs of the cohort without a tensor (quarantined at ingest) are counted in
    ``missing_tensors``. ``max_train`` subsamples the training rows (smoke profile), seeded.
    """
    which, label = STAGES[stage]
    rows = cohort.filter((pl.col("cohort") == which) & pl.col("split").is_not_null()
                         & pl.col(label).is_not_null())
    pos = {e: i for i, e in enumerate(tset.ecg_ids.tolist())}
    have = rows.filter(pl.col("ecg_id").is_in(list(pos)))
    out = {}
    for split in ("train", "validation"):
        part = have.filter(pl.col("split") == split).sort("ecg_id")
        ids = part["ecg_id"].to_numpy().astype(object)
        y = part[label].to_numpy().astype(np.float32)
        if split == "train" and max_train is not None and len(ids) > max_train:
            keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_train,
                                                              replace=False))
            ids, y = ids[keep], y[keep]
        idx = np.fromiter((pos[e] for e in ids), dtype=np.int64, count=len(ids))
        out[split] = (ids, tset.x[idx], y)
    return StageData(*out["train"], *out["validation"],
                     missing_tensors=len(rows) - len(have))


# The smoke profile: CPU minutes for the whole graph on the demo cohort (``make demo``). Batches of
# 32; an epoch covers the stage's training set up to a cap on its batches, so the tests' tiny
# cohort trains proportionally less. The MACE stage is a short warm-up on a subsample, validated
# on a few batches; the ACS stage gets the epochs, per model: (epochs, batch cap per epoch, lr).
# ResNet-18 takes ~110 steps on the demo's 341 tested ECGs (24 steps left it below chance).
# ECG-OMI trains at its paper lr: its head (a Linear over 4,800 non-negative flattened
# features) loses most of its ReLU units within a few Adam steps at 1e-3 and predicts a constant.
# Measured quality and times: benchmarks/README.md ("Smoke quality on the demo cohort").
SMOKE_BATCH = 32
SMOKE_MACE = {"max_epochs": 2, "limit_train_batches": 8, "limit_val_batches": 4}
SMOKE_MACE_MAX_TRAIN = 256
SMOKE_ACS: dict[str, tuple[int, int, float]] = {
    "resnet18": (10, 16, 1e-3), "resnet50": (4, 16, 1e-3), "ecg_omi": (4, 16, 1e-4),
    "s4": (3, 8, 3e-3)}
SMOKE_ACS_DEFAULT = (3, 8, 1e-3)  # the HuBERT sizes


@dataclass(frozen=True)
class StagePlan:
    """What the profile says about a stage: the model width profile and the training config."""

    model: str
    stage: str
    profile: str
    config: training.TrainConfig
    max_train: int | None = None


def plan(model: str, stage: str, profile: str, *, seed: int = 0, accelerator: str = "auto",
         devices: str | int = "auto", strategy: str = "auto", logger: str = "csv",
         tracking_uri: str | None = None, experiment_name: str = "acs-pipeline") -> StagePlan:
    """The recipe of DATA-CONTRACT section 4 (``paper``) or a CPU-minutes version (``smoke``).

    ``logger``, ``tracking_uri`` and ``experiment_name`` choose the experiment logger
    (``training.TrainConfig``); they do not change what is trained.
    """
    spec = model_spec(model)
    hubert = model.startswith("hubert")
    common = dict(seed=seed, accelerator=accelerator, devices=devices, strategy=strategy,
                  lr=spec.lr, optimizer="adamw" if hubert else "adam", logger=logger,
                  tracking_uri=tracking_uri, experiment_name=experiment_name)
    if profile == "paper":
        cfg = training.TrainConfig(max_epochs=50, batch_size=spec.batch_size,
                                   early_stop_patience=8 if hubert else None, **common)
        return StagePlan(model, stage, profile, cfg)
    if profile == "smoke":
        epochs, cap, lr = SMOKE_ACS.get(model, SMOKE_ACS_DEFAULT)
        if stage == "mace":
            cfg = training.TrainConfig(batch_size=SMOKE_BATCH, **SMOKE_MACE,
                                       **{**common, "lr": lr})
            return StagePlan(model, stage, profile, cfg, max_train=SMOKE_MACE_MAX_TRAIN)
        cfg = training.TrainConfig(max_epochs=epochs, batch_size=SMOKE_BATCH,
                                   limit_train_batches=cap, **{**common, "lr": lr})
        return StagePlan(model, stage, profile, cfg)
    raise ValueError(f"unknown profile {profile!r}; expected 'smoke' or 'paper'")


class _HubertBinary(nn.Module):
    """HuBERT-ECG as a one-logit classifier over (B, 12, 5000) input.

    The head's two logits are for [y, 1 - y]; their difference is the logit of y, so BCE on it
    equals the two-class cross-entropy. Training takes a random 5-s crop, evaluation the maximum
    probability over several crops (test-time augmentation).
    """

    def __init__(self, model: nn.Module, n_crops: int = 3):
        super().__init__()
        self.model = model
        self.n_crops = n_crops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from acs_pipeline.models import hubert

        length = x.shape[-1] - hubert.CROP_SAMPLES
        if self.training:
            start = int(torch.randint(0, length + 1, (1,)).item())
            logits = self.model(hubert.hubert_input(x, start))
            return logits[:, 0] - logits[:, 1]
        starts = np.linspace(0, length, self.n_crops).astype(int)
        diffs = [(lambda lg: lg[:, 0] - lg[:, 1])(self.model(hubert.hubert_input(x, int(s))))
                 for s in starts]
        return torch.stack(diffs).max(dim=0).values


def trainable_model(model: str, profile: str) -> nn.Module:
    """The registry's model, adapted to (B, C, 5000) -> one logit where needed."""
    net = build_model(model, profile)
    return _HubertBinary(net) if model.startswith("hubert") else net


def core_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the benchmark's names (without our adapter's prefix)."""
    return (net.model if isinstance(net, _HubertBinary) else net).state_dict()


@dataclass
class StageResult:
    model: str
    stage: str
    profile: str
    run_key: str
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
    reused: bool
    wall_s: float
    samples_per_s: float
    config: dict
    counts: dict
    inputs: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)


def run_key(p: StagePlan, inputs: Mapping[str, str], init_sha: str | None) -> str:
    blob = json.dumps({"plan": [p.model, p.stage, p.profile, p.max_train],
                       "config": p.config.hashed_dict(), "inputs": dict(sorted(inputs.items())),
                       "init": init_sha, "code": TRAINING_CODE_VERSION}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _model_card(res: StageResult) -> str:
    lines = [f"# {res.model} - {res.stage} stage ({res.profile} profile)", "",
             f"- label: {STAGES[res.stage][1].upper()} on the {STAGES[res.stage][0]} cohort",
             f"- parameters: {res.n_params:,}",
             f"- best validation AUROC: {res.best_val_auroc:.4f} (loss {res.best_val_loss:.4f})",
             f"- epochs run: {res.epochs_run}, steps: {res.global_step}, wall time "
             f"{res.wall_s:.1f} s, {res.samples_per_s:.1f} samples/s",
             f"- data: {json.dumps(res.counts)}",
             f"- inputs (data versions): {json.dumps(res.inputs)}",
             f"- weights: `{res.weights_uri}` (sha256 {res.weights_sha256[:16]}...)", "",
             "## Training config", "", "```json", json.dumps(res.config, indent=1, default=str),
             "```", "",
             "Intended use: research benchmark (ACS-BenchWork). Not a medical device."]
    return "\n".join(lines) + "\n"


class _UploadProgress(L.Callback):
    """With remote storage, upload ``last.ckpt`` and the run state at each epoch start, so a
    killed run resumes from the storage root losing at most one epoch."""

    def __init__(self, storage: Storage, base: str, local: Path):
        self.storage, self.base, self.local = storage, base, local

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # under DDP only rank 0 uploads
            return
        for name in ("last.ckpt", "run_state.json"):
            if (self.local / name).exists():
                self.storage.put_file(f"{self.base}/{name}", self.local / name)


def train_stage(storage: Storage, p: StagePlan, data: StageData, *,
                inputs: Mapping[str, str], init_weights: Mapping[str, torch.Tensor] | None = None,
                init_sha: str | None = None, scratch: Path | None = None) -> StageResult:
    """Train (or resume, or reuse) one stage and store its checkpoint under the storage root."""
    training.check_trainable(data.train_y, data.val_y)
    key = run_key(p, inputs, init_sha)
    base = f"models/{p.model}/{p.stage}/{key}"
    result_rel = f"{base}/result.json"
    if storage.exists(result_rel):
        res = StageResult(**json.loads(storage.read_bytes(result_rel)))
        return replace(res, reused=True)
    local = storage.local_path(base)
    tmp = None
    if local is None:
        tmp = Path(tempfile.mkdtemp(prefix="acs-train-", dir=scratch))
        local = tmp
        if storage.exists(f"{base}/last.ckpt"):
            storage.get_file(f"{base}/last.ckpt", local / "last.ckpt")
        if storage.exists(f"{base}/run_state.json"):
            storage.get_file(f"{base}/run_state.json", local / "run_state.json")
    local.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(p.config.seed)  # the starting weights follow ACS_SEED, like the rest
    net = trainable_model(p.model, p.profile)
    init = None
    if init_weights is not None:
        target = net.model if isinstance(net, _HubertBinary) else net
        target.load_state_dict(dict(init_weights))
        init = net.state_dict()
    callbacks = [_UploadProgress(storage, base, local)] if tmp is not None else []
    tr = training.fit(net, (data.train_x, data.train_y), (data.val_x, data.val_y), local,
                      p.config, init_state_dict=init, callbacks=callbacks)
    weights_path = local / "weights.pt"
    torch.save(core_state_dict(net), weights_path)
    raw = weights_path.read_bytes()
    res = StageResult(
        model=p.model, stage=p.stage, profile=p.profile, run_key=key,
        checkpoint_uri=storage.uri(f"{base}/best.ckpt"), weights_uri=storage.uri(
            f"{base}/weights.pt"), model_card_uri=storage.uri(f"{base}/model_card.md"),
        weights_sha256=hashlib.sha256(raw).hexdigest(), weights_bytes=len(raw),
        n_params=tr.n_params, best_val_auroc=float(tr.best_val_auroc),
        best_val_loss=float(tr.best_val_loss), epochs_run=tr.epochs_run,
        global_step=tr.global_step, resumed=tr.resumed, reused=False, wall_s=tr.wall_s,
        samples_per_s=tr.samples_per_s, config=p.config.to_dict(), counts=data.counts(),
        inputs=dict(inputs))
    (local / "model_card.md").write_text(_model_card(res))
    if tmp is not None:
        for name in ("best.ckpt", "last.ckpt", "weights.pt", "model_card.md"):
            src = tr.best_path if name == "best.ckpt" else local / name
            if Path(src).exists():
                storage.put_file(f"{base}/{name}", src)
        shutil.rmtree(tmp, ignore_errors=True)
    elif Path(tr.best_path).resolve() != (local / "best.ckpt").resolve():
        shutil.copyfile(tr.best_path, local / "best.ckpt")
    storage.write_bytes(result_rel, res.to_json().encode())
    return res


def load_stage_weights(storage: Storage, res: StageResult) -> dict[str, torch.Tensor]:
    rel = f"models/{res.model}/{res.stage}/{res.run_key}/weights.pt"
    return torch.load(io.BytesIO(storage.read_bytes(rel)), weights_only=True)


def predict_model(model: str, net: nn.Module, x: np.ndarray) -> np.ndarray:
    """Probabilities of registry model ``model`` on (N, C, 5000) tensors. ``net`` is the core
    network under the benchmark's names (HuBERT-ECG is wrapped here: 5-s crops, maximum over
    the test-time crops) or already the one-logit adapter of :func:`trainable_model`."""
    if model.startswith("hubert") and not isinstance(net, _HubertBinary):
        net = _HubertBinary(net)
    batch = 64 if model.startswith("hubert") else 256
    return training.predict(net, x, batch_size=batch)


def predict_stage(storage: Storage, res: StageResult, x: np.ndarray) -> np.ndarray:
    """Probabilities of a stage's best weights on (N, C, 5000) tensors."""
    net = trainable_model(res.model, res.profile)
    target = net.model if isinstance(net, _HubertBinary) else net
    target.load_state_dict(load_stage_weights(storage, res))
    return predict_model(res.model, net, x)
