"""Safe checkpoint loading: allow-listed unpickling, state-dict extraction and strict matching.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors, plain containers and
torch's own types only. A checkpoint that pickles a class (the released HuBERT-ECG files hold a
``hubert_ecg.HuBERTECGConfig``) loads only when the caller allow-lists that class by its
``'module.Class'`` name; it is then rebuilt as an inert ``PickledObject`` stand-in holding the
pickled attributes, and no code of the original class runs. Any other global (``os.system``
smuggled in through ``__reduce__``, say) raises ``CheckpointError`` naming it. Numpy scalars
and dtypes (a ``best_val_loss`` saved as ``np.float64``) are data and load by default, under
both numpy spellings; object dtypes stay refused.

The allow-list is installed with ``torch.serialization.safe_globals`` for the duration of one
load; that registry is process-wide, so concurrent loads in threads share it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import torch
from torch import nn

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

# What the authors' released checkpoints pickle besides tensors, containers and numpy scalars:
# the HuBERT-ECG config class (finetune.py) or, with --random_init, transformers' HubertConfig,
# both read as inert stand-ins.
RELEASED_CHECKPOINT_GLOBALS: tuple[str, ...] = (
    "hubert_ecg.HuBERTECGConfig",
    "transformers.models.hubert.configuration_hubert.HubertConfig",
)

LIGHTNING_PREFIX = "model."

Source = str | os.PathLike[str] | bytes | bytearray | IO[bytes]
Allowed = type | str | tuple[Callable[..., Any], str]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, or does not fit the model."""


class PickledObject:
    """Inert stand-in for an allow-listed pickled object.

    ``pickled_name`` is the original ``'module.Class'``; the pickled attributes are readable as
    attributes, by key, or all at once with ``to_dict()`` (e.g. to build a ``HubertConfig``).
    """

    pickled_name: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_state"] = dict(kwargs)
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            state = {"state": state}
        self.__dict__.setdefault("_state", {}).update(state)
        self.__dict__.setdefault("_args", ())

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__.get("_state", {}))

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_state"][key]
        except KeyError:
            raise AttributeError(f"{self.pickled_name} stand-in has no attribute {key!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self.__dict__["_state"][key]

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__["_state"]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__["_state"])

    def __repr__(self) -> str:
        return f"PickledObject({self.pickled_name}, {len(self.__dict__['_state'])} attributes)"


_STAND_INS: dict[str, type[PickledObject]] = {}


def stand_in(name: str) -> type[PickledObject]:
    """The (cached) ``PickledObject`` subclass that replaces the class ``'module.Class'``."""
    if name not in _STAND_INS:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name):
            raise ValueError(f"allow-list entries must be 'module.Class' names, got {name!r}")
        cls_name = name.rsplit(".", 1)[1]
        _STAND_INS[name] = type(cls_name, (PickledObject,), {"pickled_name": name})
    return _STAND_INS[name]


def _safe_list(allowed: Iterable[Allowed]) -> tuple[list[Any], list[str]]:
    safe: list[Any] = []
    names: list[str] = []
    for entry in allowed:
        if isinstance(entry, str):
            safe.append((stand_in(entry), entry))
            names.append(entry)
        elif isinstance(entry, tuple):
            safe.append(entry)
            names.append(entry[1])
        elif isinstance(entry, type):
            safe.append(entry)
            names.append(f"{entry.__module__}.{entry.__qualname__}")
        else:
            raise TypeError(f"allow-list entries must be types or 'module.Class' names: {entry!r}")
    return safe, names


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """numpy's ``multiarray.scalar`` for non-object dtypes only (an object scalar would hand
    back an arbitrary pickled object)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing the numpy scalar of dtype {dtype!r}")
    return _np_multiarray.scalar(dtype, data) if data is not None else _np_multiarray.scalar(dtype)


def numpy_globals() -> list[tuple[Callable[..., Any], str]]:
    """The numpy globals a ``torch.save`` of numpy scalars pickles, under both spellings
    (``numpy._core`` from numpy 2, ``numpy.core`` before): the scalar constructor (non-object
    dtypes only), ``numpy.dtype`` and the dtype classes of ``numpy.dtypes`` (numpy 2 pickles
    e.g. ``numpy.dtypes.Float64DType``); no object dtype."""
    found: list[tuple[Callable[..., Any], str]] = [
        (_numpy_scalar, f"numpy.{core}.multiarray.scalar") for core in ("_core", "core")
    ]
    found.append((np.dtype, "numpy.dtype"))
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype) and name != "ObjectDType":
            found.append((cls, f"numpy.dtypes.{name}"))
    return found


def _describe(source: Source) -> str:
    if isinstance(source, bytes | bytearray):
        return f"<{len(source)} bytes>"
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or "<file object>"


def _offending_globals(source: Source, allowed_names: list[str], message: str) -> list[str]:
    """All disallowed globals of a zip checkpoint, else the one named in torch's message."""
    found: list[str] = []
    try:
        if isinstance(source, bytes | bytearray):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(source))
        elif isinstance(source, str | os.PathLike):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    except Exception:  # legacy (non-zip) format or unreadable: fall back to the message
        found = []
    found = sorted(set(found) - set(allowed_names))
    if not found:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))
    return found


