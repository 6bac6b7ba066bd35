"""Probabilities of a trained network on (N, C, L) tensors, in eval mode without gradients.

Batch sizes follow a memory budget (``predict_batch_size``), and ``predict_parts`` predicts a
view part by part, so neither the view's size nor the model's width decides the peak memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from acs_pipeline.io.tensors import TensorSet
from acs_pipeline.training.data import ArrayDataset
from acs_pipeline.training.module import logits_of
from acs_pipeline.training.recipes import adapt


def predict(
    model: nn.Module,
    x: np.ndarray,
    batch_size: int = 256,
    transform: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    autocast_bf16: bool = False,
) -> np.ndarray:
    """Probabilities (N,) for (N, C, L) samples of a one-logit ``model``.

    ``transform`` maps each float32 batch (on ``device``) before the model. The default device
    is CUDA when present; ``autocast_bf16`` is off by default because bf16 logits tie often,
    which biases AUROC. The model's device and train/eval mode are restored afterwards.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ds = ArrayDataset(x, None, "predict", None if dev.type == "cuda" else np.float32)
    params = list(model.parameters())
    old_dev = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.to(dev).eval()
    out = np.empty(len(ds), dtype=np.float64)
    try:
        with torch.inference_mode():
            for start in range(0, len(ds), batch_size):
                idx = range(start, min(start + batch_size, len(ds)))
                xb = ds[list(idx)].to(dev).float()  # float16 is converted on the GPU
                if transform is not None:
                    xb = transform(xb)
                ctx = (
                    torch.autocast(dev.type, dtype=torch.bfloat16)
                    if autocast_bf16
                    else contextlib.nullcontext()
                )
                with ctx:
                    logits = logits_of(model, xb)
                out[start : start + len(idx)] = torch.sigmoid(logits.float()).cpu().numpy()
    finally:
        model.to(old_dev).train(was_training)
    return out


# Memory one ECG costs in eval-mode prediction (float32 activations, paper widths, 5000
# samples, CPU), from the growth of peak RSS between batches of 2 and 6 in fresh processes:
# ``python benchmarks/scale.py --calibrate`` (figures in benchmarks/README.md, "Memory at
# scale"). A batch is sized with ``MEMORY_MARGIN`` on top (allocator caching and
# fragmentation); the smoke widths cost less, so the budget is conservative for them.
PREDICT_MB_PER_ECG = {"resnet18": 2.3, "resnet50": 18.4, "ecg_omi": 2.3, "s4": 73.4,
                      "hubert_small": 18.8, "hubert_base": 14.2, "hubert_large": 13.1}
PREDICT_MB_PER_ECG["hubert"] = max(PREDICT_MB_PER_ECG[f"hubert_{s}"] for s in ("small", "large"))
MEMORY_MARGIN = 1.5
DEFAULT_PREDICT_MEMORY_MB = 2048
MAX_PREDICT_BATCH = 256


def predict_batch_size(model: str, budget_mb: float = DEFAULT_PREDICT_MEMORY_MB,
                       cap: int = MAX_PREDICT_BATCH) -> int:
    """The largest batch whose activations (with ``MEMORY_MARGIN``) fit ``budget_mb`` for
    registry model ``model``, at least 1 and at most ``cap``."""
    if budget_mb <= 0:
        raise ValueError(f"the prediction memory budget must be positive, got {budget_mb} MB")
    if model not in PREDICT_MB_PER_ECG:
        raise ValueError(f"no prediction memory figure for model {model!r}; expected one of "
                         f"{sorted(PREDICT_MB_PER_ECG)}")
    per_ecg = MEMORY_MARGIN * PREDICT_MB_PER_ECG[model]
    return max(1, min(cap, math.floor(budget_mb / per_ecg)))


def predict_model(model: str, net: nn.Module, x: np.ndarray,
                  budget_mb: float = DEFAULT_PREDICT_MEMORY_MB) -> np.ndarray:
    """Probabilities of registry model ``model`` on (N, C, 5000) tensors; ``net`` is the
    registry's network (under the benchmark's names), adapted here as training adapts it
    (HuBERT-ECG: the maximum over its test-time crops), in batches that fit ``budget_mb``."""
    return predict(adapt(model, net), x, batch_size=predict_batch_size(model, budget_mb))


def predict_parts(parts: Iterable[TensorSet], nets: Mapping[str, tuple[str, nn.Module]],
                  budget_mb: float = DEFAULT_PREDICT_MEMORY_MB
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Probabilities of several networks over tensor sets that arrive one at a time (a view's
    parts, ``ingest.subset.iter_subset``): ``nets`` maps an output name to (registry model,
    network). Returns the ecg ids, sorted, and each name's probabilities in that order.

    Rows are gathered across parts into full batches (small parts would otherwise make small
    batches); memory holds one part and one batch of the smallest budgeted size.
    """
    chunk = min((predict_batch_size(m, budget_mb) for m, _ in nets.values()), default=1)
    ids: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {name: [] for name in nets}
    pending: list[TensorSet] = []

    def flush(final: bool) -> None:
        x = np.concatenate([p.x for p in pending])
        e = np.concatenate([p.ecg_ids for p in pending])
        n = len(x) if final else len(x) - len(x) % chunk
        pending.clear()
        if n < len(x):
            pending.append(TensorSet(e[n:], x[n:].copy()))
        if n:
            ids.append(e[:n])
            for name, (model, net) in nets.items():
                probs[name].append(predict_model(model, net, x[:n], budget_mb))

    held = 0
    for part in parts:
        pending.append(part)
        held += len(part)
        if held >= chunk:
            flush(final=False)
            held = sum(len(p) for p in pending)
    if held:
        flush(final=True)
    if not ids:
        return np.empty(0, dtype=object), {name: np.empty(0) for name in nets}
    all_ids = np.concatenate(ids)
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], {name: np.concatenate(p)[order] for name, p in probs.items()}
