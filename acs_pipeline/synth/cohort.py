"""Synthetic ``ed-bwh-ecg`` cohort: heart-dipole 12-lead ECGs with a planted ACS signal.

The cohort is laid out exactly like the Nightingale dataset (DATA-CONTRACT sections 1, 2 and 7)::

    out_dir/ed-bwh-ecg/v1/{patient,ecg-metadata,ecg-ed-enc,ed-encounter,ecg-npy-index}.csv
    out_dir/ed-bwh-ecg/v1/ecg-waveform.npy                   (N, 3, 1000) legacy 100 Hz strips
    out_dir/ed-bwh-ecg/v1/ecg-waveforms-npz/{hex[:2]}/{hex}.npz    (15, 5000) float32, mV
    out_dir/ed-bwh-ecg/holdout/ecg-waveforms-npz/...         unlabelled holdout ECGs
    out_dir/synthetic-truth.csv                              oracle risk and labels per ECG

Generative model. Every ED visit has a latent ischaemia score ``z`` (correlated within a
patient; higher in cath-tested visits). The oracle ACS risk is ``sigmoid(a + b z)``; a tested
visit's ACS label is drawn from it, untested visits have ACS 0 (no cath, no stent). MACE rises
with ``z`` (and a frailty latent), and ACS implies MACE 90 % of the time. Intercepts are solved
so that the rates match DATA-CONTRACT section 2. Above a threshold, ``z`` shows on the waveform
as an injury current toward a coronary territory: a terminal QRS notch plus an ST shift, a
hyperacute T or a T inversion, mostly below the 0.1 mV that the machine reader flags.
Non-ischaemic ST-T changes (early repolarisation, LVH strain, bundle-branch block, and per-visit
mimics that are commoner in tested visits with a low risk) make the flags non-specific. The
machine flags are read off each generated waveform (median beats) by a STEMI-style rule plus a
little reader noise. In a tested cohort the four flags reach an AUROC of about 0.50-0.55, the
oracle about 0.85, and a simple model on median-beat samples about 0.7.

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded by ``seed`` and a
fixed stream id (per ECG for the waveforms), so the same arguments give the same bytes whatever
``workers`` is; npz archives carry a fixed zip timestamp.
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import brentq
from scipy.special import expit

FS = 500
N_SAMPLES = 5000
WINDOW = 1250
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LONG_LEADS = ("V1", "II", "V5")
_LONG_INDEX = (6, 1, 10)
QUANTUM_MV = 0.005
NPZ_LEVEL = 3  # zlib level of the npz archives (savez_compressed uses 6: 20 % smaller, 2.5x slower)

# Dower matrix, rows V1..V6, I, II; columns X (left), Y (feet), Z (back) of the Frank system.
DOWER = np.array(
    [
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
        [0.632, -0.235, 0.059],
        [0.235, 1.066, -0.132],
    ]
)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


TERRITORIES = ("LAD", "RCA", "LCx")
TERRITORY_DIRECTIONS = {
    "LAD": _unit((0.45, 0.0, -0.9)),  # anterior: -Z with some +X
    "RCA": _unit((-0.2, 1.0, 0.1)),  # inferior: +Y
    "LCx": _unit((1.0, 0.0, 0.25)),  # lateral: +X
}
# Leads that face each territory (where its ST elevation shows); used by tests and summaries.
TERRITORY_LEADS = {"LAD": ("V2", "V3", "V4"), "RCA": ("II", "III", "aVF"), "LCx": ("I", "V5", "V6")}

DATASET = "ed-bwh-ecg"
DATE_START, DATE_END = datetime(2110, 1, 1), datetime(2120, 1, 1)  # dates shifted into the 2110s
HOLDOUT_TESTED_SHARE = 0.5  # holdout ECGs: half from cath-tested visits, so ACS can be scored
DUPLICATE_SHARE = 0.01
EXCLUDED_SHARE = 0.35

PATIENT_COLUMNS = (
    "patient_ngsci_id", "sex", "race_black", "race_hispanic", "race_white", "race_other",
    "agi_under_25k", "agi_25k_to_50k", "agi_50k_to_75k", "agi_75k_to_100k", "agi_100k_to_200k",
    "agi_above_200k",
)  # fmt: skip
INTERVALS = ("pr_interval", "qrs_duration", "qtqtc", "qt_interval", "qtc_interval", "vent_rate")
FLAGS = (
    "has_bbb", "has_afib", "has_st", "has_pacemaker", "has_lvh", "has_normal", "has_normal_ecg",
    "has_normal_sinus", "has_depress", "has_st_eleva", "has_twave", "has_aberran_bbb",
    "has_jpoint_repol", "has_jpoint_eleva", "has_twave_inver", "has_twave_abnormal",
    "has_nonspecific", "has_rhythm_disturbance", "has_prolonged_qt", "has_lead_reversal",
    "has_poor_or_quality",
)  # fmt: skip
METADATA_COLUMNS = (
    "patient_ngsci_id", "ecg_id", "date", "p-r-t_axes", "p_axes", "r_axes", "t_axes",
    *(c for name in INTERVALS for c in (name, f"{name}_units")),
    *FLAGS,
)  # fmt: skip
ENCOUNTER_COLUMNS = (
    "patient_ngsci_id", "ed_enc_id", "start_datetime", "end_datetime", "age_at_admit",
    "macetrop_030_pos", "death_030_day", "macetrop_pos_or_death_030", "stent_010_day",
    "cabg_010_day", "stent_or_cabg_010_day", "ami_day_of", "days_to_ami", "maxtrop_sameday",
    "tn_group_sameday", "disch_disp", "disch_obs", "test_010_day", "stress_010_day",
    "cath_010_day", "days_to_stress", "days_to_cath", "first_test", "excl_flag_c_int",
    "excl_flag_chronic", "excl_flag_death", "exclude_modeling", "exclude",
)  # fmt: skip
TRUTH_COLUMNS = (
    "ecg_id", "dataset", "oracle_risk", "acs", "mace", "territory", "subtle", "duplicate_of",
)  # fmt: skip

# Latent model constants (see module docstring).
Z_MEAN = {"untested": 0.0, "tested": 1.2, "excluded": 0.4}
RISK_SLOPE = 1.8  # logit of the oracle ACS risk per unit of z
ACS_RATE_TESTED = 0.39
MACE_RATE_UNTESTED = 0.092  # before the exclusion of frail patients: 0.084 among the included
MACE_RATE_TESTED = 0.54
MACE_GIVEN_ACS = 0.9
MACE_RATE_EXCLUDED = 0.13  # + the deaths and the frailty selection: ~0.26
Z_ISCHEMIA = 1.3  # z above which the visit's ECGs carry an injury current
ISCHEMIA_GROWTH = 0.5  # log injury size per unit of z above Z_ISCHEMIA
ISCHEMIA_ST_MV = 0.045  # median injury current at the threshold (mV, dipole units)
ISCHEMIA_NOTCH_MV = 0.1  # median terminal QRS notch at the threshold (mV)
# Non-ischaemic ST-T changes per visit (make the flags non-specific); tested visits with a low
# risk were more often tested *because* of such a change: 0.05 + 0.15 * (1 - risk).
MIMIC_RATE = {"untested": 0.05, "excluded": 0.1}
MIMIC_TESTED = (0.05, 0.15)
ECGS_PER_VISIT = {"untested": 0.45, "tested": 1.0, "excluded": 0.8}  # Poisson extra ECGs


class SynthError(ValueError):
    """Bad arguments to the generator or an output directory that cannot be written."""


# --------------------------------------------------------------------------------------------
# Heart-dipole model
# --------------------------------------------------------------------------------------------

_P, _Q, _R, _S, _T, _RP = range(6)  # wave order: P, Q, R, S, T, terminal R' (bundle-branch block)
_BASE_AMPS = np.array(
    [
        [0.08, 0.12, -0.02],
        [-0.12, 0.02, -0.12],
        [1.00, 0.55, 0.45],
        [-0.25, -0.12, 0.35],
        [0.35, 0.22, -0.18],
        [0.0, 0.0, 0.0],
    ]
)
_BASE_CENTRES = np.array([-0.165, -0.020, 0.0, 0.022, 0.26, 0.06])  # s from R; T at RR = 1 s
_BASE_WIDTHS = np.array([0.022, 0.008, 0.010, 0.009, 0.046, 0.014])  # Gaussian sd, s


@dataclass(frozen=True, eq=False)
class Morphology:
    """A patient's (or one ECG's) heart vector: Gaussian waves P, Q, R, S, T, R'.

    ``amplitudes`` (6, 3) mV in Frank X/Y/Z, ``centres`` (6,) s from the R peak (the T centre
    at RR = 1 s, scaled by sqrt(RR)), ``widths`` (6,) Gaussian sd in s, ``st_offset`` (3,) a
    non-ischaemic ST-segment vector (early repolarisation, LVH strain), ``paced`` adds a pacing
    spike before each QRS.
    """

    amplitudes: np.ndarray
    centres: np.ndarray
    widths: np.ndarray
    st_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    paced: bool = False

    @property
    def qrs_onset(self) -> float:
        """QRS onset, s relative to the R peak."""
        return float(np.min(self.centres[_Q : _S + 1] - 2.5 * self.widths[_Q : _S + 1]))

    @property
    def j_point(self) -> float:
        """QRS end (J point), s relative to the R peak."""
        ends = self.centres[_Q : _S + 1] + 2.5 * self.widths[_Q : _S + 1]
        j = float(np.max(ends))
        if np.linalg.norm(self.amplitudes[_RP]) > 0.05:
            j = max(j, float(self.centres[_RP] + 2.5 * self.widths[_RP]))
        return j


@dataclass(frozen=True)
class Ischemia:
    """Acute ischaemia as an injury current toward a coronary territory.

    ``st_mv``: injury-current magnitude (mV, dipole units) during the ST segment; negative =
    subendocardial (ST depression in the facing leads). ``hyperacute_mv``: an extra broad T
    wave along the territory. ``t_inversion_mv``: T-wave component away from the territory.
    ``qrs_notch_mv``: terminal QRS distortion (a narrow notch at the end of the QRS along the
    territory), a sign that no classical flag looks at.
    ``direction``: unit vector (Frank X, Y, Z); default the territory's.
    """

    territory: str
    st_mv: float
    hyperacute_mv: float = 0.0
    t_inversion_mv: float = 0.0
    qrs_notch_mv: float = 0.0
    direction: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.territory not in TERRITORY_DIRECTIONS:
            raise SynthError(f"Ischemia: territory {self.territory!r} not in {TERRITORIES}")

    def vector(self) -> np.ndarray:
        if self.direction is None:
            return TERRITORY_DIRECTIONS[self.territory]
        return _unit(self.direction)


def _rotation(rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """A random rotation matrix with small angles (sd in degrees) about X, Y and Z."""
    ax, ay, az = np.deg2rad(rng.normal(0.0, sd_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_morphology(
    rng: np.random.Generator,
    *,
    female: bool = False,
    lvh: bool = False,
    early_repol: bool = False,
    bbb: bool = False,
    paced: bool = False,
    flat_t: bool = False,
) -> Morphology:
    """Draw a patient's heart-vector morphology (axis, amplitudes, timing, conditions)."""
    amps = _BASE_AMPS.copy()
    amps[_T] = _rotation(rng, 12.0) @ amps[_T]  # QRS-T angle varies
    amps = amps @ _rotation(rng, 15.0).T  # anatomical heart orientation
    amps *= np.exp(rng.normal(0.0, 0.2))  # body habitus
    amps *= np.exp(rng.normal(0.0, 0.15, (6, 1)))
    if female:
        amps[_Q : _S + 1] *= 0.85
        amps[_T] *= 0.85
    centres = _BASE_CENTRES.copy()
    widths = _BASE_WIDTHS * np.exp(rng.normal(0.0, 0.08, 6))
    centres[_P] -= rng.normal(0.0, 0.018)
    centres[_T] *= np.exp(rng.normal(0.0, 0.05))
    st = np.zeros(3)
    if flat_t:
        amps[_T] *= rng.uniform(0.15, 0.45)
    if lvh:
        amps[_Q : _S + 1] *= rng.uniform(1.7, 2.3)
        widths[_Q : _S + 1] *= 1.15
        if rng.random() < 0.6:  # strain: ST depression and T inversion away from the QRS
            r_dir = amps[_R] / np.linalg.norm(amps[_R])
            st -= rng.uniform(0.04, 0.1) * r_dir
            amps[_T] -= rng.uniform(0.4, 0.9) * np.linalg.norm(amps[_T]) * r_dir
    if early_repol:
        t_dir = amps[_T] / np.linalg.norm(amps[_T])
        st += rng.uniform(0.04, 0.12) * t_dir
    if bbb or paced:
        widths[_Q : _S + 1] *= 1.5
        centres[_Q] *= 1.8
        centres[_S] *= 2.0
        terminal = np.array([-0.45, 0.0, -0.6]) * rng.uniform(0.6, 1.2)
        amps[_RP] = terminal
        # secondary ST-T change: repolarisation opposite to the late depolarisation
        t_size = np.linalg.norm(amps[_T])
        amps[_T] = 0.5 * amps[_T] - 0.6 * t_size * _unit(tuple(terminal))
        st -= 0.05 * _unit(tuple(terminal))
    if paced:
        centres[_RP] = 0.09
        amps[_R] = np.array([0.9, -0.3, 0.9]) * rng.uniform(0.8, 1.2)
    return Morphology(amps, centres, widths, st, paced=paced)


