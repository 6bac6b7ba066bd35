"""The authors' released checkpoints, written here in their exact formats, and stand-ins for the
authors' code that those files pickle references to."""

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from transformers import HubertConfig

from acs_pipeline.models.registry import build_model


@contextmanager
def hubert_ecg_module() -> Iterator[type[HubertConfig]]:
    """A fake ``hubert_ecg`` module with ``HuBERTECGConfig(HubertConfig)``, registered in
    ``sys.modules`` only while the caller saves (loading must not need it)."""
    module = types.ModuleType("hubert_ecg")

    class HuBERTECGConfig(HubertConfig):
        def __init__(self, ensemble_length: int = 1, vocab_sizes=(100,), **kwargs):
            super().__init__(**kwargs)
            self.ensemble_length = ensemble_length
            self.vocab_sizes = list(vocab_sizes)

    HuBERTECGConfig.__module__ = "hubert_ecg"
    HuBERTECGConfig.__qualname__ = "HuBERTECGConfig"
    module.HuBERTECGConfig = HuBERTECGConfig
    sys.modules["hubert_ecg"] = module
    try:
        yield HuBERTECGConfig
    finally:
        del sys.modules["hubert_ecg"]


class Exploit:
    """Runs a shell command when unpickled by a plain pickle."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def lightning_checkpoint(state: dict, **extra) -> dict:
    """A dict laid out like a Lightning 2.x ``.ckpt`` of the authors' modules (no key prefix)."""
    return {
        "epoch": 49,
        "global_step": 1100,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 49}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_auc'}": {"best_model_score": 0.7}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"mode": "min", "factor": 0.1, "best": 0.4}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"init_lr": 1e-4},
        **extra,
    }


_SMALL = dict(
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    intermediate_size=2048,
    conv_dim=[512] * 5,
    conv_kernel=[10, 3, 3, 2, 2],
    conv_stride=[4, 2, 2, 2, 2],
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    mask_time_prob=0.08,
    vocab_sizes=[100],
)


def authors_config(cls, **overrides):
    """HuBERT-ECG small as the authors' pickled config holds it (pretraining masking on)."""
    return cls(**{**_SMALL, **overrides})


def save_hubert(path: Path, state: dict, extra: dict | None = None, random_init: bool = False,
                **config_overrides) -> Path:
    """A ``torch.save`` dict like the released HuBERT-ECG files, with finetune.py's keys and
    values: ``best_val_loss`` a numpy float64 (a mean of numpy losses), ``global_step`` an int,
    ``model_config`` the pickled ``hubert_ecg.HuBERTECGConfig`` or, with ``random_init``
    (``finetune.py --random_init``), a plain transformers ``HubertConfig``."""
    with hubert_ecg_module() as cls:
        config = (
            HubertConfig(**{k: v for k, v in _SMALL.items() if k != "vocab_sizes"},
                         **config_overrides)
            if random_init else authors_config(cls, **config_overrides)
        )
        torch.save(
            {
                "global_step": 7000,
                "best_val_loss": np.float64(0.61),
                "model_config": config,
                "model_state_dict": state,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-5}]},
                "lr_scheduler_state_dict": {"last_epoch": 7000, "lr_lambdas": [{}]},
                "patience_count": 3,
                "linear": False,
                "leads_as_channels": False,
                "finetuning_vocab_size": 2,
                "use_label_embedding": False,
                "target_val_auroc": 0.64,
                **(extra or {}),
            },
            path,
        )
    assert "hubert_ecg" not in sys.modules
    return path


def paper_model(name: str, seed: int) -> torch.nn.Module:
    """A seeded paper-profile model in eval mode, the source of a released file."""
    torch.manual_seed(seed)
    return build_model(name, "paper").eval()


def ecgs(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, channels, 5000)) * 0.3).astype(
        np.float16
    )


def assert_same_state(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    want = source.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
