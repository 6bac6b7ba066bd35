"""One ECG of the cohort: render it, read it like the machine, digitise the page, write the npz.

`write_ecg` draws everything from its own stream (seed, v1 or holdout, index), so ECGs can be
rendered in any order or process; npz archives carry a fixed zip timestamp.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from acs_pipeline.ecg.leads import LONG_ROWS, N_SAMPLES, WINDOW, lead_window
from acs_pipeline.synth.dipole import Recording, jitter_morphology
from acs_pipeline.synth.reader import measure, metadata, stemi_rule
from acs_pipeline.synth.render import render, to_nightingale

QUANTUM_MV = 0.005
NPZ_LEVEL = 3  # zlib level of the npz archives (savez_compressed uses 6: 20 % smaller, 2.5x slower)


@dataclass(frozen=True)
class EcgSpec:
    """What to render for one ECG and where to write it."""

    index: int
    ecg_id: str
    stream: int  # 1 = v1, 2 = holdout
    seed: int
    recording: Recording  # with the patient's morphology, jittered per ECG by `write_ecg`
    female: bool
    early_repol: bool
    path: str  # npz path


@dataclass(frozen=True)
class EcgResult:
    index: int
    metadata: dict
    rule: dict[str, bool]
    legacy: np.ndarray  # (3, 1000) float32


def _quantise(x: np.ndarray) -> np.ndarray:
    return (np.rint(x.astype(np.float64) / QUANTUM_MV) * QUANTUM_MV).astype(np.float32)


def _page(rng: np.random.Generator, twelve: np.ndarray) -> np.ndarray:
    """The digitised page: `to_nightingale` quantised to 0.005 mV, with occasional faults.

    About 4 % of ECGs have one short lead whose valid window is shifted by up to 40 samples,
    3 % one whose window is shorter (1080-1249 samples), 0.3 % one short lead entirely NaN.
    """
    valid = np.zeros((12, N_SAMPLES), dtype=bool)
    for j in range(12):
        valid[j, lead_window(j)] = True
    u = rng.random()
    j = int(rng.integers(12))
    w0 = lead_window(j).start
    if u < 0.003:
        valid[j] = False
    elif u < 0.043:
        shift = int(rng.integers(1, 41)) * (1 if rng.random() < 0.5 else -1)
        start = int(np.clip(w0 + shift, 0, N_SAMPLES - WINDOW))
        valid[j] = False
        valid[j, start : start + WINDOW] = True
    elif u < 0.073:
        length = int(rng.integers(1080, WINDOW))
        off = int(rng.integers(0, WINDOW - length + 1))
        valid[j] = False
        valid[j, w0 + off : w0 + off + length] = True
    page = to_nightingale(twelve)
    page[:12] = np.where(valid, twelve, np.nan)
    return _quantise(page)


def write_npz(path: Path, ecg: np.ndarray) -> None:
    """``np.savez_compressed(path, ecg=ecg)`` with a fixed zip timestamp (byte-reproducible)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(ecg), allow_pickle=False)
    info = zipfile.ZipInfo("ecg.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o600 << 16
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(info, buf.getvalue(), zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())


def write_ecg(spec: EcgSpec) -> EcgResult:
    """Render one ECG, write its npz page; return its metadata row, flags and legacy strips."""
    rng = np.random.default_rng([spec.seed, spec.stream, spec.index])
    rec = replace(spec.recording, morphology=jitter_morphology(rng, spec.recording.morphology))
    twelve, fid = render(rng, rec)
    meas = measure(twelve, fid)
    rule = stemi_rule(meas, female=spec.female)
    page = _page(rng, twelve)
    write_npz(Path(spec.path), page)
    legacy = gaussian_filter1d(page[list(LONG_ROWS)].astype(np.float64), 2.0, axis=1)[:, ::5]
    meta = metadata(rng, rec, fid, meas, rule, female=spec.female, early_repol=spec.early_repol)
    return EcgResult(spec.index, meta, rule, legacy.astype(np.float32))
