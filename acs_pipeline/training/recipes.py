"""What a profile says about training model x stage, and the network as training builds it.

``paper`` is the authors' recipe, tabled setting by setting with the script line each comes
from in docs/recipes.md (acs_pipeline_tests/training/test_recipes.py pins it):

* CNNs and S4 (``main.py``/``src/lightning.py``): both stages 50 epochs at the model's batch
  size and learning rate (``models/specs.py``), Adam, ``ReduceLROnPlateau(optimizer)`` at
  torch's defaults (patience 10, factor 0.1, on the validation loss).
* HuBERT-ECG (``finetune.sh``, ACS line; ``finetune.py``): fine-tuned on ACS only from the
  self-supervised pretrained backbone, 7,000 steps, batch 64, validation every 50 steps,
  early stopping after 8 validations without a better AUROC, class-weighted BCE, AdamW
  (betas 0.9/0.98, eps 1e-9, weight decay 0.01), linear warm-up (8 %) and decay, all blocks of
  the size unfrozen, the conv feature encoder frozen. There is no MACE stage: the graph's
  ``mace`` stage of a HuBERT model is a pass-through (``StagePlan.train`` is False) whose
  weights are the pretrained initialisation, which the ``acs`` stage starts from like every
  other model's.

``smoke`` is a CPU-minutes version for the whole graph on the demo cohort (``make demo``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from acs_pipeline.models.registry import build_model
from acs_pipeline.models.specs import PROFILES, hubert_size, model_spec
from acs_pipeline.training.config import TrainConfig

PAPER_EPOCHS = 50
PAPER_PLATEAU_PATIENCE = 10  # torch's default: the authors' ReduceLROnPlateau(optimizer)
# HuBERT-ECG fine-tuning (finetune.sh ACS line and finetune.py's constants; docs/recipes.md)
HUBERT_PAPER: dict[str, Any] = {
    "max_epochs": -1, "max_steps": 7000, "val_check_interval": 50, "early_stop_patience": 8,
    "early_stop_min_delta": 1e-3, "betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.01,
    "schedule": "linear", "warmup_frac": 0.08, "pos_weight": True, "optimizer": "adamw"}
HUBERT_BLOCKS = {"small": 8, "base": 12, "large": 16}  # every transformer block of each size

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
SMOKE_PLATEAU_PATIENCE = 5  # the smoke profile's settings stay as they were


def is_hubert(model: str) -> bool:
    return model.startswith("hubert")


@dataclass(frozen=True)
class StagePlan:
    """What the profile says about a stage: the model width profile and the training config;
    ``max_train`` subsamples the stage's training rows. ``init`` is where the starting weights
    come from: ``'previous'`` (the MACE stage's, for ``acs``), ``'pretrained'`` (the
    self-supervised HuBERT-ECG backbone) or ``'random'``. ``train=False``: a pass-through
    stage whose weights are its starting weights, untrained."""

    model: str
    stage: str
    profile: str
    config: TrainConfig
    max_train: int | None = None
    init: str = "random"
    train: bool = True


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
    if stage not in ("mace", "acs"):
        raise ValueError(f"unknown stage {stage!r}; expected 'mace' or 'acs'")
    after = "previous" if stage == "acs" else "random"
    if profile == "paper" and hubert:
        blocks = HUBERT_BLOCKS[hubert_size(model, profile)]
        cfg = TrainConfig(batch_size=spec.batch_size, unfrozen_blocks=blocks,
                          **{**common, **HUBERT_PAPER})
        if stage == "mace":  # fine-tuned on ACS only: the MACE stage passes the init through
            return StagePlan(model, stage, profile, cfg, init="pretrained", train=False)
        return StagePlan(model, stage, profile, cfg, init="previous")
    if profile == "paper":
        cfg = TrainConfig(max_epochs=PAPER_EPOCHS, batch_size=spec.batch_size,
                          plateau_patience=PAPER_PLATEAU_PATIENCE, **common)
        return StagePlan(model, stage, profile, cfg, init=after)
    if profile == "smoke":
        epochs, cap, lr = SMOKE_ACS.get(model, SMOKE_ACS_DEFAULT)
        smoke = {**common, "lr": lr, "plateau_patience": SMOKE_PLATEAU_PATIENCE}
        if stage == "mace":
            cfg = TrainConfig(batch_size=SMOKE_BATCH, **SMOKE_MACE, **smoke)
            return StagePlan(model, stage, profile, cfg, max_train=SMOKE_MACE_MAX_TRAIN)
        cfg = TrainConfig(max_epochs=epochs, batch_size=SMOKE_BATCH, limit_train_batches=cap,
                          **smoke)
        return StagePlan(model, stage, profile, cfg, init=after)
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
