"""The benchmark's models by name and how the benchmark trains each (no torch import here, so
the Dagster definitions load fast)."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES = (
    "s4",
    "resnet18",
    "resnet50",
    "ecg_omi",
    "hubert_small",
    "hubert_base",
    "hubert_large",
)
PROFILES = ("paper", "smoke")


class UnknownModelError(ValueError):
    """A model name or profile outside the registry."""


@dataclass(frozen=True)
class ModelSpec:
    """How the benchmark trains one model: input view, batch size and learning rate."""

    name: str
    view: str
    batch_size: int
    lr: float


_SPECS: dict[str, ModelSpec] = {
    "s4": ModelSpec("s4", "ecg_3by4", 32, 1e-4),
    "resnet18": ModelSpec("resnet18", "ecg_3by4", 64, 1e-4),
    "resnet50": ModelSpec("resnet50", "ecg_3by4", 64, 1e-4),
    "ecg_omi": ModelSpec("ecg_omi", "ecg_3by4", 64, 1e-4),
    # HuBERT-ECG fine-tuning: AdamW lr 1e-5, batch 64 (the authors' ACS fine-tuning command;
    # the rest of its recipe: training/recipes.py, docs/recipes.md).
    **{
        f"hubert_{size}": ModelSpec(f"hubert_{size}", "ecg_12lead", 64, 1e-5)
        for size in ("small", "base", "large")
    },
}


def model_spec(name: str) -> ModelSpec:
    """The training recipe of model ``name`` (one of ``MODEL_NAMES``)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}"
        ) from None


# The code version of the two-stage training recipe (acs_pipeline/training): bump it when a
# change to the training code should retrain the checkpoints. stages-3: the paper profile
# follows the authors' scripts (docs/recipes.md); the smoke profile trains bit-identical weights.
TRAINING_CODE_VERSION = "stages-3"
