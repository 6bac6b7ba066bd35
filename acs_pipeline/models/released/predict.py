"""Predicting with a released model loaded into our module."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from acs_pipeline.ingest.transform import VIEWS
from acs_pipeline.io.tensors import TensorSet
from acs_pipeline.models.released.load import LoadedRelease, ReleasedWeightsError

__all__ = ["predict_released", "predict_released_parts"]

# the memory budget of a prediction batch when the caller names none (training.predict's)
DEFAULT_BUDGET_MB = 2048


def _checked(loaded: LoadedRelease, x: np.ndarray) -> np.ndarray:
    channels = VIEWS[loaded.info.view]
    if x.ndim != 3 or x.shape[1] != channels:
        raise ReleasedWeightsError(
            f"{loaded.info.name}: expected tensors of shape (N, {channels}, L) "
            f"({loaded.info.view}), got {tuple(x.shape)}"
        )
    return x


def predict_released(loaded: LoadedRelease, x: np.ndarray,
                     budget_mb: float = DEFAULT_BUDGET_MB) -> np.ndarray:
    """ACS probabilities (N,) of a released model on (N, C, L) float16/float32 tensors of its view
    (C = 3 for S4 and ResNet-18, 12 for HuBERT-ECG; L = 5000 in the pipeline), in batches whose
    activations fit ``budget_mb`` (``training.predict.predict_batch_size``). HuBERT-ECG takes
    the maximum over three 5-s crops, as the benchmark's HuBERT predictions do."""
    from acs_pipeline.training.predict import predict_model

    x = _checked(loaded, x)
    if not len(x):
        return np.empty(0, dtype=np.float64)
    return predict_model(loaded.info.registry_name, loaded.module, x, budget_mb)


def predict_released_parts(loaded: LoadedRelease, parts: Iterable[TensorSet],
                           budget_mb: float = DEFAULT_BUDGET_MB
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``predict_released`` over tensor sets that arrive one at a time (a view's parts,
    ``ingest.subset.iter_subset``): the sorted ecg ids and their probabilities."""
    from acs_pipeline.training.predict import predict_parts

    def checked() -> Iterator[TensorSet]:
        for part in parts:
            _checked(loaded, part.x)
            yield part

    nets = {"acs": (loaded.info.registry_name, loaded.module)}
    ids, probs = predict_parts(checked(), nets, budget_mb)
    return ids, probs["acs"]
