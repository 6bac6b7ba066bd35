"""The benchmark's models (S4, ResNet-18/50 1D, ECG-OMI, HuBERT-ECG), the logistic baseline and
a registry that builds any of them by name and profile.

The names below are loaded on first use, so importing :mod:`acs_pipeline.models.specs` does not
import torch.
"""

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


def __getattr__(name: str):
    if name in __all__:
        from acs_pipeline.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'acs_pipeline.models' has no attribute {name!r}")