def jitter_morphology(
    rng: np.random.Generator, morph: Morphology, scale: float = 1.0
) -> Morphology:
    """One recording of a patient's morphology: electrode placement and day-to-day variation."""
    amps = morph.amplitudes @ _rotation(rng, 3.0 * scale).T
    amps = amps * np.exp(rng.normal(0.0, 0.05 * scale, (6, 1)))
    widths = morph.widths * np.exp(rng.normal(0.0, 0.03 * scale, 6))
    return replace(morph, amplitudes=amps, widths=widths)


@dataclass(frozen=True)
class _Fiducials:
    """Where the generator put things (for the machine read and the interval columns)."""

    r_index: np.ndarray  # R-peak sample indices (may lie outside 0..N-1)
    qrs_onset: float  # s relative to R
    j_point: float
    t_centre: float  # at the mean RR
    t_width: float
    mean_rr: float


def _rr_series(rng: np.random.Generator, heart_rate: float, rhythm: str) -> np.ndarray:
    """R-peak times (s) covering the 10-s record with margins; HRV for sinus, chaos for AF."""
    rr = 60.0 / float(np.clip(heart_rate, 30.0, 220.0))
    n = int(14.0 / rr) + 8
    if rhythm == "afib":
        rrs = rr * np.exp(rng.normal(0.0, 0.2, n))
    else:
        t_guess = np.arange(n) * rr
        resp = 0.04 * np.sin(2 * np.pi * rng.uniform(0.2, 0.33) * t_guess + rng.uniform(0, 6.3))
        lf = 0.02 * np.sin(2 * np.pi * rng.uniform(0.04, 0.12) * t_guess + rng.uniform(0, 6.3))
        rrs = rr * (1.0 + resp + lf + rng.normal(0.0, 0.012, n))
    rrs = np.clip(rrs, 0.27, 2.5)
    start = -rng.uniform(0.0, rrs[0]) - 0.8
    times = start + np.concatenate([[0.0], np.cumsum(rrs[:-1])])
    return times[times < 10.8]


