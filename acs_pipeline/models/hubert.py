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
import functools
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
    "PAPER_DROPOUT",
    "convert_weight_norm_keys",
    "decimate",
    "hubert_config",
    "hubert_input",
    "hubert_inputs",
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


# ``finetune.py``: p = 0.1 + DROPOUT_DYNAMIC_REG_FACTOR (0.05) * model_dropout_mult (-2) = 0.0
PAPER_DROPOUT: dict[str, float] = {
    "hidden_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
    "final_dropout": 0.0, "attention_dropout": 0.1, "layerdrop": 0.0}
# Keys of the authors' pretraining checkpoints that fine-tuning drops (``finetune.py`` loads
# with strict=False; their classification wrapper deletes these modules).
PRETRAINING_ONLY = ("final_proj.", "label_embedding", "masked_spec_embed")


class HubertInputError(ValueError):
    """An input to the HuBERT-ECG pipeline (waveform, crop, labels, size) is not as expected."""


def hubert_config(size: str, smoke: bool = False) -> HubertConfig:
    """The HuBERT-ECG backbone config for ``size`` in {small, base, large}.

    ``smoke=True`` gives a tiny model with the same structure (and the same 6000-sample input)
    for CPU tests: 16 conv channels, hidden 32, 2 layers, a 16-tap positional convolution,
    whose dropouts and LayerDrop stay at transformers' defaults (0.1). The full sizes take the
    authors' ACS fine-tuning (``finetune.sh``: ``--model_dropout_mult=-2``,
    ``--finetuning_layerdrop=0.0``): ``finetune.py`` sets every backbone module named
    ``*dropout*`` to p = 0.1 + 0.05 * (-2) = 0, i.e. hidden, activation, feature-projection
    and final dropout 0 (``PAPER_DROPOUT``); attention dropout is a float in transformers'
    attention, not a module, so it keeps the pretrained config's 0.1; the head's dropout
    stays 0.1. Masking is off (fine-tuning).
    """
    if size not in _SIZES:
        raise HubertInputError(f"unknown HuBERT-ECG size {size!r}; expected one of {list(_SIZES)}")
    dims = dict(_SIZES[size])
    conv_dim = 512
    extra: dict[str, Any] = dict(PAPER_DROPOUT)
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

    def freeze_for_finetuning(self, n_blocks: int) -> None:
        """Train only the last ``n_blocks`` transformer blocks, the feature projection and the
        head, as ``finetune.py`` (``set_transformer_blocks_trainable``: the whole encoder frozen,
        positional convolution and encoder LayerNorm included, then its last ``n_blocks``
        unfrozen; ``set_feature_extractor_trainable(False)``: the conv feature encoder frozen
        and, via transformers' ``_freeze_parameters``, run without gradients)."""
        layers = self.hubert_ecg.encoder.layers
        if not 0 <= n_blocks <= len(layers):
            raise HubertInputError(f"n_blocks must be in [0, {len(layers)}], got {n_blocks}")
        self.hubert_ecg.feature_extractor._freeze_parameters()
        self.hubert_ecg.encoder.requires_grad_(False)
        for layer in list(layers)[len(layers) - n_blocks:]:
            layer.requires_grad_(True)

    def load_pretrained_backbone(self, state: dict[str, Tensor], source: str) -> list[str]:
        """Load the authors' self-supervised backbone weights (``hubert_ecg_*.pt``'s
        ``model_state_dict``) into ``hubert_ecg``; the head keeps its initialisation. Every
        backbone tensor must be there with its shape; the pretraining-only keys
        (``PRETRAINING_ONLY``) are dropped and returned; any other extra key is an error."""
        state = convert_weight_norm_keys(dict(state), parametrized=self._parametrized)
        expected = self.hubert_ecg.state_dict()
        dropped = sorted(k for k in state if k.startswith(PRETRAINING_ONLY))
        kept = {k: v for k, v in state.items() if k not in dropped}
        missing = sorted(set(expected) - set(kept))
        extra = sorted(set(kept) - set(expected))
        shapes = sorted(f"{k}: {list(kept[k].shape)} != {list(expected[k].shape)}"
                        for k in set(kept) & set(expected)
                        if tuple(kept[k].shape) != tuple(expected[k].shape))
        if missing or extra or shapes:
            raise HubertInputError(
                f"{source} does not fit this HuBERT-ECG backbone (is it the right size?): "
                f"{len(missing)} missing {missing[:5]}, {len(extra)} unexpected {extra[:5]}, "
                f"{len(shapes)} shape mismatches {shapes[:5]}")
        self.hubert_ecg.load_state_dict(kept, strict=True)
        return dropped

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


