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
resnet50   ``resnet50.ckpt``, ``resnet50_1d.ckpt``,                 Lightning ``.ckpt``
           ``resnet50_acs.ckpt``
ecg_omi    ``ecg_omi.ckpt``, ``ecgomi.ckpt``, ``resnet6.ckpt``,     Lightning ``.ckpt``
           ``ecg_omi_acs.ckpt``
hubert     ``hubert_ecg.pt``, ``hubert_ecg_acs.pt``, ``hubert.pt``  HuBERT-ECG ``torch.save`` dict
========== ======================================================== ============================

* :mod:`.load` reads one file through the allow-listing unpickler and loads it strictly into our
  module (the formats and their two layout traps are described there);
* :mod:`.files` finds the files under a root, imports verified copies with a manifest under the
  storage root and loads an imported copy back;
* :mod:`.predict` computes ACS probabilities with a loaded model, under a named protocol
  (:mod:`.protocols`).

Prediction protocols (``RELEASED_PROTOCOLS`` holds each model's default, the authors' own):

* ``authors_prediction_py`` (S4, ResNet-18/50, ECG-OMI): ``prediction.py``: ``sigmoid`` of the
  logit. For S4 the script builds a fresh model (kernel length 1024), copies the checkpoint's
  tensors in and its first 5000-sample forward pass grows the kernel again (1024 -> 8192, ``C``
  rewritten three times) although the checkpoint's kernel was already grown; the CNNs load
  with ``load_from_checkpoint``, the same function as ours.
* ``authors_test_py`` (HuBERT-ECG): ``test.py`` as ``test.sh`` runs it (``--tta``,
  ``--tta_aggregation=max``, ``n_augs`` 3, batch 64, ``--downsampling_factor=5``): seeds 42,
  the whole 10-s record decimated, per batch three time-aligned random 5-s crops
  (``np.random.randint`` per ECG), ``sigmoid`` of the ACS logit, maximum over the crops;
  ``authors_test_py_mean`` is the same with ``test.py``'s default ``--tta_aggregation mean``.
* ``benchmark``: the protocol our own models are validated with (S4: the kernel as stored;
  HuBERT-ECG: three evenly spaced crops decimated separately, ``softmax[:, 0]``, maximum).

This package module imports no torch, so the Dagster definitions can use its names.
"""

from acs_pipeline.models.specs import model_spec

RELEASED_FILES: dict[str, tuple[str, ...]] = {
    "s4": ("s4.ckpt", "s4_acs.ckpt"),
    "resnet18": ("resnet18.ckpt", "resnet18_1d.ckpt", "resnet18_acs.ckpt"),
    "resnet50": ("resnet50.ckpt", "resnet50_1d.ckpt", "resnet50_acs.ckpt"),
    "ecg_omi": ("ecg_omi.ckpt", "ecgomi.ckpt", "resnet6.ckpt", "ecg_omi_acs.ckpt"),
    "hubert": ("hubert_ecg.pt", "hubert_ecg_acs.pt", "hubert.pt"),
}
RELEASED_MODELS: tuple[str, ...] = tuple(RELEASED_FILES)
# The input view of each released model (every HuBERT-ECG size reads the 12-lead view).
RELEASED_VIEWS: dict[str, str] = {
    m: model_spec(m).view for m in RELEASED_MODELS
}
AUTHORS_PREDICTION_PY = "authors_prediction_py"
AUTHORS_TEST_PY = "authors_test_py"
AUTHORS_TEST_PY_MEAN = "authors_test_py_mean"
BENCHMARK_PROTOCOL = "benchmark"
PROTOCOLS: tuple[str, ...] = (
    AUTHORS_PREDICTION_PY, AUTHORS_TEST_PY, AUTHORS_TEST_PY_MEAN, BENCHMARK_PROTOCOL,
)
# The protocol each released model predicts with by default: the authors' own script.
RELEASED_PROTOCOLS: dict[str, str] = {
    m: AUTHORS_TEST_PY if m == "hubert" else AUTHORS_PREDICTION_PY for m in RELEASED_MODELS
}
# Where an import puts the verified copies and their manifest, under the storage root.
PREFIX = "models/released"
MANIFEST = f"{PREFIX}/manifest.json"


class UnknownProtocolError(ValueError):
    """A prediction protocol that does not apply to a released model."""


def check_protocol(model: str, protocol: str | None) -> str:
    """``protocol`` (default: the model's authors' protocol) when it applies to ``model``."""
    protocol = protocol or RELEASED_PROTOCOLS.get(model, "")
    allowed = (
        (AUTHORS_TEST_PY, AUTHORS_TEST_PY_MEAN) if model == "hubert" else (AUTHORS_PREDICTION_PY,)
    )
    if protocol not in (*allowed, BENCHMARK_PROTOCOL):
        raise UnknownProtocolError(
            f"protocol {protocol!r} does not apply to released {model}; expected one of "
            f"{', '.join((*allowed, BENCHMARK_PROTOCOL))}"
        )
    return protocol


def released_label(name: str, protocol: str | None = None) -> str:
    """How the report names a released model's row: ``s4 (released, authors_prediction_py)``
    (the protocol defaults to the model's authors' protocol)."""
    return f"{name} (released, {check_protocol(name, protocol)})"