def _synth_dipole(
    rng: np.random.Generator,
    *,
    heart_rate: float,
    morphology: Morphology,
    ischemia: Ischemia | None,
    rhythm: str,
) -> tuple[np.ndarray, _Fiducials]:
    """Heart vector v(t) (3, N_SAMPLES) float64 and the fiducials."""
    r_times = _rr_series(rng, heart_rate, rhythm)
    rr_prev = np.diff(r_times, prepend=r_times[0] - (r_times[1] - r_times[0]))
    rr = np.clip(rr_prev, 0.3, 2.0)
    nb = r_times.size
    m = morphology
    # extra waves: 6 hyperacute T, 7 pacing spike, 8 terminal QRS notch
    amps = np.concatenate([m.amplitudes, np.zeros((3, 3))])
    extra_c, extra_w = [0.0, m.qrs_onset - 0.02, m.j_point - 0.008], [0.0, 0.0025, 0.005]
    cent = np.tile(np.concatenate([m.centres, extra_c]), (nb, 1))
    wid = np.tile(np.concatenate([m.widths, extra_w]), (nb, 1))
    cent[:, _T] = m.centres[_T] * np.sqrt(rr)
    wid[:, _T] = m.widths[_T] * rr**0.25
    cent[:, 6] = cent[:, _T] + 0.01
    wid[:, 6] = wid[:, _T] * 1.3
    st_vec = np.asarray(m.st_offset, dtype=float).copy()
    if ischemia is not None:
        d = ischemia.vector()
        st_vec += ischemia.st_mv * d
        amps[_T] -= ischemia.t_inversion_mv * d
        amps[6] = ischemia.hyperacute_mv * d
        amps[8] = ischemia.qrs_notch_mv * d
    if rhythm == "afib":
        amps[_P] = 0.0
    if m.paced:
        amps[7] = np.array([0.5, 1.2, 0.6])
    beat_scale = 1.0 + 0.05 * np.sin(2 * np.pi * 0.25 * r_times + rng.uniform(0, 6.3))

    lo, hi = int(-0.35 * FS), int(0.75 * FS)
    offs = np.arange(lo, hi) / FS  # (W,)
    # P, Q, R, S, R' and the pacing spike keep their shape from beat to beat: one template.
    template = np.zeros((hi - lo, 3))
    for k in (_P, _Q, _R, _S, _RP, 7, 8):
        if np.any(amps[k]):
            template += np.exp(-0.5 * ((offs - cent[0, k]) / wid[0, k]) ** 2)[:, None] * amps[k]
    beats = np.repeat(template[None], nb, axis=0)
    # T, hyperacute T and the ST plateau move with the RR interval (after the R peak only).
    op = offs[-lo:]
    late = np.exp(-0.5 * ((op - cent[:, _T, None]) / wid[:, _T, None]) ** 2)[..., None] * amps[_T]
    if np.any(amps[6]):
        g6 = np.exp(-0.5 * ((op - cent[:, 6, None]) / wid[:, 6, None]) ** 2)
        late += g6[..., None] * amps[6]
    j = m.j_point
    if np.any(st_vec):
        plateau = expit((op - j) / 0.004) * expit((cent[:, _T, None] - op) / 0.03)
        late += plateau[..., None] * st_vec
    beats[:, -lo:] += late
    beats *= beat_scale[:, None, None]

    r_idx = np.rint(r_times * FS).astype(int)
    first = min(0, int(r_idx.min()) + lo)  # sample index of out[0]
    out = np.zeros((max(N_SAMPLES, int(r_idx.max()) + hi) - first, 3))
    for b in range(nb):
        s = r_idx[b] + lo - first
        out[s : s + hi - lo] += beats[b]
    v = out[-first : N_SAMPLES - first].T
    if rhythm == "afib":  # fibrillatory waves, largest in V1
        t = np.arange(N_SAMPLES) / FS
        f = rng.uniform(5.0, 7.5)
        phase = np.cumsum(rng.normal(0.0, 0.05, N_SAMPLES))
        fw = rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * f * t + phase)
        v = v + np.outer(_unit((-0.3, 0.1, -0.6)), fw)
    mean_rr = float(np.mean(rr))
    fid = _Fiducials(
        r_index=r_idx,
        qrs_onset=m.qrs_onset,
        j_point=j,
        t_centre=float(m.centres[_T] * math.sqrt(mean_rr)),
        t_width=float(m.widths[_T] * mean_rr**0.25),
        mean_rr=mean_rr,
    )
    return v, fid


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


def _render(
    rng: np.random.Generator,
    *,
    heart_rate: float,
    morphology: Morphology,
    ischemia: Ischemia | None,
    rhythm: str,
    noise: float,
    lead_reversal: bool,
) -> tuple[np.ndarray, _Fiducials]:
    v, fid = _synth_dipole(
        rng, heart_rate=heart_rate, morphology=morphology, ischemia=ischemia, rhythm=rhythm
    )
    eight = DOWER @ v
    if lead_reversal:  # left/right arm electrodes swapped: I -> -I, II -> III
        eight[7] = eight[7] - eight[6]
        eight[6] = -eight[6]
    eight = _add_noise(rng, eight, noise)
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
    twelve, _ = _render(
        rng,
        heart_rate=heart_rate,
        morphology=morph,
        ischemia=ischemia,
        rhythm=rhythm,
        noise=noise,
        lead_reversal=lead_reversal,
    )
    return twelve


