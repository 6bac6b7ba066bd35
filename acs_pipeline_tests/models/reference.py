"""The authors' released state-dict layouts (``acs_pipeline/models/reference/``), to compare our
modules' names, shapes and parameter counts with."""

import json
from functools import cache
from importlib import resources

from torch import nn

REFERENCE_FILE = "acs_benchwork_state_dicts.json"
# Our model name -> its entry in the reference file (S4: after its first 5000-sample forward pass).
REFERENCE_KEYS = {
    "s4": "S4Model_after_forward",
    "resnet18": "ResNet18_1D",
    "resnet50": "ResNet50_1D",
    "ecg_omi": "ECGOMI",
    **{f"hubert_{s}": f"HuBERTForECGClassification_{s}" for s in ("small", "base", "large")},
}


@cache
def _reference() -> dict:
    ref = resources.files("acs_pipeline.models").joinpath("reference", REFERENCE_FILE)
    return json.loads(ref.read_text("utf-8"))


def reference_entry(key: str) -> dict:
    """The reference file's entry ``key`` (``state_dict`` names -> shapes, ``parameters``)."""
    return _reference()["models"][key]


def reference_layout(name: str) -> dict[str, list[int]]:
    """Parameter and buffer names -> shapes of the released weights of model ``name`` (in the
    reference file's order; S4: after the first 5000-sample forward pass)."""
    return {k: list(v) for k, v in reference_entry(REFERENCE_KEYS[name])["state_dict"].items()}


def reference_parameters(name: str) -> int:
    """The number of trainable parameters of model ``name`` in the benchmark."""
    return int(reference_entry(REFERENCE_KEYS[name])["parameters"])


def state_layout(model: nn.Module) -> dict[str, list[int]]:
    """A model's state-dict names -> shapes, comparable with ``reference_layout``."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
