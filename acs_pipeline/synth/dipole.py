"""Heart-dipole model: a heart vector of Gaussian waves in the Frank X/Y/Z system.

A patient has a `Morphology` (axis, amplitudes, timing, conditions such as LVH or bundle-branch
block); acute `Ischemia` adds an injury current toward a coronary territory. `heart_vector`
renders one 10-s `Recording` as v(t), sampled at 500 Hz, with the `Fiducials` the machine read
needs. The Dower matrix projects v(t) onto V1-V6, I and II.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import expit

from acs_pipeline.ecg.leads import FS, N_SAMPLES
from acs_pipeline.synth import SynthError

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

P, Q, R, S, T, RP = range(6)  # wave order: P, Q, R, S, T, terminal R' (bundle-branch block)
_HYPERACUTE, _SPIKE, _NOTCH = 6, 7, 8  # extra waves: hyperacute T, pacing spike, QRS notch
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
        return float(np.min(self.centres[Q : S + 1] - 2.5 * self.widths[Q : S + 1]))

    @property
    def j_point(self) -> float:
        """QRS end (J point), s relative to the R peak."""
        ends = self.centres[Q : S + 1] + 2.5 * self.widths[Q : S + 1]
        j = float(np.max(ends))
        if np.linalg.norm(self.amplitudes[RP]) > 0.05:
            j = max(j, float(self.centres[RP] + 2.5 * self.widths[RP]))
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


@dataclass(frozen=True)
class Recording:
    """One 10-s recording: the heart, its rate and rhythm (``'sinus'`` or ``'afib'``), any
    ischaemia, the noise level (0 = none) and whether the arm electrodes were swapped."""

    morphology: Morphology
    heart_rate: float
    rhythm: str = "sinus"
    ischemia: Ischemia | None = None
    noise: float = 1.0
    lead_reversal: bool = False


@dataclass(frozen=True)
class Fiducials:
    """Where the generator put things (for the machine read and the interval columns)."""

    r_index: np.ndarray  # R-peak sample indices (may lie outside 0..N-1)
    qrs_onset: float  # s relative to R
    j_point: float
    t_centre: float  # at the mean RR
    t_width: float
    mean_rr: float


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
    amps[T] = _rotation(rng, 12.0) @ amps[T]  # QRS-T angle varies
    amps = amps @ _rotation(rng, 15.0).T  # anatomical heart orientation
    amps *= np.exp(rng.normal(0.0, 0.2))  # body habitus
    amps *= np.exp(rng.normal(0.0, 0.15, (6, 1)))
    if female:
        amps[Q : S + 1] *= 0.85
        amps[T] *= 0.85
    centres = _BASE_CENTRES.copy()
    widths = _BASE_WIDTHS * np.exp(rng.normal(0.0, 0.08, 6))
    centres[P] -= rng.normal(0.0, 0.018)
    centres[T] *= np.exp(rng.normal(0.0, 0.05))
    st = np.zeros(3)
    if flat_t:
        amps[T] *= rng.uniform(0.15, 0.45)
    if lvh:
        amps[Q : S + 1] *= rng.uniform(1.7, 2.3)
        widths[Q : S + 1] *= 1.15
        if rng.random() < 0.6:  # strain: ST depression and T inversion away from the QRS
            r_dir = amps[R] / np.linalg.norm(amps[R])
            st -= rng.uniform(0.04, 0.1) * r_dir
            amps[T] -= rng.uniform(0.4, 0.9) * np.linalg.norm(amps[T]) * r_dir
    if early_repol:
        t_dir = amps[T] / np.linalg.norm(amps[T])
        st += rng.uniform(0.04, 0.12) * t_dir
    if bbb or paced:
        widths[Q : S + 1] *= 1.5
        centres[Q] *= 1.8
        centres[S] *= 2.0
        terminal = np.array([-0.45, 0.0, -0.6]) * rng.uniform(0.6, 1.2)
        amps[RP] = terminal
        # secondary ST-T change: repolarisation opposite to the late depolarisation
        t_size = np.linalg.norm(amps[T])
        amps[T] = 0.5 * amps[T] - 0.6 * t_size * _unit(tuple(terminal))
        st -= 0.05 * _unit(tuple(terminal))
    if paced:
        centres[RP] = 0.09
        amps[R] = np.array([0.9, -0.3, 0.9]) * rng.uniform(0.8, 1.2)
    return Morphology(amps, centres, widths, st, paced=paced)


def jitter_morphology(
    rng: np.random.Generator, morph: Morphology, scale: float = 1.0
) -> Morphology:
    """One recording of a patient's morphology: electrode placement and day-to-day variation."""
    amps = morph.amplitudes @ _rotation(rng, 3.0 * scale).T
    amps = amps * np.exp(rng.normal(0.0, 0.05 * scale, (6, 1)))
    widths = morph.widths * np.exp(rng.normal(0.0, 0.03 * scale, 6))
    return replace(morph, amplitudes=amps, widths=widths)


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