def to_nightingale(twelve: np.ndarray) -> np.ndarray:
    """(12, 5000) full leads -> (15, 5000) float32 printed-page layout.

    Short lead j keeps only window j // 3 (2.5 s each), NaN elsewhere; rows 12-14 are the 10-s
    rhythm strips V1, II, V5.
    """
    x = np.asarray(twelve, dtype=np.float32)
    if x.shape != (12, N_SAMPLES):
        raise SynthError(f"to_nightingale: got shape {x.shape}; expected (12, {N_SAMPLES})")
    out = np.full((15, N_SAMPLES), np.nan, dtype=np.float32)
    for j in range(12):
        w = slice((j // 3) * WINDOW, (j // 3 + 1) * WINDOW)
        out[j, w] = x[j, w]
    out[12:] = x[list(_LONG_INDEX)]
    return out


# --------------------------------------------------------------------------------------------
# Machine read: median beats, STEMI-style rule, reader noise
# --------------------------------------------------------------------------------------------

# Contiguous lead pairs (indices into LEADS): lateral, inferior, precordial.
_ST_PAIRS = ((0, 4), (1, 2), (1, 5), (2, 5), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11))
_TINV_PAIRS = ((0, 4), (1, 5), (7, 8), (8, 9), (9, 10), (10, 11))  # not III, aVR, V1


@dataclass(frozen=True)
class Measurements:
    """Per-lead values from the median beat, relative to the PR-segment baseline (mV)."""

    st_j: np.ndarray  # (12,) at the J point
    st_j60: np.ndarray  # (12,) at J + 60 ms
    t_amp: np.ndarray  # (12,) signed T-wave extreme
    r_amp: np.ndarray  # (12,) QRS maximum
    s_amp: np.ndarray  # (12,) QRS minimum


def measure(twelve: np.ndarray, fid: _Fiducials) -> Measurements:
    """Median-beat measurements of a full (12, N) ECG at the generator's R peaks.

    Only the samples that the measurements use are gathered: the PR-segment baseline, the QRS,
    J and J + 60 ms, and the T-wave window.
    """

    def span(a: float, b: float) -> np.ndarray:
        return np.arange(round(a * FS), round(b * FS) + 1)

    parts = {
        "base": span(fid.qrs_onset - 0.03, fid.qrs_onset - 0.008),
        "qrs": span(fid.qrs_onset, fid.j_point),
        "j": span(fid.j_point, fid.j_point),
        "j60": span(fid.j_point + 0.06, fid.j_point + 0.06),
        "t": span(fid.t_centre - 1.2 * fid.t_width, fid.t_centre + 1.2 * fid.t_width),
    }
    offs = np.concatenate(list(parts.values()))
    n = twelve.shape[1]
    r = fid.r_index[(fid.r_index + offs.min() >= 0) & (fid.r_index + offs.max() < n)]
    if r.size == 0:
        raise SynthError("measure: no complete beat in the record")
    beat = np.median(twelve[:, r[:, None] + offs[None, :]], axis=1).astype(np.float64)
    cuts = np.cumsum([0, *(len(v) for v in parts.values())])
    seg = {k: beat[:, cuts[i] : cuts[i + 1]] for i, k in enumerate(parts)}
    base = seg["base"].mean(axis=1, keepdims=True)
    seg = {k: v - base for k, v in seg.items()}
    tw = seg["t"]
    return Measurements(
        st_j=seg["j"][:, 0],
        st_j60=seg["j60"][:, 0],
        t_amp=tw[np.arange(12), np.argmax(np.abs(tw), axis=1)],
        r_amp=seg["qrs"].max(axis=1),
        s_amp=seg["qrs"].min(axis=1),
    )


def stemi_rule(meas: Measurements, *, female: bool = False) -> dict[str, bool]:
    """The four classical flags by rule (no reader noise).

    ST elevation: ST at J+60 ms >= 0.1 mV in two contiguous leads (V2-V3: 0.2 mV, women 0.15).
    ST depression: <= -0.05 mV in two contiguous leads. T inversion: T <= -0.1 mV in two
    contiguous leads (not III, aVR, V1). T abnormal: flat T (|T| < 0.1 mV) in two of I, II,
    V3-V6, an isolated inverted T, or a peaked T >= 1.2 mV.
    """
    st = meas.st_j60
    thr = np.full(12, 0.1)
    thr[[7, 8]] = 0.15 if female else 0.2
    elev = any(st[a] >= thr[a] and st[b] >= thr[b] for a, b in _ST_PAIRS)
    depr = any(st[a] <= -0.05 and st[b] <= -0.05 for a, b in _ST_PAIRS)
    t = meas.t_amp
    inv = any(t[a] <= -0.1 and t[b] <= -0.1 for a, b in _TINV_PAIRS)
    upright = [0, 1, 8, 9, 10, 11]
    flat = int(np.sum(np.abs(t[upright]) < 0.1)) >= 2
    isolated = bool(np.any(t[[0, 1, 7, 8, 9, 10, 11]] <= -0.1))
    peaked = bool(np.any(t[6:] >= 1.2))
    return {
        "has_st_eleva": bool(elev),
        "has_depress": bool(depr),
        "has_twave_inver": bool(inv),
        "has_twave_abnormal": bool(flat or isolated or peaked),
    }


def _reader(rng: np.random.Generator, value: bool, fp: float = 0.01, fn: float = 0.05) -> int:
    """A statement as the machine printed it: the rule's value with a little reader noise."""
    u = rng.random()
    return int((u >= fn) if value else (u < fp))


# --------------------------------------------------------------------------------------------
# One ECG of the cohort
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EcgSpec:
    index: int
    ecg_id: str
    stream: int  # 1 = v1, 2 = holdout
    seed: int
    morphology: Morphology
    heart_rate: float
    rhythm: str
    ischemia: Ischemia | None
    noise: float
    lead_reversal: bool
    female: bool
    early_repol: bool
    path: str  # npz path


@dataclass(frozen=True)
class _EcgResult:
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
        valid[j, (j // 3) * WINDOW : (j // 3 + 1) * WINDOW] = True
    u = rng.random()
    j = int(rng.integers(12))
    w0 = (j // 3) * WINDOW
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


def _axis(vec: np.ndarray) -> int:
    """Frontal-plane axis (degrees) of a dipole vector, from its projections on I and aVF."""
    lead_i, lead_ii = DOWER[6] @ vec, DOWER[7] @ vec
    return int(round(math.degrees(math.atan2(lead_ii - lead_i / 2, lead_i))))


def _synth_one(spec: _EcgSpec) -> _EcgResult:
    rng = np.random.default_rng([spec.seed, spec.stream, spec.index])
    morph = jitter_morphology(rng, spec.morphology)
    twelve, fid = _render(
        rng,
        heart_rate=spec.heart_rate,
        morphology=morph,
        ischemia=spec.ischemia,
        rhythm=spec.rhythm,
        noise=spec.noise,
        lead_reversal=spec.lead_reversal,
    )
    meas = measure(twelve, fid)
    rule = stemi_rule(meas, female=spec.female)
    page = _page(rng, twelve)
    write_npz(Path(spec.path), page)
    legacy = gaussian_filter1d(page[12:].astype(np.float64), 2.0, axis=1)[:, ::5]
    return _EcgResult(
        spec.index, _metadata(rng, spec, morph, fid, meas, rule), rule, legacy.astype(np.float32)
    )


def _metadata(
    rng: np.random.Generator,
    spec: _EcgSpec,
    morph: Morphology,
    fid: _Fiducials,
    meas: Measurements,
    rule: dict[str, bool],
) -> dict:
    """Interval, axis and statement columns of one ECG's machine read."""
    afib = spec.rhythm == "afib"
    rate = int(round(60.0 / fid.mean_rr + rng.normal(0, 1)))
    onset = fid.qrs_onset
    p_onset = morph.centres[_P] - 2.5 * morph.widths[_P]
    pr = None if afib else int(round(1000 * (onset - p_onset) + rng.normal(0, 4)))
    qrs = int(round(1000 * (fid.j_point - onset) + rng.normal(0, 3)))
    qt = int(round(1000 * (fid.t_centre + 2.5 * fid.t_width - onset) + rng.normal(0, 6)))
    qtc = int(round(qt / math.sqrt(fid.mean_rr)))
    area = morph.amplitudes * morph.widths[:, None]
    p_ax = None if afib else _axis(area[_P])
    r_ax = _axis(area[_Q] + area[_R] + area[_S] + area[_RP])
    t_area = area[_T]
    if spec.ischemia is not None:  # the T changes of the injury current
        isch = spec.ischemia
        t_area = (
            t_area
            + (1.3 * isch.hyperacute_mv - isch.t_inversion_mv) * isch.vector() * (morph.widths[_T])
        )
    t_ax = _axis(t_area)
    f: dict[str, int] = {k: _reader(rng, v) for k, v in rule.items()}
    st = meas.st_j60
    sokolow = -meas.s_amp[6] + max(meas.r_amp[10], meas.r_amp[11])
    cornell = meas.r_amp[4] - meas.s_amp[8]
    lvh = sokolow >= 3.5 or cornell >= (2.0 if spec.female else 2.8)
    wide = qrs >= 120
    j_elev = any(meas.st_j[a] >= 0.1 and meas.st_j[b] >= 0.1 for a, b in _ST_PAIRS)
    f["has_pacemaker"] = int(morph.paced)
    f["has_bbb"] = _reader(rng, wide and not morph.paced, fn=0.1)
    f["has_afib"] = _reader(rng, afib, fp=0.005, fn=0.05)
    f["has_aberran_bbb"] = _reader(rng, afib and wide, fp=0.003, fn=0.3)
    f["has_lvh"] = _reader(rng, lvh and not wide, fp=0.01, fn=0.2)
    f["has_jpoint_eleva"] = _reader(rng, j_elev, fp=0.005, fn=0.5)
    f["has_jpoint_repol"] = _reader(rng, j_elev and spec.early_repol, fp=0.005, fn=0.3)
    nonspec = (not rule["has_st_eleva"] and not rule["has_depress"]) and (
        bool(np.any(np.abs(np.delete(st, 3)) >= 0.05)) or rule["has_twave_abnormal"]
    )
    f["has_nonspecific"] = _reader(rng, nonspec, fp=0.02, fn=0.3)
    f["has_st"] = int(f["has_st_eleva"] or f["has_depress"] or f["has_nonspecific"])
    f["has_twave"] = int(f["has_twave_inver"] or f["has_twave_abnormal"])
    f["has_prolonged_qt"] = _reader(rng, qtc >= 470, fp=0.005, fn=0.1)
    f["has_rhythm_disturbance"] = int(afib or morph.paced or rng.random() < 0.03)
    f["has_lead_reversal"] = _reader(rng, spec.lead_reversal, fp=0.001, fn=0.2)
    f["has_poor_or_quality"] = _reader(rng, spec.noise >= 2.5, fp=0.01, fn=0.2)
    f["has_normal_sinus"] = int(not afib and not morph.paced and 60 <= rate <= 100)
    abnormal = any(
        f[k]
        for k in FLAGS
        if k not in ("has_normal", "has_normal_ecg", "has_normal_sinus", "has_poor_or_quality")
    )
    f["has_normal_ecg"] = int(f["has_normal_sinus"] and not abnormal)
    f["has_normal"] = int(f["has_normal_ecg"] or (f["has_normal_sinus"] and rng.random() < 0.5))
    axes = {"p_axes": p_ax, "r_axes": r_ax, "t_axes": t_ax}
    prt = " ".join("" if a is None else str(a) for a in (p_ax, r_ax, t_ax)).strip()
    intervals = {
        "pr_interval": pr,
        "qrs_duration": qrs,
        "qtqtc": f"{qt}/{qtc}",
        "qt_interval": qt,
        "qtc_interval": qtc,
        "vent_rate": rate,
    }
    units = {f"{k}_units": ("BPM" if k == "vent_rate" else "ms") for k in INTERVALS}
    return {"p-r-t_axes": prt, **axes, **intervals, **units, **{k: f[k] for k in FLAGS}}


# --------------------------------------------------------------------------------------------
# The cohort
# --------------------------------------------------------------------------------------------

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)
_GH_W = _GH_W / _GH_W.sum()


def _normal_mean(fn, mu: float = 0.0, sd: float = 1.0) -> float:
    """E[fn(Z)] for Z ~ N(mu, sd^2) by Gauss-Hermite quadrature."""
    return float(np.sum(_GH_W * fn(mu + sd * _GH_X)))


@dataclass(frozen=True)
class _Calibration:
    acs_a: float
    mace_untested: float
    mace_tested_neg: float
    mace_excluded: float

    def risk(self, z: np.ndarray) -> np.ndarray:
        return expit(self.acs_a + RISK_SLOPE * z)


def _calibrate() -> _Calibration:
    """Intercepts that give the contract's rates (DATA-CONTRACT section 2) in expectation."""
    mt = Z_MEAN["tested"]
    a = brentq(
        lambda a: _normal_mean(lambda z: expit(a + RISK_SLOPE * z), mt) - ACS_RATE_TESTED, -30, 30
    )
    # MACE logit = c + z + 0.5 frailty  ->  N(c + mu, sqrt(1.25)) for the untested/excluded
    s = math.sqrt(1.25)
    mu = brentq(
        lambda c: _normal_mean(expit, c + Z_MEAN["untested"], s) - MACE_RATE_UNTESTED, -30, 30
    )
    mx = brentq(
        lambda c: _normal_mean(expit, c + Z_MEAN["excluded"], s) - MACE_RATE_EXCLUDED, -30, 30
    )
    # tested and ACS-negative: E[(1 - risk) sigmoid(c + z)] / E[1 - risk] = target
    target = (MACE_RATE_TESTED - ACS_RATE_TESTED * MACE_GIVEN_ACS) / (1 - ACS_RATE_TESTED)

    def neg_rate(c: float) -> float:
        num = _normal_mean(lambda z: (1 - expit(a + RISK_SLOPE * z)) * expit(c + z), mt)
        return num / (1 - ACS_RATE_TESTED) - target

    mn = brentq(neg_rate, -30, 30)
    return _Calibration(a, mu, mn, mx)


def _unique_hex(rng: np.random.Generator, n: int, digits: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        for v in rng.integers(0, 16**digits, size=n - len(out), dtype=np.int64):
            h = format(int(v), f"0{digits}x")
            if h not in taken:
                taken.add(h)
                out.append(h)
    return out


def _visit_ischemia(rng: np.random.Generator, z: float) -> Ischemia | None:
    """The injury current a visit's latent z shows on its ECGs (None below the threshold).

    Every ischaemic visit has a terminal QRS notch; half show an ST injury current (30 % of
    those subendocardial: depression facing the territory), a quarter hyperacute T waves and a
    quarter T inversion. Sizes grow with z; most stay below the machine's flag thresholds.
    """
    if z <= Z_ISCHEMIA:
        return None
    s = math.exp(ISCHEMIA_GROWTH * (z - Z_ISCHEMIA) + rng.normal(0.0, 0.35))
    territory = TERRITORIES[int(rng.choice(3, p=[0.45, 0.35, 0.20]))]
    d = TERRITORY_DIRECTIONS[territory] + rng.normal(0.0, 0.15, 3)
    direction = (float(d[0]), float(d[1]), float(d[2]))
    st, notch = ISCHEMIA_ST_MV * s, ISCHEMIA_NOTCH_MV * s
    form = rng.random()
    if form < 0.5:
        sign = -1.0 if rng.random() < 0.3 else 1.0
        return Ischemia(territory, sign * st, qrs_notch_mv=notch, direction=direction)
    if form < 0.75:
        return Ischemia(
            territory, 0.4 * st, hyperacute_mv=2.5 * st, qrs_notch_mv=notch, direction=direction
        )
    return Ischemia(
        territory, 0.3 * st, t_inversion_mv=2.5 * st, qrs_notch_mv=notch, direction=direction
    )


def _scale_ischemia(isch: Ischemia | None, k: float) -> Ischemia | None:
    if isch is None:
        return None
    return replace(
        isch,
        st_mv=isch.st_mv * k,
        hyperacute_mv=isch.hyperacute_mv * k,
        t_inversion_mv=isch.t_inversion_mv * k,
        qrs_notch_mv=isch.qrs_notch_mv * k,
    )


def _mimic(rng: np.random.Generator, morph: Morphology) -> Morphology:
    """A non-ischaemic ST-T change for one visit: diffuse ST elevation along the T vector
    (pericarditis, early repolarisation), strain-like ST depression with a flat T, or a
    globally flat or inverted T."""
    amps, st = morph.amplitudes.copy(), morph.st_offset.copy()
    t_dir = amps[_T] / np.linalg.norm(amps[_T])
    r_dir = amps[_R] / np.linalg.norm(amps[_R])
    kind = rng.random()
    if kind < 0.2:
        st = st + rng.uniform(0.06, 0.16) * t_dir
    elif kind < 0.4:
        st = st - rng.uniform(0.05, 0.12) * r_dir
        amps[_T] *= rng.uniform(-0.4, 0.5)
    elif kind < 0.7:
        amps[_T] *= rng.uniform(-1.0, -0.2)
    else:
        amps[_T] *= rng.uniform(0.05, 0.35)
    return replace(morph, amplitudes=amps, st_offset=st)


@dataclass(frozen=True)
class _Patient:
    pid: str
    female: bool
    age: float
    cad: float  # shared part of the visits' ischaemia latents
    frailty: float
    morphology: Morphology
    hr: float
    afib: bool
    early_repol: bool
    row: dict  # patient.csv row


def _draw_patient(rng: np.random.Generator, pid: str) -> _Patient:
    female = bool(rng.random() < 0.52)
    age = float(np.clip(rng.normal(57.0, 17.0), 18.0, 98.0))
    old = age > 70
    lvh = rng.random() < (0.12 if old else 0.05)
    early_repol = bool(rng.random() < (0.12 if (not female and age < 50) else 0.025))
    paced = rng.random() < (0.03 if age > 75 else 0.004)
    bbb = (not paced) and rng.random() < (0.08 if old else 0.025)
    flat_t = rng.random() < 0.12
    morph = random_morphology(
        rng, female=female, lvh=lvh, early_repol=early_repol, bbb=bbb, paced=paced, flat_t=flat_t
    )
    afib = bool(rng.random() < (0.12 if age > 75 else 0.025))
    hr = float(rng.normal(92.0 if afib else 78.0, 13.0))
    race = rng.choice(4, p=[0.2, 0.13, 0.59, 0.08])
    agi = rng.dirichlet([2.0, 2.5, 2.0, 1.5, 2.0, 1.0])
    row = {
        "patient_ngsci_id": pid,
        "sex": "Female" if female else "Male",
        "race_black": int(race == 0),
        "race_hispanic": int(race == 1),
        "race_white": int(race == 2),
        "race_other": int(race == 3),
        **{c: round(float(a), 3) for c, a in zip(PATIENT_COLUMNS[6:], agi, strict=True)},
    }
    cad, frailty = float(rng.normal()), float(rng.normal())
    return _Patient(pid, female, age, cad, frailty, morph, hr, afib, early_repol, row)


@dataclass(frozen=True)
class _Visit:
    patient: _Patient
    group: str  # 'untested' | 'tested' | 'excluded' (included = not excluded)
    tested: bool  # cath within 10 days
    z: float
    risk: float  # oracle ACS risk
    acs: bool
    mace: bool
    ischemia: Ischemia | None
    morphology: Morphology  # the patient's, with this visit's non-ischaemic ST-T change
    ecg_times: tuple[datetime, ...]  # when its ECGs were recorded
    row: dict  # ed-encounter.csv row

    @property
    def n_ecgs(self) -> int:
        return len(self.ecg_times)


def _make_visit(
    rng: np.random.Generator,
    pat: _Patient,
    *,
    group: str,
    tested: bool,
    enc_id: str,
    start: datetime,
    age: float,
    cal: _Calibration,
) -> _Visit:
    """Latent z, labels, waveform changes and the encounter row of one ED visit."""
    excluded = group == "excluded"
    z = Z_MEAN[group] + 0.5 * pat.cad + math.sqrt(0.75) * float(rng.normal())
    risk = float(cal.risk(z))
    acs = bool(tested and rng.random() < risk)
    death = bool(excluded and rng.random() < 0.12)
    if acs:
        p_mace = MACE_GIVEN_ACS
    elif group == "tested":
        p_mace = float(expit(cal.mace_tested_neg + z))
    else:
        c = cal.mace_excluded if excluded else cal.mace_untested
        p_mace = float(expit(c + z + 0.5 * pat.frailty))
    mace = death or bool(rng.random() < p_mace)
    ischemia = _visit_ischemia(rng, z)
    if group == "tested":
        p_mimic = MIMIC_TESTED[0] + MIMIC_TESTED[1] * (1.0 - risk)
    else:
        p_mimic = MIMIC_RATE[group]
    morph = _mimic(rng, pat.morphology) if rng.random() < p_mimic else pat.morphology
    n_ecgs = 1 + int(rng.poisson(ECGS_PER_VISIT[group]))
    minutes = np.cumsum([rng.uniform(3, 40), *rng.uniform(15, 240, n_ecgs - 1)])
    times = tuple(start + timedelta(minutes=round(float(m), 1)) for m in minutes)
    end = start + timedelta(minutes=float(minutes[-1] + rng.uniform(30, 480)))
    row = _encounter_row(
        rng,
        pid=pat.pid,
        enc_id=enc_id,
        start=start,
        end=end,
        age=age,
        excluded=excluded,
        tested=tested,
        acs=acs,
        mace=mace,
        death=death,
        z=z,
    )
    return _Visit(pat, group, tested, z, risk, acs, mace, ischemia, morph, times, row)


def _draw_visits(
    rng: np.random.Generator,
    patients: list[_Patient],
    cal: _Calibration,
    tested_fraction: float,
    taken: set[str],
) -> list[_Visit]:
    """Visits per patient (1 + Poisson 0.6), exclusion by frailty and age, cath testing.

    Shares are set so that ~35 % of ECGs are excluded and ``tested_fraction`` of the included
    ECGs come from cath-tested visits (tested visits have more ECGs).
    """
    counts = 1 + rng.poisson(0.6, len(patients))
    owner = np.repeat(np.arange(len(patients)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    nv = owner.size
    m_t, m_u, m_x = (1 + ECGS_PER_VISIT[g] for g in ("tested", "untested", "excluded"))
    f = tested_fraction
    p_test = f * m_u / (m_t * (1 - f) + f * m_u)
    m_inc = p_test * m_t + (1 - p_test) * m_u
    q = EXCLUDED_SHARE * m_inc / (m_x * (1 - EXCLUDED_SHARE) + EXCLUDED_SHARE * m_inc)
    lin = np.array([0.9 * patients[p].frailty + 0.03 * (patients[p].age - 57.0) for p in owner])
    e0 = brentq(lambda c: float(expit(c + lin).mean()) - q, -30, 30)
    excluded = rng.random(nv) < expit(e0 + lin)
    u = rng.random(nv)
    tested = np.where(excluded, u < 0.03, u < p_test)
    enc_ids = _unique_hex(rng, nv, 10, taken)
    # Visit days: a patient's first visit uniform over 2110-2119, later ones ~6 months apart;
    # a sequence that would run past 2119 is moved earlier.
    days = np.empty(nv)
    span = (DATE_END - DATE_START).days - 2
    for p in range(len(patients)):
        idx = np.arange(starts[p], starts[p + 1])
        d = rng.uniform(0, span) + np.cumsum([0.0, *(2 + rng.exponential(180.0, idx.size - 1))])
        days[idx] = np.clip(d - max(0.0, d[-1] - span), 0, span)
    visits = []
    for v in range(nv):
        p = int(owner[v])
        start = DATE_START + timedelta(minutes=round(days[v] * 1440))
        group = "excluded" if excluded[v] else "tested" if tested[v] else "untested"
        first = DATE_START + timedelta(days=float(days[starts[p]]))
        age = patients[p].age + (start - first).days / 365.25
        visits.append(
            _make_visit(
                rng,
                patients[p],
                group=group,
                tested=bool(tested[v]),
                enc_id="enc" + enc_ids[v],
                start=start,
                age=age,
                cal=cal,
            )
        )
    return visits


def _ecg_spec(
    rng: np.random.Generator,
    visit: _Visit,
    *,
    index: int,
    ecg_id: str,
    stream: int,
    seed: int,
    root: Path,
) -> _EcgSpec:
    """One recording of a visit: rhythm, rate, noise level, rare lead reversal."""
    pat = visit.patient
    afib = pat.afib and rng.random() < 0.8
    hr = float(np.clip(pat.hr + rng.normal(0.0, 6.0) + (10.0 if afib else 0.0), 42.0, 165.0))
    noise = float(np.exp(rng.normal(0.0, 0.35)))
    if rng.random() < 0.03:
        noise *= 3.0
    hexid = ecg_id[3:]
    return _EcgSpec(
        index=index,
        ecg_id=ecg_id,
        stream=stream,
        seed=seed,
        morphology=visit.morphology,
        heart_rate=hr,
        rhythm="afib" if afib else "sinus",
        ischemia=_scale_ischemia(visit.ischemia, math.exp(rng.normal(0.0, 0.2))),
        noise=noise,
        lead_reversal=bool(rng.random() < 0.004),
        female=pat.female,
        early_repol=pat.early_repol,
        path=str(root / "ecg-waveforms-npz" / hexid[:2] / f"{hexid}.npz"),
    )


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _encounter_row(
    rng: np.random.Generator,
    *,
    pid: str,
    enc_id: str,
    start: datetime,
    end: datetime,
    age: float,
    excluded: bool,
    tested: bool,
    acs: bool,
    mace: bool,
    death: bool,
    z: float,
) -> dict:
    """One row of ed-encounter.csv, consistent with the visit's labels."""
    if mace and not death:
        death = rng.random() < (0.15 if excluded else 0.06)
    trop = mace and (not death or rng.random() < 0.5)
    cabg = acs and rng.random() < 0.15
    stent = acs and (not cabg or rng.random() < 0.2)
    ami_day_of = trop and rng.random() < (0.75 if acs else 0.45)
    days_to_ami = 0 if ami_day_of else (int(rng.integers(1, 30)) if trop else None)
    if trop:
        maxtrop = float(np.exp(rng.normal(math.log(80.0) + 0.3 * z, 1.0)))
    else:
        maxtrop = float(np.exp(rng.normal(math.log(6.0), 0.6)))
    stress = rng.random() < (0.15 if tested else 0.03 if excluded else 0.08)
    days_cath = int(rng.integers(0, 10)) if tested else None
    days_stress = int(rng.integers(0, 10)) if stress else None
    if tested and (days_stress is None or days_cath <= days_stress):  # type: ignore[operator]
        first_test = "cath"
    else:
        first_test = "stress" if stress else ""
    if death and rng.random() < 0.3:
        disp = "expired"
    elif tested or trop or rng.random() < (0.5 if excluded else 0.2):
        disp = "admit"
    else:
        disp = "observation" if rng.random() < 0.2 else "home"
    c_int = chronic = False
    if excluded:
        c_int = bool(rng.random() < 0.5)
        chronic = bool(rng.random() < 0.55)
        if not (c_int or chronic or death):
            chronic = True
    return {
        "patient_ngsci_id": pid,
        "ed_enc_id": enc_id,
        "start_datetime": _fmt(start),
        "end_datetime": _fmt(end),
        "age_at_admit": int(age),
        "macetrop_030_pos": int(trop),
        "death_030_day": int(death),
        "macetrop_pos_or_death_030": int(trop or death),
        "stent_010_day": int(stent),
        "cabg_010_day": int(cabg),
        "stent_or_cabg_010_day": int(acs),
        "ami_day_of": int(ami_day_of),
        "days_to_ami": days_to_ami,
        "maxtrop_sameday": round(maxtrop, 1),
        "tn_group_sameday": int(np.searchsorted([6.0, 14.0, 52.0], maxtrop)),
        "disch_disp": disp,
        "disch_obs": int(disp == "observation"),
        "test_010_day": int(tested or stress),
        "stress_010_day": int(stress),
        "cath_010_day": int(tested),
        "days_to_stress": days_stress,
        "days_to_cath": days_cath,
        "first_test": first_test,
        "excl_flag_c_int": c_int,
        "excl_flag_chronic": chronic,
        "excl_flag_death": bool(death and excluded),
        "exclude_modeling": excluded,
        "exclude": bool(excluded or rng.random() < 0.02),
    }


def _truth_row(
    spec: _EcgSpec, dataset: str, visit: _Visit, rule: dict[str, bool], duplicate_of: str
) -> dict:
    flagged = rule["has_st_eleva"] or rule["has_depress"] or rule["has_twave_inver"]
    return {
        "ecg_id": spec.ecg_id,
        "dataset": dataset,
        "oracle_risk": round(visit.risk, 6),
        "acs": int(visit.acs),
        "mace": int(visit.mace),
        "territory": spec.ischemia.territory if spec.ischemia is not None else "none",
        "subtle": bool(spec.ischemia is not None and not flagged),
        "duplicate_of": duplicate_of,
    }


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote."""

    root: Path
    dataset_dir: Path
    holdout_dir: Path
    truth_path: Path
    n_patients: int
    n_ecgs: int
    n_holdout: int
    n_duplicates: int
    seconds: float


def _run(specs: list[_EcgSpec], workers: int) -> list[_EcgResult]:
    if workers <= 1 or len(specs) < 2:
        return [_synth_one(s) for s in specs]
    chunk = max(1, len(specs) // (workers * 8))
    # spawn, not fork: safe when the caller runs threads (a Dagster run, a web server)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_synth_one, specs, chunksize=chunk))


def _write_csv(rows: list[dict], cols: tuple[str, ...], path: Path) -> None:
    pd.DataFrame(rows, columns=list(cols)).to_csv(path, index=False, lineterminator="\n")


def generate(
    out_dir: Path,
    n_patients: int,
    seed: int = 0,
    n_holdout: int | None = None,
    tested_fraction: float = 0.05,
    workers: int = 1,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic cohort under ``out_dir`` (layout in the module docstring).

    ``tested_fraction``: share of included ECGs from cath-tested visits. ``n_holdout``: number
    of holdout ECGs (default 10 % of the v1 ECGs), each from a new patient, half of them from
    cath-tested visits. ``workers > 1`` renders the waveforms in a process pool (same bytes).
    An existing cohort under ``out_dir`` is replaced only with ``overwrite``. Everything is
    written to a staging folder that is renamed into place at the end.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if n_patients < 1:
        raise SynthError(f"generate: n_patients must be >= 1, got {n_patients}")
    if not 0.0 < tested_fraction < 1.0:
        raise SynthError(f"generate: tested_fraction must be in (0, 1), got {tested_fraction}")
    if n_holdout is not None and n_holdout < 0:
        raise SynthError(f"generate: n_holdout must be >= 0, got {n_holdout}")
    final_ds, final_truth = out_dir / DATASET, out_dir / "synthetic-truth.csv"
    if (final_ds.exists() or final_truth.exists()) and not overwrite:
        raise SynthError(
            f"generate: {final_ds} or {final_truth} already exists; pass overwrite=True "
            "(--overwrite) to replace it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".synth-staging-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    try:
        n_v1, nh, n_dup = _generate_into(
            stage, n_patients, seed, n_holdout, tested_fraction, workers
        )
        if overwrite:
            if final_ds.exists():
                shutil.rmtree(final_ds)
            if final_truth.exists():
                final_truth.unlink()
        os.replace(stage / DATASET, final_ds)
        os.replace(stage / "synthetic-truth.csv", final_truth)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return SynthSummary(
        root=out_dir,
        dataset_dir=final_ds / "v1",
        holdout_dir=final_ds / "holdout",
        truth_path=final_truth,
        n_patients=n_patients,
        n_ecgs=n_v1,
        n_holdout=nh,
        n_duplicates=n_dup,
        seconds=time.perf_counter() - t_start,
    )


def _v1_specs(
    rng: np.random.Generator, visits: list[_Visit], seed: int, root: Path, taken: set[str]
) -> tuple[list[_EcgSpec], list[_Visit], list[datetime], list[int]]:
    """The v1 ECGs of every visit; ~1 % are byte copies of an earlier ECG of the same visit.

    Returns the specs and, per ECG, its visit, its date and the index of the ECG it copies
    (-1 for an original)."""
    n_v1 = sum(v.n_ecgs for v in visits)
    ecg_hex = _unique_hex(rng, n_v1, 10, taken)
    p_dup = DUPLICATE_SHARE * n_v1 / max(1, n_v1 - len(visits))
    specs: list[_EcgSpec] = []
    ecg_visit: list[_Visit] = []
    dates: list[datetime] = []
    dup_of: list[int] = []
    for visit in visits:
        first = len(specs)
        for k, t in enumerate(visit.ecg_times):
            i = len(specs)
            ecg_id = "ecg" + ecg_hex[i]
            specs.append(
                _ecg_spec(rng, visit, index=i, ecg_id=ecg_id, stream=1, seed=seed, root=root)
            )
            d = int(rng.integers(first, i)) if k and rng.random() < p_dup else -1
            if d >= 0 and dup_of[d] >= 0:  # a copy of a copy is a copy of the original
                d = dup_of[d]
            dup_of.append(d)
            dates.append(dates[d] if d >= 0 else t)
            ecg_visit.append(visit)
    return specs, ecg_visit, dates, dup_of


def _holdout_specs(
    rng: np.random.Generator, nh: int, cal: _Calibration, seed: int, root: Path, taken: set[str]
) -> tuple[list[_Visit], list[_EcgSpec]]:
    """Holdout ECGs: new patients, one ECG each, half of them from cath-tested visits."""
    h_pids, h_hex = _unique_hex(rng, nh, 8, taken), _unique_hex(rng, nh, 10, taken)
    visits, specs = [], []
    for h in range(nh):
        pat = _draw_patient(rng, "pat" + h_pids[h])
        tested = bool(rng.random() < HOLDOUT_TESTED_SHARE)
        group = "tested" if tested else "untested"
        visit = _make_visit(
            rng, pat, group=group, tested=tested, enc_id="", start=DATE_START, age=pat.age, cal=cal
        )
        visits.append(visit)
        specs.append(
            _ecg_spec(rng, visit, index=h, ecg_id="ecg" + h_hex[h], stream=2, seed=seed, root=root)
        )
    return visits, specs


def _generate_into(
    stage: Path,
    n_patients: int,
    seed: int,
    n_holdout: int | None,
    tested_fraction: float,
    workers: int,
) -> tuple[int, int, int]:
    """Draw the cohort, render the waveforms and write every file under ``stage``.

    Returns the numbers of v1 ECGs, holdout ECGs and duplicates."""
    v1_dir, ho_dir = stage / DATASET / "v1", stage / DATASET / "holdout"
    (ho_dir / "ecg-waveforms-npz").mkdir(parents=True)
    v1_dir.mkdir(parents=True)
    cal = _calibrate()
    rng = np.random.default_rng([seed, 0])
    taken: set[str] = set()
    patients = [_draw_patient(rng, "pat" + h) for h in _unique_hex(rng, n_patients, 8, taken)]
    visits = _draw_visits(rng, patients, cal, tested_fraction, taken)
    specs, ecg_visit, dates, dup_of = _v1_specs(rng, visits, seed, v1_dir, taken)
    nh = int(round(0.1 * len(specs))) if n_holdout is None else int(n_holdout)
    h_visits, h_specs = _holdout_specs(rng, nh, cal, seed, ho_dir, taken)

    # Render; duplicates are copied afterwards, byte for byte.
    originals = [s for s, d in zip(specs, dup_of, strict=True) if d < 0]
    results = {r.index: r for r in _run(originals, workers)}
    h_results = _run(h_specs, workers)
    legacy = np.empty((len(specs), 3, 1000), dtype=np.float32)
    meta_rows, link_rows, truth_rows = [], [], []
    for i, spec in enumerate(specs):
        d = dup_of[i]
        res = results[d if d >= 0 else i]
        if d >= 0:
            Path(spec.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(specs[d].path, spec.path)
        legacy[i] = res.legacy
        visit = ecg_visit[i]
        meta_rows.append(
            {
                "patient_ngsci_id": visit.patient.pid,
                "ecg_id": spec.ecg_id,
                "date": _fmt(dates[i]),
                **res.metadata,
            }
        )
        link_rows.append({"ecg_id": spec.ecg_id, "ed_enc_id": visit.row["ed_enc_id"]})
        dup_id = specs[d].ecg_id if d >= 0 else ""
        truth_rows.append(_truth_row(spec, "v1", visit, res.rule, dup_id))
    for spec, visit, res in zip(h_specs, h_visits, h_results, strict=True):
        truth_rows.append(_truth_row(spec, "holdout", visit, res.rule, ""))

    _write_csv([p.row for p in patients], PATIENT_COLUMNS, v1_dir / "patient.csv")
    _write_csv(meta_rows, METADATA_COLUMNS, v1_dir / "ecg-metadata.csv")
    _write_csv(link_rows, ("ecg_id", "ed_enc_id"), v1_dir / "ecg-ed-enc.csv")
    _write_csv([v.row for v in visits], ENCOUNTER_COLUMNS, v1_dir / "ed-encounter.csv")
    index_rows = [{"ecg_id": s.ecg_id, "npy_index": k} for k, s in enumerate(specs)]
    _write_csv(index_rows, ("ecg_id", "npy_index"), v1_dir / "ecg-npy-index.csv")
    np.save(v1_dir / "ecg-waveform.npy", legacy)
    _write_csv(truth_rows, TRUTH_COLUMNS, stage / "synthetic-truth.csv")
    return len(specs), nh, sum(d >= 0 for d in dup_of)


# --------------------------------------------------------------------------------------------
# Command line: python -m acs_pipeline synth --out DIR --patients N --seed S
# --------------------------------------------------------------------------------------------


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("synth", help="write a synthetic ed-bwh-ecg cohort")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--patients", type=int, default=800, help="number of patients (v1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=int, default=None, help="holdout ECGs (default 10 %%)")
    p.add_argument(
        "--tested-fraction",
        type=float,
        default=0.05,
        help="share of included ECGs from cath-tested visits",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; prints a one-line summary; returns 0 or 2."""
    try:
        s = generate(
            args.out,
            n_patients=args.patients,
            seed=args.seed,
            n_holdout=args.holdout,
            tested_fraction=args.tested_fraction,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except SynthError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {s.n_patients} patients, {s.n_ecgs} ECGs ({s.n_duplicates} duplicates) to "
        f"{s.dataset_dir}, {s.n_holdout} holdout ECGs to {s.holdout_dir}, truth {s.truth_path} "
        f"in {s.seconds:.1f} s"
    )
    return 0
