"""One released file, read safely and loaded strictly into the benchmark module.

* Lightning ``.ckpt`` (S4, ResNet-18, ResNet-50, ECG-OMI): the ``state_dict`` entry holds the
  parameters and buffers, either under the network's own names (the authors' LightningModules
  are the networks) or all under one module prefix (``model.``, ``net.``...), which is stripped.
  Known ``hyper_parameters`` (S4: ``d_model``, ``prenorm``...; ResNet-18: ``channels``,
  ``hidden_dim``...) must equal the benchmark architecture's.
* HuBERT-ECG: ``model_config`` is a pickled ``hubert_ecg.HuBERTECGConfig`` (read as an inert
  stand-in through the allow-listing unpickler of :mod:`acs_pipeline.models.checkpoints`; its
  code never runs) and ``model_state_dict`` the weights. The size (small/base/large) follows from
  ``hidden_size`` and ``num_hidden_layers``; the config's other architecture fields must equal
  ours. The pretraining mask token ``hubert_ecg.masked_spec_embed`` (unused when fine-tuned) is
  dropped and reported; both weight-norm spellings of the positional convolution load.
* S4: the kernel buffers ``omega``/``z`` of a checkpoint taken after a 5000-sample forward pass
  are [4097, 2], not [513, 2]: the kernels are grown to the checkpoint's length before matching.

Everything else is strict: missing keys, unexpected keys and shape mismatches raise
:class:`~acs_pipeline.models.checkpoints.CheckpointError` listing all of them, and a checkpoint that
pickles anything outside the allow-list is refused with the offending global named.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from acs_pipeline.io.storage import sha256_file
from acs_pipeline.models.checkpoints import (
    LIGHTNING_PREFIX,
    RELEASED_CHECKPOINT_GLOBALS,
    CheckpointError,
    PickledObject,
    extract_state_dict,
    load_checkpoint,
    match_state_dict,
)
from acs_pipeline.models.registry import build_model
from acs_pipeline.models.released import (
    BENCHMARK_PROTOCOL,
    RELEASED_FILES,
    RELEASED_MODELS,
    check_protocol,
)
from acs_pipeline.models.specs import model_spec

__all__ = [
    "HUBERT_SIZES",
    "IGNORED_KEYS",
    "LoadedRelease",
    "ReleasedModel",
    "ReleasedWeightsError",
    "load_released",
]

# (hidden_size, num_hidden_layers) -> HuBERT-ECG size.
HUBERT_SIZES: dict[tuple[int, int], str] = {
    (512, 8): "small",
    (768, 12): "base",
    (960, 16): "large",
}
# Keys a released checkpoint may hold that our modules do not have, dropped and reported.
IGNORED_KEYS: dict[str, tuple[str, ...]] = {"hubert": ("hubert_ecg.masked_spec_embed",)}
# HubertConfig fields that change what the network computes (beyond the state-dict shapes).
HUBERT_ARCH_FIELDS = (
    "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
    "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm",
    "feat_extract_activation", "feat_proj_layer_norm", "do_stable_layer_norm",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "conv_pos_batch_norm",
)  # fmt: skip
# Lightning hyper_parameters of the authors' modules that must equal the benchmark architecture
# (checked when present; training-only ones such as init_lr and dropout are ignored).
LIGHTNING_HPARAMS: dict[str, dict[str, Any]] = {
    "s4": {"d_input": 3, "d_output": 1, "d_state": 64, "d_model": 512, "n_layers": 4,
           "prenorm": False, "bidirectional": True, "layer_norm": True, "pooling": True,
           "transposed_input": True},
    "resnet18": {"input_channels": 3, "channels": 32, "hidden_dim": 256, "block_kernel": 7,
                 "num_classes": 1},
    "resnet50": {"input_channels": 3, "input_length": 5000, "channels": 64, "hidden_dim": 512,
                 "block_kernel": 7, "num_classes": 1},
    "ecg_omi": {"input_channels": 3, "input_length": 5000, "num_classes": 1},
}  # fmt: skip
_HUBERT_EXTRA_FIELDS = ("ensemble_length", "vocab_sizes", "mask_time_prob", "hidden_size",
                        "num_hidden_layers")  # fmt: skip
_HUBERT_CHECKPOINT_FIELDS = ("global_step", "best_val_loss", "finetuning_vocab_size",
                             "use_label_embedding", "linear", "leads_as_channels",
                             "patience_count", "target_label")  # fmt: skip


class ReleasedWeightsError(CheckpointError):
    """A released-weights root or file that is missing, ambiguous or not what it must be."""


@dataclass(frozen=True)
class ReleasedModel:
    """One verified released checkpoint.

    ``name`` is the released model (``s4``, ``resnet18``, ``hubert``), ``registry_name`` the
    module it was loaded into (``hubert_small``...), ``view`` its input tensors. ``config`` is a
    JSON-ready summary of the checkpoint (format, hyper-parameters or the HuBERT config, training
    step). ``stored_rel`` is the copy's key under the storage root once imported.
    """

    name: str
    registry_name: str
    view: str
    file_name: str
    source_uri: str
    sha256: str
    bytes: int
    n_params: int
    config: dict[str, Any]
    ignored_keys: list[str] = field(default_factory=list)
    stored_rel: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleasedModel:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class LoadedRelease:
    """A released checkpoint loaded into our module (in eval mode), to predict with under
    ``protocol`` (see :mod:`acs_pipeline.models.released`)."""

    info: ReleasedModel
    module: nn.Module
    protocol: str = ""


def _jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data (tensors to numbers or shapes, unknown objects to str)."""
    if isinstance(value, dict | PickledObject):
        items = value.to_dict() if isinstance(value, PickledObject) else value
        return {str(k): _jsonable(v) for k, v in items.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else f"tensor{list(value.shape)}"
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars (best_val_loss of finetune.py)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _differences(given: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    return [
        f"{k}={given[k]!r} (ours {ours[k]!r})"
        for k in ours
        if k in given and _normalise(given[k]) != _normalise(ours[k])
    ]


def _strip_module_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict, str]:
    """Strip one leading module name shared by every key when our module has no such child."""
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) != 1 or not all("." in k for k in state):
        return state, ""
    head = heads.pop()
    if head in dict(model.named_children()):
        return state, ""
    return {k.split(".", 1)[1]: v for k, v in state.items()}, f"{head}."


