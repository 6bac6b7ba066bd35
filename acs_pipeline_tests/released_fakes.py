"""Stand-ins for the authors' code that their released checkpoints pickle references to."""

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import HubertConfig


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
