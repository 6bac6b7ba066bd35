"""What a profile says about training model x stage, and the network as training builds it.

``paper`` is the recipe of docs/data-contract.md §4: both stages 50 epochs at the model's batch
size and learning rate (``models/specs.py``); HuBERT-ECG with AdamW and early stopping.
``smoke`` is a CPU-minutes version for the whole graph on the demo cohort (``make demo``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from acs_pipeline.models.registry import build_model
from acs_pipeline.models.specs import PROFILES, model_spec
from acs_pipeline.training.config import TrainConfig

PAPER_EPOCHS = 50
HUBERT_EARLY_STOP = 8  # epochs without a better validation AUROC (the authors' fine-tuning)

# The smoke profile: batches of 32; an epoch covers the stage's training set up to a cap on its
# batches, so the tests' tiny cohort trains proportionally less. The MACE stage is a short
# warm-up on a subsample, validated on a few batches; the ACS stage gets the epochs, per model:
# (epochs, batch cap per epoch, lr), used by both stages. ResNet-18 takes ~110 steps on the
# demo's 341 tested ECGs (24 steps left it below chance). ECG-OMI trains at its paper lr: its
# head (a Linear over 4,800 non-negative flattened features) loses most of its ReLU units within
# a few Adam steps at 1e-3 and predicts a constant. Measured quality and times:
# benchmarks/README.md ("Smoke quality on the demo cohort").
SMOKE_BATCH = 32
SMOKE_MACE = {"max_epochs": 2, "limit_train_batches": 8, "limit_val_batches": 4}
SMOKE_MACE_MAX_TRAIN = 256
SMOKE_ACS: dict[str, tuple[int, int, float]] = {
    "resnet18": (10, 16, 1e-3), "resnet50": (4, 16, 1e-3), "ecg_omi": (4, 16, 1e-4),
    "s4": (3, 8, 3e-3)}
SMOKE_ACS_DEFAULT = (3, 8, 1e-3)  # the HuBERT sizes


def is_hubert(model: str) -> bool:
    return model.startswith("hubert")


@dataclass(frozen=True)
class StagePlan:
    """What the profile says about a stage: the model width profile and the training config;
    ``max_train`` subsamples the stage's training rows."""

    model: str
    stage: str
    profile: str
    config: TrainConfig
    max_train: int | None = None


def plan(model: str, stage: str, profile: str, *, seed: int = 0, accelerator: str = "auto",
         devices: str | int = "auto", strategy: str = "auto", logger: str = "csv",
         tracking_uri: str | None = None, experiment_name: str = "acs-pipeline") -> StagePlan:
    """The plan of ``model``'s ``stage`` (``'mace'`` or ``'acs'``) under ``profile``.

    ``logger``, ``tracking_uri`` and ``experiment_name`` choose the experiment logger
    (``TrainConfig``); they do not change what is trained.
    """
    spec = model_spec(model)
    hubert = is_hubert(model)
    common = dict(seed=seed, accelerator=accelerator, devices=devices, strategy=strategy,
                  lr=spec.lr, optimizer="adamw" if hubert else "adam", logger=logger,
                  tracking_uri=tracking_uri, experiment_name=experiment_name)
    if profile == "paper":
        cfg = TrainConfig(max_epochs=PAPER_EPOCHS, batch_size=spec.batch_size,
                          early_stop_patience=HUBERT_EARLY_STOP if hubert else None, **common)
        return StagePlan(model, stage, profile, cfg)
    if profile == "smoke":
        epochs, cap, lr = SMOKE_ACS.get(model, SMOKE_ACS_DEFAULT)
        if stage == "mace":
            cfg = TrainConfig(batch_size=SMOKE_BATCH, **SMOKE_MACE, **{**common, "lr": lr})
            return StagePlan(model, stage, profile, cfg, max_train=SMOKE_MACE_MAX_TRAIN)
        cfg = TrainConfig(max_epochs=epochs, batch_size=SMOKE_BATCH, limit_train_batches=cap,
                          **{**common, "lr": lr})
        return StagePlan(model, stage, profile, cfg)
    raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")


def adapt(model: str, net: nn.Module) -> nn.Module:
    """Registry network ``net`` of ``model`` as a (B, C, 5000) -> one-logit classifier: HuBERT-ECG
    behind its adapter (5-s crops, test-time augmentation), the others as they are. The
    network stays the adapter's ``model``, so its weights keep the benchmark's names."""
    if is_hubert(model):
        from acs_pipeline.models.hubert import HubertBinary

        return HubertBinary(net)
    return net


def trainable_model(model: str, profile: str) -> nn.Module:
    """The registry's ``model`` at ``profile`` widths, as training builds it (``adapt``)."""
    return adapt(model, build_model(model, profile))
