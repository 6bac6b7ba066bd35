"""Predicting with a released model loaded into our module."""

from __future__ import annotations

import numpy as np

from acs_pipeline.ingest.transform import VIEWS
from acs_pipeline.models.released.load import LoadedRelease, ReleasedWeightsError

__all__ = ["predict_released"]


def predict_released(loaded: LoadedRelease, x: np.ndarray) -> np.ndarray:
    """ACS probabilities (N,) of a released model on (N, C, L) float16/float32 tensors of its view
    (C = 3 for S4 and ResNet-18, 12 for HuBERT-ECG; L = 5000 in the pipeline). HuBERT-ECG takes
    the maximum over three 5-s crops, as the benchmark's HuBERT predictions do."""
    from acs_pipeline.training.predict import predict_model

    channels = VIEWS[loaded.info.view]
    if x.ndim != 3 or x.shape[1] != channels:
        raise ReleasedWeightsError(
            f"{loaded.info.name}: expected tensors of shape (N, {channels}, L) "
            f"({loaded.info.view}), got {tuple(x.shape)}"
        )
    if not len(x):
        return np.empty(0, dtype=np.float64)
    return predict_model(loaded.info.registry_name, loaded.module, x)
