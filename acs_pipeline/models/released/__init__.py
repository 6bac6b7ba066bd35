"""The authors' released weights: find them under a root, read them safely, map them onto our
modules strictly and predict with them (no training).

A released-weights root is a local directory or an ``s3://bucket/prefix`` (read with boto3 through
:class:`~acs_pipeline.io.storage.Storage`; the endpoint is an argument). Its top level holds at most
one file per model, matched case-insensitively against these names (the first is canonical):

========== ======================================================== ============================
model      file names                                               format
========== ======================================================== ============================
s4         ``s4.ckpt``, ``s4_acs.ckpt``                             Lightning ``.ckpt``
resnet18   ``resnet18.ckpt``, ``resnet18_1d.ckpt``,                 Lightning ``.ckpt``
           ``resnet18_acs.ckpt``
hubert     ``hubert_ecg.pt``, ``hubert_ecg_acs.pt``, ``hubert.pt``  HuBERT-ECG ``torch.save`` dict
========== ======================================================== ============================

* :mod:`.load` reads one file through the allow-listing unpickler and loads it strictly into our
  module (the formats and their two layout traps are described there);
* :mod:`.files` finds the files under a root, imports verified copies with a manifest under the
  storage root and loads an imported copy back;
* :mod:`.predict` computes ACS probabilities with a loaded model.

This package module imports no torch, so the Dagster definitions can use its names.
"""

from acs_pipeline.models.specs import model_spec

RELEASED_FILES: dict[str, tuple[str, ...]] = {
    "s4": ("s4.ckpt", "s4_acs.ckpt"),
    "resnet18": ("resnet18.ckpt", "resnet18_1d.ckpt", "resnet18_acs.ckpt"),
    "hubert": ("hubert_ecg.pt", "hubert_ecg_acs.pt", "hubert.pt"),
}
RELEASED_MODELS: tuple[str, ...] = tuple(RELEASED_FILES)
# The input view of each released model (every HuBERT-ECG size reads the 12-lead view).
RELEASED_VIEWS: dict[str, str] = {
    m: model_spec("hubert_small" if m == "hubert" else m).view for m in RELEASED_MODELS
}
# Where an import puts the verified copies and their manifest, under the storage root.
PREFIX = "models/released"
MANIFEST = f"{PREFIX}/manifest.json"


def released_label(name: str) -> str:
    """How the report names a released model's row, e.g. ``s4 (released)``."""
    return f"{name} (released)"
