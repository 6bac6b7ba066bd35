"""From the heart vector to a recorded 12-lead ECG and its printed Nightingale page.

`render` projects a recording's heart vector onto V1-V6, I and II (Dower), adds baseline
wander, mains and muscle noise, and derives III, aVR, aVL and aVF from the noisy I and II.
`to_nightingale` lays the 12 leads out as the printed 3x4 page with three rhythm strips.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

from acs_pipeline.ecg.leads import (
    FS,
    LEADS,
    LONG_LEADS,
    LONG_ROWS,
    N_SAMPLES,
    SHAPE,
    lead_window,
)
from acs_pipeline.synth import SynthError
from acs_pipeline.synth.dipole import (
    DOWER,
    Fiducials,
    Ischemia,
    Morphology,
    Recording,
    heart_vector,
    random_morphology,
)

_LONG_INDEX = [LEADS.index(lead) for lead in LONG_LEADS]


def _add_noise(rng: np.random.Generator, eight: np.ndarray, level: float) -> np.ndarray:
    """Baseline wander, 60 Hz mains and muscle noise per lead, then digitising smoothing."""
    n = eight.shape[1]
    # Baseline wander (0.1-0.5 Hz, per lead + shared respiration): smooth, so it is evaluated
    # on a 10 Hz grid and interpolated linearly.
    step = 50
    tc = np.arange(n // step + 2) * (step / FS)
    freq = rng.uniform(0.1, 0.5, (8, 2, 1))
    amp = rng.uniform(0.01, 0.1, (8, 2, 1)) * level
    phase = rng.uniform(0.0, 2 * np.pi, (8, 2, 1))
    coarse = (amp * np.sin(2 * np.pi * freq * tc + phase)).sum(axis=1)
    resp = rng.uniform(0.0, 0.05) * level * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * tc)
    coarse += resp * rng.uniform(0.5, 1.0, (8, 1))
    w = np.arange(step) / step
    wander = (coarse[:, :-1, None] * (1 - w) + coarse[:, 1:, None] * w).reshape(8, -1)[:, :n]
    # 60 Hz mains: at 500 Hz the sine repeats every 25 samples.
    k = np.arange(25) * (2 * np.pi * 60.0 / FS)
    basis = np.stack([np.sin(k), np.cos(k)])
    coef = rng.normal(0.0, 0.01, (8, 2)) * level
    mains = np.resize(coef @ basis, (8, n))
    # Muscle noise, sometimes with a burst of tremor.
    emg = rng.random((8, n), dtype=np.float32) - np.float32(0.5)  # smoothing makes it Gaussian
    emg *= np.float32(rng.uniform(0.004, 0.015) * level * math.sqrt(12.0))
    if rng.random() < 0.3:
        t = np.arange(n) / FS
        emg *= (
            1.0 + rng.uniform(1.0, 4.0) * np.exp(-0.5 * ((t - rng.uniform(0, 10)) / 0.6) ** 2)
        ).astype(np.float32)
    noisy = eight + wander + mains + emg
    return gaussian_filter1d(noisy, sigma=1.5, axis=1, mode="nearest")


def _limb_leads(eight: np.ndarray) -> np.ndarray:
    """(8, N) V1..V6, I, II -> (12, N) float32 in LEADS order; III, aVR, aVL, aVF derived.

    I and II are cast to float32 first and the derived leads computed in float32, so that
    III == II - I etc. hold exactly on the returned array.
    """
    eight = eight.astype(np.float32)
    lead_i, lead_ii = eight[6], eight[7]
    out = np.empty((12, eight.shape[1]), dtype=np.float32)
    out[0], out[1] = lead_i, lead_ii
    out[2] = lead_ii - lead_i
    out[3] = -(lead_i + lead_ii) / np.float32(2)
    out[4] = lead_i - lead_ii / np.float32(2)
    out[5] = lead_ii - lead_i / np.float32(2)
    out[6:] = eight[:6]
    return out


def render(rng: np.random.Generator, rec: Recording) -> tuple[np.ndarray, Fiducials]:
    """A recording as (12, N_SAMPLES) float32 mV in `LEADS` order, and its fiducials."""
    v, fid = heart_vector(rng, rec)
    eight = DOWER @ v
    if rec.lead_reversal:  # left/right arm electrodes swapped: I -> -I, II -> III
        eight[7] = eight[7] - eight[6]
        eight[6] = -eight[6]
    eight = _add_noise(rng, eight, rec.noise)
    return _limb_leads(eight), fid


def synth_ecg(
    rng: np.random.Generator,
    *,
    heart_rate: float,
    ischemia: Ischemia | None = None,
    morphology: Morphology | None = None,
    rhythm: str = "sinus",
    noise: float = 1.0,
    lead_reversal: bool = False,
) -> np.ndarray:
    """One full 10-s 12-lead ECG at 500 Hz: (12, 5000) float32 mV in `LEADS` order.

    ``rhythm`` is ``'sinus'`` or ``'afib'``; ``noise`` scales wander, mains and muscle noise
    (0 = none; smoothing is always applied). Without ``morphology`` a random one is drawn.
    Leads III, aVR, aVL, aVF are derived from the noisy I and II (Einthoven/Goldberger exact).
    """
    if rhythm not in ("sinus", "afib"):
        raise SynthError(f"synth_ecg: rhythm {rhythm!r}; expected 'sinus' or 'afib'")
    if not heart_rate > 0:
        raise SynthError(f"synth_ecg: heart_rate must be positive, got {heart_rate}")
    morph = morphology if morphology is not None else random_morphology(rng)
    rec = Recording(morph, heart_rate, rhythm, ischemia, noise, lead_reversal)
    twelve, _ = render(rng, rec)
    return twelve


def to_nightingale(twelve: np.ndarray) -> np.ndarray:
    """(12, 5000) full leads -> (15, 5000) float32 printed-page layout.

    Short lead j keeps only window j // 3 (2.5 s each), NaN elsewhere; rows 12-14 are the 10-s
    rhythm strips V1, II, V5.
    """
    x = np.asarray(twelve, dtype=np.float32)
    if x.shape != (12, N_SAMPLES):
        raise SynthError(f"to_nightingale: got shape {x.shape}; expected (12, {N_SAMPLES})")
    out = np.full(SHAPE, np.nan, dtype=np.float32)
    for j in range(12):
        w = lead_window(j)
        out[j, w] = x[j, w]
    out[list(LONG_ROWS)] = x[_LONG_INDEX]
    return out
