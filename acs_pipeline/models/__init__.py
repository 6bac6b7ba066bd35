"""The benchmark's models (S4, ResNet-18/50 1D, ECG-OMI, HuBERT-ECG), the logistic baseline and
a registry that builds any of them by name and profile."""

from acs_pipeline.models.registry import (
    MODEL_NAMES,
    PROFILES,
    ModelSpec,
    UnknownModelError,
    build_model,
    model_spec,
    reference_layout,
    reference_parameters,
)

__all__ = [
    "MODEL_NAMES",
    "PROFILES",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "model_spec",
    "reference_layout",
    "reference_parameters",
]
