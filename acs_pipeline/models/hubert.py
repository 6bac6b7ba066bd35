"""HuBERT-ECG (Coppola et al.) with the benchmark's ACS classification head.

The backbone is transformers' ``HubertModel`` built from a config only (never downloaded): a
5-layer convolutional feature encoder (kernels 10,3,3,2,2, strides 4,2,2,2,2, 512 channels,
group norm on the first layer, no conv bias), feature projection, a weight-normalised
positional convolution (128 taps, 16 groups) and a post-LayerNorm transformer encoder. The head
is mean-pool over frames -> dropout -> ``Linear(hidden, 1024)`` -> tanh -> ``Linear(1024, 2)``.
State-dict names (``hubert_ecg.*``, ``classifier.*``) and shapes match the released weights.

Conventions
-----------
* Input: 6000 samples = a 5-s crop (2500 samples at 500 Hz) of each of the 12 leads, laid lead
  after lead (30,000 samples), then decimated by 5 to 100 Hz with ``scipy.signal.decimate``
  (order-8 Chebyshev I anti-alias filter applied forwards and backwards, then every 5th sample),
  on the concatenated signal exactly as HuBERT-ECG's own data pipeline does.
* Targets are two columns ``[y, 1 - y]``: logit/class index 0 is the positive class (ACS). The
  probability of ACS is ``softmax(logits)[:, 0]``; ``HubertBinary`` trains and predicts it as
  one logit, with test-time augmentation (the maximum over several crops).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from scipy import signal
from torch import Tensor, nn
from transformers import HubertConfig
from transformers.models.hubert.modeling_hubert import HubertModel

__all__ = [
    "CROP_SAMPLES",
    "DECIMATION",
    "INPUT_SAMPLES",
    "N_LEADS",
    "HuBERTForECGClassification",
    "HubertBinary",
    "HubertInputError",
    "convert_weight_norm_keys",
    "hubert_config",
    "hubert_input",
    "weight_norm_spelling",
]

N_LEADS = 12
CROP_SAMPLES = 2500  # 5 s at 500 Hz
DECIMATION = 5  # 500 Hz -> 100 Hz
INPUT_SAMPLES = N_LEADS * CROP_SAMPLES // DECIMATION  # 6000
CLASSIFIER_HIDDEN = 1024
N_CLASSES = 2

_SIZES: dict[str, dict[str, int]] = {
    "small": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "large": {"hidden_size": 960, "num_hidden_layers": 16, "num_attention_heads": 12},
}

_POS_CONV = "encoder.pos_conv_embed.conv."
_LEGACY_TO_PARAMETRIZED = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


class HubertInputError(ValueError):
    """An input to the HuBERT-ECG pipeline (waveform, crop, labels, size) is not as expected."""


def hubert_config(size: str, smoke: bool = False) -> HubertConfig:
    """The HuBERT-ECG backbone config for ``size`` in {small, base, large}.

    ``smoke=True`` gives a tiny model with the same structure (and the same 6000-sample input)
    for CPU tests: 16 conv channels, hidden 32, 2 layers, a 16-tap positional convolution.
    Dropouts and LayerDrop stay at transformers' defaults (0.1); masking is off (fine-tuning).
    """
    if size not in _SIZES:
        raise HubertInputError(f"unknown HuBERT-ECG size {size!r}; expected one of {list(_SIZES)}")
    dims = dict(_SIZES[size])
    conv_dim = 512
    extra: dict[str, Any] = {}
    if smoke:
        dims = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
        conv_dim = 16
        extra = {"num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
    return HubertConfig(
        **dims,
        intermediate_size=4 * dims["hidden_size"],
        conv_dim=(conv_dim,) * 5,
        conv_kernel=(10, 3, 3, 2, 2),
        conv_stride=(4, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        feat_proj_layer_norm=True,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        mask_time_length=1,
        num_labels=N_CLASSES,
        classifier_hidden_size=CLASSIFIER_HIDDEN,
        classifier_dropout_prob=0.1,
        **extra,
    )


def convert_weight_norm_keys(state_dict: dict[str, Any], parametrized: bool) -> dict[str, Any]:
    """Rename the positional convolution's weight-norm tensors in ``state_dict`` (in place, and
    returned) to one spelling: ``...conv.parametrizations.weight.original0/original1`` (torch's
    parametrisation API) when ``parametrized``, else legacy ``...conv.weight_g/weight_v``."""
    mapping = _LEGACY_TO_PARAMETRIZED
    if not parametrized:
        mapping = {new: old for old, new in mapping.items()}
    for key in [k for k in state_dict if _POS_CONV in k]:
        head, tail = key.split(_POS_CONV, 1)
        if tail in mapping:
            state_dict[head + _POS_CONV + mapping[tail]] = state_dict.pop(key)
    return state_dict


def weight_norm_spelling(state_dict: dict[str, Any]) -> str:
    """How ``state_dict`` spells the positional convolution's weight norm: ``legacy``
    (``weight_g``), ``parametrized`` (``parametrizations.weight.original0``), both joined by
    ``+``, or ``none``."""
    spellings = [
        name
        for name, tail in (
            ("legacy", "weight_g"),
            ("parametrized", _LEGACY_TO_PARAMETRIZED["weight_g"]),
        )
        if any(k.endswith(_POS_CONV + tail) for k in state_dict)
    ]
    return "+".join(spellings) or "none"


class HuBERTForECGClassification(nn.Module):
    """HuBERT-ECG backbone (``self.hubert_ecg``) plus the ACS head (``self.classifier``).

    ``forward(x)`` takes (B, 6000) (see :func:`hubert_input`) and returns logits (B, 2) for
    ``[ACS, not ACS]``. Loading a state dict accepts either weight-norm spelling.
    """

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        config.mask_time_prob = 0.0  # fine-tuning never masks (and has no masked_spec_embed)
        config.mask_feature_prob = 0.0
        self.config = config
        self.hubert_ecg = HubertModel(config)
        hidden = getattr(config, "classifier_hidden_size", CLASSIFIER_HIDDEN)
        self.classifier_dropout = nn.Dropout(getattr(config, "classifier_dropout_prob", 0.1))
        self.classifier = nn.Sequential(
            nn.Linear(config.hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, N_CLASSES)
        )
        self._parametrized = any(
            "parametrizations.weight.original0" in k for k in self.hubert_ecg.state_dict()
        )
        self.register_load_state_dict_pre_hook(self._convert_weight_norm)

    def _convert_weight_norm(self, module: nn.Module, state_dict: dict[str, Any], *_: Any) -> None:
        convert_weight_norm_keys(state_dict, parametrized=self._parametrized)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if x.ndim != 2:
            raise HubertInputError(f"expected input of shape (B, samples), got {tuple(x.shape)}")
        hidden = self.hubert_ecg(x, attention_mask=attention_mask, return_dict=True)
        states = hidden.last_hidden_state  # (B, frames, hidden)
        if attention_mask is None:
            pooled = states.mean(dim=1)
        else:
            keep = self.hubert_ecg._get_feature_vector_attention_mask(
                states.shape[1], attention_mask
            )
            keep = keep.unsqueeze(-1).to(states.dtype)
            pooled = (states * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return self.classifier(self.classifier_dropout(pooled))


def hubert_input(x12: Tensor, crop_start: int) -> Tensor:
    """(B, 12, L) 500-Hz 12-lead ECGs -> (B, 6000) float32 model input: the 2500-sample crop
    starting at ``crop_start`` of every lead, leads concatenated in order, decimated by 5 with
    ``scipy.signal.decimate`` (see module doc). Filters on the CPU in float64; the result is put
    back on the input's device."""
    if x12.ndim != 3 or x12.shape[1] != N_LEADS:
        raise HubertInputError(f"expected 12-lead ECGs of shape (B, 12, L), got {tuple(x12.shape)}")
    length = x12.shape[-1]
    if not 0 <= crop_start <= length - CROP_SAMPLES:
        raise HubertInputError(
            f"crop_start {crop_start} outside [0, {length - CROP_SAMPLES}] for {length} samples"
        )
    crop = x12[:, :, crop_start : crop_start + CROP_SAMPLES].reshape(x12.shape[0], -1)
    values = crop.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist()
        raise HubertInputError(f"non-finite samples in the crop of batch rows {bad}")
    decimated = signal.decimate(values, DECIMATION, ftype="iir", axis=-1, zero_phase=True)
    return torch.from_numpy(np.ascontiguousarray(decimated)).to(x12.device, torch.float32)


class HubertBinary(nn.Module):
    """HuBERT-ECG as a one-logit classifier over (B, 12, L) 500-Hz input: the logit of ACS.

    The head's two logits are for ``[ACS, not ACS]``; their difference is the logit of ACS
    (its sigmoid is ``softmax(logits)[:, 0]``), so BCE-with-logits on it equals the two-class
    cross-entropy. Training takes one random 5-s crop per batch; evaluation takes the maximum
    over ``n_crops`` evenly spaced crops, the first at 0 and the last at ``L - 2500``
    (test-time augmentation).
    """

    def __init__(self, model: nn.Module, n_crops: int = 3) -> None:
        super().__init__()
        self.model = model
        self.n_crops = n_crops

    def _logit(self, x12: Tensor, start: int) -> Tensor:
        logits = self.model(hubert_input(x12, start))
        return logits[:, 0] - logits[:, 1]

    def forward(self, x12: Tensor) -> Tensor:
        length = x12.shape[-1] - CROP_SAMPLES
        if self.training:
            return self._logit(x12, int(torch.randint(0, length + 1, (1,)).item()))
        starts = np.linspace(0, length, self.n_crops).astype(int)
        return torch.stack([self._logit(x12, int(s)) for s in starts]).max(dim=0).values
