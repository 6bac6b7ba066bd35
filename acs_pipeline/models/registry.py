"""The benchmark's models by name: their training recipe, a builder per profile and the reference
state-dict layout of the authors' released weights.

Profiles: ``paper`` builds the exact benchmark architecture; ``smoke`` builds the same class with
narrow widths so a whole training run fits in CPU minutes. S4 and HuBERT are imported inside their
builders, so the convolutional models work without those modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from torch import nn

from acs_pipeline.models.ecg_omi import ECGOMI
from acs_pipeline.models.resnet1d import resnet18_1d, resnet50_1d

MODEL_NAMES = (
    "s4",
    "resnet18",
    "resnet50",
    "ecg_omi",
    "hubert_small",
    "hubert_base",
    "hubert_large",
)
PROFILES = ("paper", "smoke")
VIEWS = ("ecg_3by4", "ecg_12lead")
REFERENCE_FILE = "acs_benchwork_state_dicts.json"


class UnknownModelError(ValueError):
    """A model name or profile outside the registry."""


@dataclass(frozen=True)
class ModelSpec:
    """How the benchmark trains one model: input view, batch size, learning rate and the key of
    its layout in the reference file (None when no layout is recorded)."""

    name: str
    view: str
    batch_size: int
    lr: float
    reference_key: str | None


_SPECS: dict[str, ModelSpec] = {
    "s4": ModelSpec("s4", "ecg_3by4", 32, 1e-4, "S4Model_after_forward"),
    "resnet18": ModelSpec("resnet18", "ecg_3by4", 64, 1e-4, "ResNet18_1D"),
    "resnet50": ModelSpec("resnet50", "ecg_3by4", 64, 1e-4, "ResNet50_1D"),
    "ecg_omi": ModelSpec("ecg_omi", "ecg_3by4", 64, 1e-4, "ECGOMI"),
    # HuBERT-ECG fine-tuning: AdamW lr 1e-5, batch 64 (the authors' ACS fine-tuning command).
    **{
        f"hubert_{size}": ModelSpec(
            f"hubert_{size}", "ecg_12lead", 64, 1e-5, f"HuBERTForECGClassification_{size}"
        )
        for size in ("small", "base", "large")
    },
}


def model_spec(name: str) -> ModelSpec:
    """The training recipe of model ``name`` (one of ``MODEL_NAMES``)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}"
        ) from None


def _build_s4(profile: str) -> nn.Module:
    from acs_pipeline.models.s4 import S4Model

    if profile == "paper":
        return S4Model(
            d_input=3,
            d_output=1,
            d_state=64,
            d_model=512,
            n_layers=4,
            dropout=0.2,
            prenorm=False,
            l_max=1024,
            bidirectional=True,
            layer_norm=True,
            pooling=True,
        )
    return S4Model(d_input=3, d_output=1, d_state=16, d_model=32, n_layers=2, dropout=0.2)


def _build_hubert(size: str, profile: str) -> nn.Module:
    from acs_pipeline.models.hubert import HuBERTForECGClassification, hubert_config

    return HuBERTForECGClassification(hubert_config(size, smoke=profile == "smoke"))


def build_model(name: str, profile: str = "paper") -> nn.Module:
    """A freshly initialised model ``name``: ``paper`` = the benchmark architecture, ``smoke`` =
    the same class with narrow widths (ResNets: 8 base channels, hidden 32; S4: d_model 32,
    d_state 16, 2 layers; HuBERT: ``hubert_config(size, smoke=True)``). ECG-OMI is already small
    (210,783 parameters) and its module names encode its widths, so both profiles build it as
    published."""
    spec = model_spec(name)
    if profile not in PROFILES:
        raise UnknownModelError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    smoke = profile == "smoke"
    if spec.name == "resnet18":
        return resnet18_1d(channels=8, hidden_dim=32) if smoke else resnet18_1d()
    if spec.name == "resnet50":
        return resnet50_1d(channels=8, hidden_dim=32) if smoke else resnet50_1d()
    if spec.name == "ecg_omi":
        return ECGOMI()
    if spec.name == "s4":
        return _build_s4(profile)
    return _build_hubert(spec.name.removeprefix("hubert_"), profile)


@cache
def _reference() -> dict:
    text = resources.files("acs_pipeline").joinpath("reference", REFERENCE_FILE).read_text("utf-8")
    return json.loads(text)


def _reference_entry(name: str) -> dict:
    key = model_spec(name).reference_key
    if key is None:
        raise UnknownModelError(f"model {name!r} has no reference layout")
    return _reference()["models"][key]


def reference_layout(name: str) -> dict[str, list[int]]:
    """Parameter and buffer names -> shapes of the released weights of model ``name`` (in the
    reference file's order; S4: after the first 5000-sample forward pass)."""
    return {k: list(v) for k, v in _reference_entry(name)["state_dict"].items()}


def reference_parameters(name: str) -> int:
    """The number of trainable parameters of model ``name`` in the benchmark."""
    return int(_reference_entry(name)["parameters"])


def state_layout(model: nn.Module) -> dict[str, list[int]]:
    """A model's state-dict names -> shapes, comparable with ``reference_layout``."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
