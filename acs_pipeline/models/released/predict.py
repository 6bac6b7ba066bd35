"""Predicting with a released model loaded into our module, under its protocol
(``LoadedRelease.protocol``; see :mod:`acs_pipeline.models.released`): HuBERT-ECG under
``authors_test_py(_mean)`` through :func:`.protocols.predict_authors_test_py`, everything else (S4
already rebuilt at load under ``authors_prediction_py``) as ``training.predict`` predicts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from acs_pipeline.ingest.transform import VIEWS
from acs_pipeline.io.tensors import TensorSet
from acs_pipeline.models.released import AUTHORS_TEST_PY, AUTHORS_TEST_PY_MEAN
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


def _test_py(loaded: LoadedRelease, parts: Iterable[np.ndarray], budget_mb: float
             ) -> np.ndarray:
    import torch

    from acs_pipeline.models.released.protocols import predict_authors_test_py
    from acs_pipeline.training.predict import predict_batch_size

    net = loaded.module
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    old = next(net.parameters()).device
    aggregation = "mean" if loaded.protocol == AUTHORS_TEST_PY_MEAN else "max"
    batch = predict_batch_size(loaded.info.registry_name, budget_mb)
    try:
        net.to(device).eval()
        out = list(predict_authors_test_py(net, parts, aggregation, batch))
    finally:
        net.to(old)
    return np.concatenate(out) if out else np.empty(0, dtype=np.float64)


def _authors_crops(loaded: LoadedRelease) -> bool:
    return loaded.protocol in (AUTHORS_TEST_PY, AUTHORS_TEST_PY_MEAN)


def predict_released(loaded: LoadedRelease, x: np.ndarray,
                     budget_mb: float = DEFAULT_BUDGET_MB) -> np.ndarray:
    """ACS probabilities (N,) of a released model on (N, C, L) float16/float32 tensors of its view
    (C = 3 for S4 and the CNNs, 12 for HuBERT-ECG; L = 5000 in the pipeline) under its protocol,
    in batches whose activations fit ``budget_mb`` (``training.predict.predict_batch_size``).
    Under ``authors_test_py`` the rows are scored in the given order (it decides the crops)."""
    from acs_pipeline.training.predict import predict_model

    x = _checked(loaded, x)
    if not len(x):
        return np.empty(0, dtype=np.float64)
    if _authors_crops(loaded):
        return _test_py(loaded, [x], budget_mb)
    return predict_model(loaded.info.registry_name, loaded.module, x, budget_mb)


def predict_released_parts(loaded: LoadedRelease, parts: Iterable[TensorSet],
                           budget_mb: float = DEFAULT_BUDGET_MB
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``predict_released`` over tensor sets that arrive one at a time (a view's parts,
    ``ingest.subset.iter_subset``): the sorted ecg ids and their probabilities. Under
    ``authors_test_py`` the ECGs are scored in the order they arrive."""
    from acs_pipeline.training.predict import predict_parts

    def checked() -> Iterator[TensorSet]:
        for part in parts:
            _checked(loaded, part.x)
            yield part

    if _authors_crops(loaded):
        ids: list[np.ndarray] = []

        def arrays() -> Iterator[np.ndarray]:
            for part in checked():
                ids.append(part.ecg_ids)
                yield part.x

        probs = _test_py(loaded, arrays(), budget_mb)
        all_ids = np.concatenate(ids) if ids else np.empty(0, dtype=object)
        order = np.argsort(all_ids, kind="stable")
        return all_ids[order], probs[order]

    nets = {"acs": (loaded.info.registry_name, loaded.module)}
    ids, probs = predict_parts(checked(), nets, budget_mb)
    return ids, probs["acs"]
