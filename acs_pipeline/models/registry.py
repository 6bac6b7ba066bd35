"""The benchmark's models by name: a builder per profile.

Profiles: ``paper`` builds the exact benchmark architecture; ``smoke`` builds the same class with
narrow widths so a whole training run fits in CPU minutes. S4 and HuBERT are imported inside their
builders, so the convolutional models work without those modules.
"""

from __future__ import annotations

from torch import nn

from acs_pipeline.models.ecg_omi import ECGOMI
from acs_pipeline.models.resnet1d import ResidualBlock1D, ResNet1D, resnet18_1d, resnet50_1d
from acs_pipeline.models.specs import PROFILES, UnknownModelError, hubert_size, model_spec

# Smoke widths of the ResNets: (base channels, head width). The smoke nets train without dropout
# (a few hundred steps on a few hundred ECGs leave nothing to regularise) and with zero-initialised
# residual branches, which makes their few-step training far less dependent on the random init.
SMOKE_RESNET = {"resnet18": (8, 32), "resnet50": (4, 16)}


def _build_s4(profile: str) -> nn.Module:
    from acs_pipeline.models.s4 import S4_SMOKE_KWARGS, S4Model

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
    return S4Model(d_input=3, d_output=1, dropout=0.2, **S4_SMOKE_KWARGS)


def zero_init_residuals(net: nn.Module) -> nn.Module:
    """Zero the last BatchNorm scale of every identity-shortcut residual branch, so each such
    block starts as the identity (Goyal et al. 2017); the state-dict layout is unchanged."""
    for block in net.modules():
        if isinstance(block, ResidualBlock1D) and len(block.shortcut) == 0:
            nn.init.zeros_(block.bn1.weight)
    return net


def _build_smoke_resnet(name: str) -> ResNet1D:
    channels, hidden = SMOKE_RESNET[name]
    build = resnet18_1d if name == "resnet18" else resnet50_1d
    net = build(channels=channels, hidden_dim=hidden, dropout=0.0, block_dropout=0.0)
    return zero_init_residuals(net)


def _build_hubert(size: str, profile: str) -> nn.Module:
    from acs_pipeline.models.hubert import HuBERTForECGClassification, hubert_config

    return HuBERTForECGClassification(hubert_config(size, smoke=profile == "smoke"))


def build_model(name: str, profile: str = "paper") -> nn.Module:
    """A freshly initialised model ``name``: ``paper`` = the benchmark architecture, ``smoke`` =
    the same class with narrow widths (ResNet-18: 8 base channels, hidden 32; ResNet-50: 4,
    hidden 16; both without dropout and with zero-initialised residual branches, see
    ``SMOKE_RESNET``; S4: d_model 32, d_state 16, 2 layers; HuBERT:
    ``hubert_config(size, smoke=True)``). ECG-OMI is already small (210,783 parameters) and its
    module names encode its widths, so both profiles build it as published."""
    spec = model_spec(name)
    if profile not in PROFILES:
        raise UnknownModelError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    smoke = profile == "smoke"
    if spec.name in SMOKE_RESNET and smoke:
        return _build_smoke_resnet(spec.name)
    if spec.name == "resnet18":
        return resnet18_1d()
    if spec.name == "resnet50":
        return resnet50_1d()
    if spec.name == "ecg_omi":
        return ECGOMI()
    if spec.name == "s4":
        return _build_s4(profile)
    return _build_hubert(hubert_size(spec.name, profile), profile)
