"""The authors' prediction scripts as protocols over our modules (names and summary in
:mod:`acs_pipeline.models.released`).

* ``authors_prediction_py``, S4 (:func:`authors_s4`): ``prediction.py`` builds a fresh
  ``S4Model`` (kernel length ``l_max`` 1024), assigns every checkpoint tensor to the parameter or
  buffer of the same name (``param.data = ...``, which leaves the kernel's length at 1024) and
  predicts; its first 5000-sample forward pass therefore doubles the kernel 1024 -> 8192 again,
  rewriting the checkpoint's ``C`` (already corrected for 8192) three times, with ``dA^L``
  recomputed from the checkpoint's state matrices. We load the checkpoint into a fresh module
  keeping the fresh kernel length, then grow it to 5000 samples: the same arithmetic.
* ``authors_test_py`` / ``authors_test_py_mean``, HuBERT-ECG (:func:`predict_authors_test_py`):
  ``test.py`` with ``--tta --downsampling_factor=5`` (batch 64, ``n_augs`` 3) seeds numpy with
  42, reads each ECG as a 10-s window at ``np.random.randint(0, L - 5000 + 1)`` (0 for our
  5000-sample records), flattens the 12 leads and decimates the whole flattened record
  (``scipy.signal.decimate(x, 5)``), then per batch and per augmentation takes, for each ECG in
  order, a time-aligned crop of 500 samples at ``np.random.randint(0, 1000 - 500)``, scores
  ``sigmoid(logits)`` and aggregates over the crops (``max`` as ``test.sh`` runs it, ``mean``
  with the script's default); the ACS probability is column 0. The crops depend on each ECG's
  position in the sequence, so the ECGs are scored in the order given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from acs_pipeline.models.hubert import CROP_SAMPLES, DECIMATION, N_LEADS, decimate
from acs_pipeline.models.registry import build_model

__all__ = [
    "TEST_PY_BATCH",
    "TEST_PY_N_AUGS",
    "TEST_PY_SEED",
    "CropStream",
    "authors_s4",
    "predict_authors_test_py",
    "authors_crop_starts",
    "authors_test_py_inputs",
]

TEST_PY_SEED = 42
TEST_PY_BATCH = 64  # test.sh's batch size: the random crops are drawn batch by batch
TEST_PY_N_AUGS = 3
RECORD_SAMPLES = 5000  # the 10-s window ECGDataset returns with return_full_length
S4_LENGTH = 5000  # the input length of the first forward pass in prediction.py


@torch.no_grad()
def authors_s4(loaded: nn.Module) -> nn.Module:
    """A fresh paper S4 holding ``loaded``'s tensors as ``prediction.py`` holds them after its
    first 5000-sample forward pass (see module doc); ``loaded`` is left unchanged."""
    with torch.random.fork_rng(devices=[]):  # the fresh init is thrown away
        fresh = build_model("s4", "paper")
    own = fresh.state_dict()
    state = {
        k: (own[k] if k.endswith((".omega", ".z")) else v)  # keep the fresh kernel length
        for k, v in loaded.state_dict().items()
    }
    fresh.load_state_dict(state, strict=True)
    fresh.grow(S4_LENGTH)
    return fresh.eval()


class CropStream:
    """The crop starts of ``test.py``, drawn from numpy's legacy generator seeded with 42, for
    ECGs taken in order in batches of ``batch_size``; ``take(n)`` returns (n_augs, n) starts for
    the next ``n`` ECGs, which must be whole batches except for the last call."""

    def __init__(self, n_augs: int = TEST_PY_N_AUGS, batch_size: int = TEST_PY_BATCH,
                 seed: int = TEST_PY_SEED, record_samples: int = RECORD_SAMPLES) -> None:
        self.rng = np.random.RandomState(seed)
        self.n_augs, self.batch_size, self.record_samples = n_augs, batch_size, record_samples
        self.finished = False

    def take(self, n: int) -> np.ndarray:
        if self.finished:
            raise ValueError("the last (partial) batch of test.py's crops was already drawn")
        out = np.empty((self.n_augs, n), dtype=np.int64)
        length = RECORD_SAMPLES // DECIMATION
        crop = CROP_SAMPLES // DECIMATION
        for start in range(0, n, self.batch_size):
            b = min(self.batch_size, n - start)
            self.finished = b < self.batch_size
            for _ in range(b):  # ECGDataset's 10-s window (always 0 for 5000 samples)
                self.rng.randint(0, self.record_samples - RECORD_SAMPLES + 1)
            for aug in range(self.n_augs):  # random_crop: one draw per ECG of the batch
                out[aug, start : start + b] = [self.rng.randint(0, length - crop) for _ in range(b)]
        return out


def authors_crop_starts(n: int, **kwargs: int) -> np.ndarray:
    """(n_augs, n) crop starts (in 100-Hz samples) of ``n`` ECGs scored in order by test.py."""
    return CropStream(**kwargs).take(n)


def authors_test_py_inputs(x12: Tensor) -> Tensor:
    """(B, 12, 5000) 500-Hz ECGs -> (B, 12, 1000) float32: the leads flattened and the whole
    record decimated by 5 as ``scipy.signal.decimate`` does (float64), as ECGDataset does."""
    if x12.ndim != 3 or x12.shape[1] != N_LEADS or x12.shape[2] != RECORD_SAMPLES:
        raise ValueError(
            f"test.py's protocol needs (B, {N_LEADS}, {RECORD_SAMPLES}) ECGs, "
            f"got {tuple(x12.shape)}"
        )
    if not bool(torch.isfinite(x12).all()):
        raise ValueError("test.py's protocol got non-finite samples")
    b = x12.shape[0]
    return decimate(x12.reshape(b, -1)).to(torch.float32).view(b, N_LEADS, -1)


@torch.no_grad()
def _score(net: nn.Module, x: np.ndarray, starts: np.ndarray, aggregation: str,
           device: torch.device) -> np.ndarray:
    full = authors_test_py_inputs(torch.from_numpy(x).to(device).float())
    crop = CROP_SAMPLES // DECIMATION
    rows = torch.arange(len(x), device=device)[:, None, None]
    leads = torch.arange(N_LEADS, device=device)[None, :, None]
    probs = []
    for aug in torch.from_numpy(starts).to(device):
        cols = aug[:, None, None] + torch.arange(crop, device=device)[None, None, :]
        probs.append(torch.sigmoid(net(full[rows, leads, cols].reshape(len(x), -1))))
    stacked = torch.stack(probs)
    agg = stacked.max(dim=0).values if aggregation == "max" else stacked.mean(dim=0)
    return agg[:, 0].double().cpu().numpy()


def predict_authors_test_py(net: nn.Module, parts: Iterable[np.ndarray], aggregation: str = "max",
                    batch_size: int = TEST_PY_BATCH) -> Iterator[np.ndarray]:
    """ACS probabilities of a HuBERT-ECG classifier ``net`` (logits (B, 2)) under test.py's
    protocol, for (n, 12, 5000) arrays that arrive in order: yields the probabilities of every
    ECG once its crops are drawn (whole test.py batches; the rest after the last array).
    ``batch_size`` bounds each forward pass (memory), not the crops' batches."""
    if aggregation not in ("max", "mean"):
        raise ValueError(f"aggregation must be 'max' or 'mean', got {aggregation!r}")
    device = next(net.parameters()).device
    stream = CropStream()
    pending: list[np.ndarray] = []

    def flush(final: bool) -> Iterator[np.ndarray]:
        x = np.concatenate(pending) if pending else np.empty((0, N_LEADS, RECORD_SAMPLES))
        n = len(x) if final else len(x) - len(x) % TEST_PY_BATCH
        pending.clear()
        if n < len(x):
            pending.append(x[n:])
        if n:
            starts = stream.take(n)
            for s in range(0, n, batch_size):
                e = min(s + batch_size, n)
                yield _score(net, x[s:e], starts[:, s:e], aggregation, device)

    for part in parts:
        pending.append(part)
        yield from flush(final=False)
    yield from flush(final=True)