def _hubert_size(config: dict[str, Any], where: str) -> str:
    try:
        dims = (int(config["hidden_size"]), int(config["num_hidden_layers"]))
    except (KeyError, TypeError, ValueError):
        raise ReleasedWeightsError(
            f"{where}: model_config has no usable hidden_size / num_hidden_layers"
        ) from None
    if dims not in HUBERT_SIZES:
        known = ", ".join(f"{s} = {h}/{n}" for (h, n), s in HUBERT_SIZES.items())
        raise ReleasedWeightsError(
            f"{where}: HuBERT-ECG config with hidden_size {dims[0]} and num_hidden_layers "
            f"{dims[1]} is none of the released sizes ({known})"
        )
    return HUBERT_SIZES[dims]


def _lightning(model: str, obj: dict, where: str) -> tuple[str, nn.Module, dict, dict]:
    if "state_dict" not in obj:
        raise ReleasedWeightsError(
            f"{where}: a Lightning checkpoint needs a 'state_dict' entry; found keys "
            f"{sorted(map(str, obj))}"
        )
    hparams = obj.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        hparams = {}
    wrong = _differences(hparams, LIGHTNING_HPARAMS[model])
    if wrong:
        raise ReleasedWeightsError(
            f"{where}: hyper_parameters differ from the benchmark's {model}: {'; '.join(wrong)}"
        )
    module = build_model(model, "paper")
    state, prefix = _strip_module_prefix(extract_state_dict(obj), module)
    if not prefix and "state_dict" in obj:
        raw = obj["state_dict"]
        if raw and all(k.startswith(LIGHTNING_PREFIX) for k in raw):
            prefix = LIGHTNING_PREFIX  # extract_state_dict stripped it
    config = {
        "format": "lightning",
        "epoch": obj.get("epoch"),
        "global_step": obj.get("global_step"),
        "pytorch-lightning_version": obj.get("pytorch-lightning_version"),
        "hyper_parameters": hparams,
        "state_dict_prefix": prefix,
    }
    return model, module, state, config


