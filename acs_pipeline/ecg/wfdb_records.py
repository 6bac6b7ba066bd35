"""Any WFDB record (such as the PTB record s0010_re) in the Nightingale (15, 5000) layout."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy import signal

from acs_pipeline.ecg.leads import FS, LEADS, LONG_LEADS, N_SAMPLES, WaveformError, lead_window


def _record_base(record_path: str | Path) -> str:
    """Record path without a ``.hea``/``.dat`` suffix, as ``wfdb.rdrecord`` wants it."""
    path = Path(record_path)
    if path.suffix.lower() in {".hea", ".dat"}:
        path = path.with_suffix("")
    return str(path)


def _twelve_leads(record_path: str | Path, start_s: float) -> np.ndarray:
    """The 12 standard leads, 10 s from ``start_s``, at 500 Hz: (12, 5000) float64 in mV."""
    base = _record_base(record_path)
    try:
        record = wfdb.rdrecord(base)
    except (OSError, ValueError) as exc:
        raise WaveformError("corrupt_record", f"{base}: cannot read WFDB record ({exc})") from exc
    names = [n.strip().lower() for n in record.sig_name]
    missing = [lead for lead in LEADS if lead.lower() not in names]
    if missing:
        raise WaveformError(
            "missing_leads",
            f"{base}: no signal named {missing}; expected the 12 standard leads, has {names}",
        )
    cols = [names.index(lead.lower()) for lead in LEADS]
    x = np.asarray(record.p_signal, dtype=np.float64)[:, cols].T
    ratio = Fraction(FS) / Fraction(record.fs).limit_denominator(1000)
    if ratio != 1:
        x = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    start = int(round(start_s * FS))
    if start < 0 or start + N_SAMPLES > x.shape[-1]:
        raise WaveformError(
            "record_too_short",
            f"{base}: {x.shape[-1] / FS:.1f} s long; expected 10 s from {start_s} s",
        )
    return x[:, start : start + N_SAMPLES]


def record_to_12lead(record_path: str | Path, start_s: float = 0.0) -> np.ndarray:
    """The full 12 leads (I ... V6) of 10 s from ``start_s`` at 500 Hz: (12, 5000) float32."""
    return _twelve_leads(record_path, start_s).astype(np.float32)


def record_to_nightingale(record_path: str | Path, start_s: float = 0.0) -> np.ndarray:
    """A WFDB record laid out like an ``ed-bwh-ecg`` npz: (15, 5000) float32, mV.

    Rows 0-11: each short lead only in its printed 2.5-s window (lead j in window j // 3), NaN
    elsewhere; rows 12-14: the full 10-s V1, II, V5.
    """
    full = _twelve_leads(record_path, start_s)
    out = np.full((15, N_SAMPLES), np.nan, dtype=np.float64)
    for j in range(12):
        out[j, lead_window(j)] = full[j, lead_window(j)]
    for row, lead in enumerate(LONG_LEADS, start=12):
        out[row] = full[LEADS.index(lead)]
    return out.astype(np.float32)