# The decimation as one linear map of the (B, 30000) crop, applied on the crop's device.
# scipy's ``decimate`` (``sosfiltfilt`` of an order-8 Chebyshev I, then every 5th sample) is
# linear in its input, and its zero-phase impulse response falls below 1e-14 of its peak 863
# samples from the centre (the filter's slowest pole has |z| = 0.966). So every output sample
# more than ``_HALF`` + ``_MARGIN`` samples from either end is a 1,741-tap FIR of the input
# (an FFT convolution), and the ``_EDGE_ROWS`` outputs at each end, where the odd extension and
# initial conditions of ``sosfiltfilt`` act, are a small dense matrix over the first/last
# ``_EDGE_COLS`` inputs. The three pieces come from scipy itself (impulse responses), once per
# process; in float64 the result equals scipy's within 1e-12 (test_hubert checks it).
_HALF = 870
_MARGIN = 64
_EDGE_ROWS = -(-(_HALF + _MARGIN) // DECIMATION)
_EDGE_COLS = DECIMATION * (_EDGE_ROWS - 1) + _HALF + 1
_OPERATORS: dict[tuple[str, int], tuple[Tensor, Tensor, Tensor]] = {}


def _decimate_scipy(values: np.ndarray) -> np.ndarray:
    return signal.decimate(values, DECIMATION, ftype="iir", axis=-1, zero_phase=True)


@functools.cache
def _decimation_operator() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FIR taps (2 * _HALF + 1,), left block, right block (_EDGE_ROWS, _EDGE_COLS)), float64."""
    n = DECIMATION * (-(-(_EDGE_COLS + 2 * _HALF + 2 * _MARGIN) // DECIMATION))
    mid = DECIMATION * (n // (2 * DECIMATION))
    probe = np.zeros((1, 2 * n))
    probe[0, 2 * mid] = 1.0
    fir = signal.sosfiltfilt(signal.cheby1(8, 0.05, 0.8 / DECIMATION, output="sos"), probe)[0]
    taps = np.ascontiguousarray(fir[2 * mid - _HALF : 2 * mid + _HALF + 1])
    eye = np.eye(_EDGE_COLS)
    left = np.zeros((_EDGE_COLS, n))
    left[:, :_EDGE_COLS] = eye
    right = np.zeros((_EDGE_COLS, n))
    right[:, n - _EDGE_COLS :] = eye
    w_left = _decimate_scipy(left)[:, :_EDGE_ROWS].T
    w_right = _decimate_scipy(right)[:, -_EDGE_ROWS:].T
    return taps, np.ascontiguousarray(w_left), np.ascontiguousarray(w_right)


def _operator(device: torch.device, n: int) -> tuple[Tensor, Tensor, Tensor]:
    nfft = 1 << (n + 2 * _HALF).bit_length()
    key = (str(device), nfft)
    if key not in _OPERATORS:
        taps, w_left, w_right = (torch.from_numpy(a).to(device) for a in _decimation_operator())
        _OPERATORS[key] = (torch.fft.rfft(taps, nfft), w_left, w_right)
    return _OPERATORS[key]


def decimate(x: Tensor) -> Tensor:
    """``scipy.signal.decimate(x, 5, ftype='iir', zero_phase=True)`` along the last axis of a
    (B, n) tensor, in float64 on ``x``'s device. ``n``: a multiple of 5 above 2 * ``_EDGE_COLS``.
    """
    n = x.shape[-1]
    if n <= 2 * _EDGE_COLS or n % DECIMATION:
        raise HubertInputError(f"decimate needs a multiple of {DECIMATION} samples above "
                               f"{2 * _EDGE_COLS}, got {n}")
    spectrum, w_left, w_right = _operator(x.device, n)
    nfft = 2 * (spectrum.shape[-1] - 1)
    xs = x.to(torch.float64)
    full = torch.fft.irfft(torch.fft.rfft(xs, nfft) * spectrum, nfft)
    y = full[:, _HALF : _HALF + n : DECIMATION].clone()
    y[:, :_EDGE_ROWS] = xs[:, :_EDGE_COLS] @ w_left.T
    y[:, -_EDGE_ROWS:] = xs[:, -_EDGE_COLS:] @ w_right.T
    return y


def hubert_inputs(x12: Tensor, crop_starts: list[int]) -> Tensor:
    """(B, 12, L) 500-Hz 12-lead ECGs -> (n_crops, B, 6000) float32 model inputs: for each
    start, the 2500-sample crop of every lead, leads concatenated in order, decimated by 5 as
    ``scipy.signal.decimate`` does (see module doc). All crops are decimated in one call, on
    the input's device (:func:`decimate`: no copy to the CPU, no float64 round trip there)."""
    if x12.ndim != 3 or x12.shape[1] != N_LEADS:
        raise HubertInputError(f"expected 12-lead ECGs of shape (B, 12, L), got {tuple(x12.shape)}")
    b, length = x12.shape[0], x12.shape[-1]
    for start in crop_starts:
        if not 0 <= start <= length - CROP_SAMPLES:
            raise HubertInputError(
                f"crop_start {start} outside [0, {length - CROP_SAMPLES}] for {length} samples")
    crops = torch.cat([x12[:, :, s : s + CROP_SAMPLES].reshape(b, -1) for s in crop_starts])
    finite = torch.isfinite(crops).all(dim=1)
    if not bool(finite.all()):
        bad = sorted({int(i) % b for i in torch.nonzero(~finite).flatten().tolist()})
        raise HubertInputError(f"non-finite samples in the crop of batch rows {bad}")
    return decimate(crops.detach()).to(torch.float32).view(len(crop_starts), b, -1)


def hubert_input(x12: Tensor, crop_start: int) -> Tensor:
    """(B, 12, L) -> (B, 6000): :func:`hubert_inputs` for one crop."""
    return hubert_inputs(x12, [crop_start])[0]


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

    def freeze_for_finetuning(self, n_blocks: int) -> None:
        """See :meth:`HuBERTForECGClassification.freeze_for_finetuning`."""
        self.model.freeze_for_finetuning(n_blocks)

    def _logit(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return logits[:, 0] - logits[:, 1]

    def forward(self, x12: Tensor) -> Tensor:
        length = x12.shape[-1] - CROP_SAMPLES
        if self.training:
            return self._logit(hubert_input(x12, int(torch.randint(0, length + 1, (1,)).item())))
        starts = [int(s) for s in np.linspace(0, length, self.n_crops).astype(int)]
        crops = hubert_inputs(x12, starts)  # decimated together, then one model pass per crop
        return torch.stack([self._logit(c) for c in crops]).max(dim=0).values
