"""The benchmark's models by name and how the benchmark trains each (no torch import here, so
the Dagster definitions load fast)."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES = (
    "s4",
    "resnet18",
    "resnet50",
    "ecg_omi",
    "hubert",
    "hubert_small",
    "hubert_base",
    "hubert_large",
)
PROFILES = ("paper", "smoke")
# ``hubert``, the graph's HuBERT-ECG, takes its size from the profile: the paper fine-tunes
# HuBERT-ECG large (the authors' finetune.sh); the smoke profile's HuBERT is tiny at any size.
HUBERT_SIZE = {"paper": "large", "smoke": "small"}


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
        name: ModelSpec(name, "ecg_12lead", 64, 1e-5)
        for name in ("hubert", "hubert_small", "hubert_base", "hubert_large")
    },
}


def hubert_size(name: str, profile: str) -> str:
    """The HuBERT-ECG size (small, base, large) that model ``name`` builds under ``profile``."""
    if name == "hubert":
        if profile not in HUBERT_SIZE:
            raise UnknownModelError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        return HUBERT_SIZE[profile]
    if not name.startswith("hubert_"):
        raise UnknownModelError(f"{name!r} is not a HuBERT-ECG model")
    return model_spec(name).name.removeprefix("hubert_")


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