def heart_vector(rng: np.random.Generator, rec: Recording) -> tuple[np.ndarray, Fiducials]:
    """Heart vector v(t) (3, N_SAMPLES) float64 of a recording and its fiducials."""
    r_times = _rr_series(rng, rec.heart_rate, rec.rhythm)
    rr_prev = np.diff(r_times, prepend=r_times[0] - (r_times[1] - r_times[0]))
    rr = np.clip(rr_prev, 0.3, 2.0)
    nb = r_times.size
    m = rec.morphology
    amps = np.concatenate([m.amplitudes, np.zeros((3, 3))])
    extra_c, extra_w = [0.0, m.qrs_onset - 0.02, m.j_point - 0.008], [0.0, 0.0025, 0.005]
    cent = np.tile(np.concatenate([m.centres, extra_c]), (nb, 1))
    wid = np.tile(np.concatenate([m.widths, extra_w]), (nb, 1))
    cent[:, T] = m.centres[T] * np.sqrt(rr)
    wid[:, T] = m.widths[T] * rr**0.25
    cent[:, _HYPERACUTE] = cent[:, T] + 0.01
    wid[:, _HYPERACUTE] = wid[:, T] * 1.3
    st_vec = np.asarray(m.st_offset, dtype=float).copy()
    if rec.ischemia is not None:
        d = rec.ischemia.vector()
        st_vec += rec.ischemia.st_mv * d
        amps[T] -= rec.ischemia.t_inversion_mv * d
        amps[_HYPERACUTE] = rec.ischemia.hyperacute_mv * d
        amps[_NOTCH] = rec.ischemia.qrs_notch_mv * d
    if rec.rhythm == "afib":
        amps[P] = 0.0
    if m.paced:
        amps[_SPIKE] = np.array([0.5, 1.2, 0.6])
    beat_scale = 1.0 + 0.05 * np.sin(2 * np.pi * 0.25 * r_times + rng.uniform(0, 6.3))

    lo, hi = int(-0.35 * FS), int(0.75 * FS)
    offs = np.arange(lo, hi) / FS  # (W,)
    # P, Q, R, S, R' and the pacing spike keep their shape from beat to beat: one template.
    template = np.zeros((hi - lo, 3))
    for k in (P, Q, R, S, RP, _SPIKE, _NOTCH):
        if np.any(amps[k]):
            template += np.exp(-0.5 * ((offs - cent[0, k]) / wid[0, k]) ** 2)[:, None] * amps[k]
    beats = np.repeat(template[None], nb, axis=0)
    # T, hyperacute T and the ST plateau move with the RR interval (after the R peak only).
    op = offs[-lo:]
    late = np.exp(-0.5 * ((op - cent[:, T, None]) / wid[:, T, None]) ** 2)[..., None] * amps[T]
    if np.any(amps[_HYPERACUTE]):
        g6 = np.exp(-0.5 * ((op - cent[:, _HYPERACUTE, None]) / wid[:, _HYPERACUTE, None]) ** 2)
        late += g6[..., None] * amps[_HYPERACUTE]
    j = m.j_point
    if np.any(st_vec):
        plateau = expit((op - j) / 0.004) * expit((cent[:, T, None] - op) / 0.03)
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
    if rec.rhythm == "afib":  # fibrillatory waves, largest in V1
        t = np.arange(N_SAMPLES) / FS
        f = rng.uniform(5.0, 7.5)
        phase = np.cumsum(rng.normal(0.0, 0.05, N_SAMPLES))
        fw = rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * f * t + phase)
        v = v + np.outer(_unit((-0.3, 0.1, -0.6)), fw)
    mean_rr = float(np.mean(rr))
    fid = Fiducials(
        r_index=r_idx,
        qrs_onset=m.qrs_onset,
        j_point=j,
        t_centre=float(m.centres[T] * math.sqrt(mean_rr)),
        t_width=float(m.widths[T] * mean_rr**0.25),
        mean_rr=mean_rr,
    )
    return v, fid