def _hubert(obj: dict, where: str) -> tuple[str, nn.Module, dict, dict]:
    missing = [k for k in ("model_config", "model_state_dict") if k not in obj]
    if missing:
        raise ReleasedWeightsError(
            f"{where}: a HuBERT-ECG checkpoint needs 'model_config' and 'model_state_dict'; "
            f"missing {missing}, found keys {sorted(map(str, obj))}"
        )
    raw_config = obj["model_config"]
    if isinstance(raw_config, PickledObject):
        pickled_class = raw_config.pickled_name
        given = raw_config.to_dict()
    elif isinstance(raw_config, dict):
        pickled_class, given = "dict", dict(raw_config)
    else:
        raise ReleasedWeightsError(
            f"{where}: model_config is a {type(raw_config).__name__}, expected the pickled "
            "hubert_ecg.HuBERTECGConfig"
        )
    size = _hubert_size(given, where)
    from acs_pipeline.models.hubert import hubert_config, weight_norm_spelling

    ours = hubert_config(size).to_dict()
    wrong = _differences(given, {k: ours[k] for k in HUBERT_ARCH_FIELDS if k in ours})
    if wrong:
        raise ReleasedWeightsError(
            f"{where}: HuBERT-ECG {size} config differs from ours: {'; '.join(wrong)}"
        )
    registry_name = f"hubert_{size}"
    module = build_model(registry_name, "paper")
    state = extract_state_dict(obj)
    config = {
        "format": "hubert_ecg",
        "size": size,
        "pickled_class": pickled_class,
        "hubert_config": {
            k: given[k] for k in (*_HUBERT_EXTRA_FIELDS, *HUBERT_ARCH_FIELDS) if k in given
        },
        "checkpoint": {
            k: obj[k]
            for k in obj
            if k in _HUBERT_CHECKPOINT_FIELDS or str(k).startswith("target_val_")
        },
        "weight_norm_spelling": weight_norm_spelling(state),
    }
    return registry_name, module, state, config


def _fit_traps(name: str, module: nn.Module, state: dict, where: str) -> list[str]:
    """Undo the two documented layout traps in place; returns the ignored keys it dropped."""
    ignored = [k for k in IGNORED_KEYS.get(name, ()) if k in state]
    for key in ignored:
        del state[key]
    if name == "s4":
        rows = [v.shape[0] for k, v in state.items() if k.endswith(".kernel.kernel.omega")]
        if rows and rows[0] >= 2:
            module.grow(2 * (int(rows[0]) - 1))  # as the first long forward pass does
    if name == "hubert":
        from acs_pipeline.models.hubert import convert_weight_norm_keys, weight_norm_spelling

        if weight_norm_spelling(state) == "legacy+parametrized":
            raise ReleasedWeightsError(
                f"{where}: the positional convolution is stored in both weight-norm spellings"
            )
        parametrized = weight_norm_spelling(module.state_dict()) == "parametrized"
        convert_weight_norm_keys(state, parametrized=parametrized)
    return ignored


def load_released(model: str, path: str | Path, *, source_uri: str | None = None,
                  protocol: str | None = None) -> LoadedRelease:
    """Load released model ``model`` (``s4``, ``resnet18``, ``resnet50``, ``ecg_omi``,
    ``hubert``) from the local file ``path`` into the benchmark module, strictly; ``source_uri``
    names it in errors and in the result (default: the path). ``protocol`` (default: the
    authors' script, ``RELEASED_PROTOCOLS``) decides how it predicts; under
    ``authors_prediction_py`` an S4 module is rebuilt as ``prediction.py`` rebuilds it."""
    if model not in RELEASED_FILES:
        raise ReleasedWeightsError(
            f"unknown released model {model!r}; expected one of {', '.join(RELEASED_MODELS)}"
        )
    protocol = check_protocol(model, protocol)
    path = Path(path)
    where = source_uri or str(path)
    allowed = RELEASED_CHECKPOINT_GLOBALS if model == "hubert" else ()
    try:
        obj = load_checkpoint(path, allowed=allowed)
    except CheckpointError as exc:
        message = str(exc)
        raise type(exc)(message.replace(str(path), where, 1) if source_uri else message) from None
    if model == "hubert":
        registry_name, module, state, config = _hubert(obj, where)
    else:
        registry_name, module, state, config = _lightning(model, obj, where)
    ignored = _fit_traps(model, module, state, where)
    match_state_dict(module, state, source=where)
    if model == "s4" and protocol != BENCHMARK_PROTOCOL:
        from acs_pipeline.models.released.protocols import authors_s4

        module = authors_s4(module)
    module.eval()
    info = ReleasedModel(
        name=model,
        registry_name=registry_name,
        view=model_spec(registry_name).view,
        file_name=path.name,
        source_uri=where,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        n_params=sum(p.numel() for p in module.parameters()),
        config=_jsonable(config),
        ignored_keys=ignored,
    )
    return LoadedRelease(info, module, protocol)
