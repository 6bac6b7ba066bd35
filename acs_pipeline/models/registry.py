"""The benchmark's models by name: their training recipe, a builder per profile and the reference
state-dict layout of the authors' released weights.

Profiles: ``paper`` builds the exact benchmark architecture; ``smoke`` builds the same class with
narrow widths so a whole training run fits in CPU minutes. S4 and HuBERT are imported inside their
builders, so the convolutional models work without those modules.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from torch import nn

from acs_pipeline.models.ecg_omi import ECGOMI
from acs_pipeline.models.resnet1d import resnet18_1d, resnet50_1d
from acs_pipeline.models.specs import (  # noqa: F401  (re-exported)
    MODEL_NAMES,
    PROFILES,
    VIEWS,
    ModelSpec,
    UnknownModelError,
    model_spec,
)

REFERENCE_FILE = "acs_benchwork_state_dicts.json"


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
    the same class with narrow widths (ResNet-18: 8 base channels, hidden 32; ResNet-50: 4,
    hidden 16; S4: d_model 32, d_state 16, 2 layers; HuBERT: ``hubert_config(size, smoke=True)``).
    ECG-OMI is already small (210,783 parameters) and its module names encode its widths, so both
    profiles build it as published."""
    spec = model_spec(name)
    if profile not in PROFILES:
        raise UnknownModelError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    smoke = profile == "smoke"
    if spec.name == "resnet18":
        return resnet18_1d(channels=8, hidden_dim=32) if smoke else resnet18_1d()
    if spec.name == "resnet50":
        return resnet50_1d(channels=4, hidden_dim=16) if smoke else resnet50_1d()
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