def load_checkpoint(
    path_or_bytes: Source, *, allowed: Iterable[Allowed] = (), numpy_scalars: bool = True
) -> dict:
    """Read a ``torch.save`` / Lightning checkpoint without running pickled code.

    ``allowed`` lists extra classes a checkpoint may pickle: a ``'module.Class'`` string maps
    that class to an inert ``PickledObject`` stand-in (use ``RELEASED_CHECKPOINT_GLOBALS`` for the
    authors' released files); a type is trusted and rebuilt as itself; a ``(callable, name)``
    pair is passed to torch as is. ``numpy_scalars`` also accepts numpy scalars and dtypes
    (``numpy_globals``: data, never an object dtype). Tensors are loaded onto the CPU.
    """
    description = _describe(path_or_bytes)
    safe, allowed_names = _safe_list(allowed)
    if numpy_scalars:
        extra = numpy_globals()
        safe += extra
        allowed_names += [name for _, name in extra]
    if isinstance(path_or_bytes, str | os.PathLike) and not Path(path_or_bytes).is_file():
        raise CheckpointError(f"{description}: checkpoint file not found")
    handle: Any = (
        io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes | bytearray) else path_or_bytes
    )
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        names = _offending_globals(path_or_bytes, allowed_names, message)
        what = ", ".join(names) if names else "an object torch does not allow"
        first_line = next(
            (line for line in message.splitlines() if "GLOBAL" in line or "Can only" in line), ""
        ).strip()
        first_line = first_line.split(" Please use")[0]  # drop torch's advice to trust it
        raise CheckpointError(
            f"{description}: refusing to unpickle {what}; a checkpoint may hold only tensors, "
            f"plain containers and the allow-listed classes "
            f"{allowed_names or '(none)'}. torch said: {first_line or message[:300]}"
        ) from None
    except Exception as exc:  # any other failure to parse untrusted bytes
        raise CheckpointError(f"{description}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{description}: expected a dict at the top of the checkpoint, got {type(obj).__name__}"
        )
    return obj


def _tensor_dict(state: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{where}: entries that are not tensors: {', '.join(bad[:20])}")
    return dict(state)


def extract_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The parameters and buffers inside a loaded checkpoint.

    - Lightning ``.ckpt`` (has ``state_dict``): that dict; when every key starts with ``model.``
      (a LightningModule wrapping the network as ``self.model``) the prefix is stripped. The
      authors' modules are the networks themselves, so their keys carry no prefix.
    - HuBERT-ECG ``torch.save`` dict (has ``model_state_dict``): that dict.
    - Otherwise the object itself must be a plain state dict (all values tensors).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a checkpoint dict, got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state = _tensor_dict(obj["state_dict"], "Lightning checkpoint 'state_dict'")
        if state and all(k.startswith(LIGHTNING_PREFIX) for k in state):
            state = {k.removeprefix(LIGHTNING_PREFIX): v for k, v in state.items()}
        return state
    if "model_state_dict" in obj and isinstance(obj["model_state_dict"], Mapping):
        return _tensor_dict(obj["model_state_dict"], "HuBERT checkpoint 'model_state_dict'")
    if not obj:
        raise CheckpointError("checkpoint dict is empty")
    return _tensor_dict(obj, "plain state dict (no 'state_dict' or 'model_state_dict' key either)")


def match_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Load ``state`` into ``model`` strictly; on any mismatch raise ``CheckpointError`` listing
    every missing key, unexpected key and shape mismatch (each list sorted)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {list(state[k].shape)} != model {list(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit {type(model).__name__}:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                parts.append(f"{len(items)} {title}: " + "; ".join(items))
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(dict(state), strict=True)
