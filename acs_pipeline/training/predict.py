"""Probabilities of a trained network on (N, C, L) tensors, in eval mode without gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from acs_pipeline.training.data import ArrayDataset
from acs_pipeline.training.module import logits_of
from acs_pipeline.training.recipes import adapt, is_hubert


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


def predict_model(model: str, net: nn.Module, x: np.ndarray) -> np.ndarray:
    """Probabilities of registry model ``model`` on (N, C, 5000) tensors; ``net`` is the
    registry's network (under the benchmark's names), adapted here as training adapts it
    (HuBERT-ECG: the maximum over its test-time crops)."""
    return predict(adapt(model, net), x, batch_size=64 if is_hubert(model) else 256)
