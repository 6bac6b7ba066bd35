"""The ECG machine's read: median-beat measurements, a STEMI-style rule, the printed columns.

`measure` takes median beats at the generator's R peaks; `stemi_rule` turns them into the four
classical flags; `metadata` prints one ECG's interval, axis and statement columns with a
little reader noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from acs_pipeline.ecg.leads import FS
from acs_pipeline.synth import SynthError
from acs_pipeline.synth.dipole import DOWER, RP, Fiducials, P, Q, R, Recording, S, T
from acs_pipeline.synth.layout import FLAGS, INTERVALS

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


def measure(twelve: np.ndarray, fid: Fiducials) -> Measurements:
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


def _axis(vec: np.ndarray) -> int:
    """Frontal-plane axis (degrees) of a dipole vector, from its projections on I and aVF."""
    lead_i, lead_ii = DOWER[6] @ vec, DOWER[7] @ vec
    return int(round(math.degrees(math.atan2(lead_ii - lead_i / 2, lead_i))))


def metadata(
    rng: np.random.Generator,
    rec: Recording,
    fid: Fiducials,
    meas: Measurements,
    rule: dict[str, bool],
    *,
    female: bool,
    early_repol: bool,
) -> dict:
    """Interval, axis and statement columns of one ECG's machine read."""
    morph = rec.morphology
    afib = rec.rhythm == "afib"
    rate = int(round(60.0 / fid.mean_rr + rng.normal(0, 1)))
    onset = fid.qrs_onset
    p_onset = morph.centres[P] - 2.5 * morph.widths[P]
    pr = None if afib else int(round(1000 * (onset - p_onset) + rng.normal(0, 4)))
    qrs = int(round(1000 * (fid.j_point - onset) + rng.normal(0, 3)))
    qt = int(round(1000 * (fid.t_centre + 2.5 * fid.t_width - onset) + rng.normal(0, 6)))
    qtc = int(round(qt / math.sqrt(fid.mean_rr)))
    area = morph.amplitudes * morph.widths[:, None]
    p_ax = None if afib else _axis(area[P])
    r_ax = _axis(area[Q] + area[R] + area[S] + area[RP])
    t_area = area[T]
    if rec.ischemia is not None:  # the T changes of the injury current
        isch = rec.ischemia
        t_area = (
            t_area
            + (1.3 * isch.hyperacute_mv - isch.t_inversion_mv) * isch.vector() * (morph.widths[T])
        )
    t_ax = _axis(t_area)
    f: dict[str, int] = {k: _reader(rng, v) for k, v in rule.items()}
    st = meas.st_j60
    sokolow = -meas.s_amp[6] + max(meas.r_amp[10], meas.r_amp[11])
    cornell = meas.r_amp[4] - meas.s_amp[8]
    lvh = sokolow >= 3.5 or cornell >= (2.0 if female else 2.8)
    wide = qrs >= 120
    j_elev = any(meas.st_j[a] >= 0.1 and meas.st_j[b] >= 0.1 for a, b in _ST_PAIRS)
    f["has_pacemaker"] = int(morph.paced)
    f["has_bbb"] = _reader(rng, wide and not morph.paced, fn=0.1)
    f["has_afib"] = _reader(rng, afib, fp=0.005, fn=0.05)
    f["has_aberran_bbb"] = _reader(rng, afib and wide, fp=0.003, fn=0.3)
    f["has_lvh"] = _reader(rng, lvh and not wide, fp=0.01, fn=0.2)
    f["has_jpoint_eleva"] = _reader(rng, j_elev, fp=0.005, fn=0.5)
    f["has_jpoint_repol"] = _reader(rng, j_elev and early_repol, fp=0.005, fn=0.3)
    nonspec = (not rule["has_st_eleva"] and not rule["has_depress"]) and (
        bool(np.any(np.abs(np.delete(st, 3)) >= 0.05)) or rule["has_twave_abnormal"]
    )
    f["has_nonspecific"] = _reader(rng, nonspec, fp=0.02, fn=0.3)
    f["has_st"] = int(f["has_st_eleva"] or f["has_depress"] or f["has_nonspecific"])
    f["has_twave"] = int(f["has_twave_inver"] or f["has_twave_abnormal"])
    f["has_prolonged_qt"] = _reader(rng, qtc >= 470, fp=0.005, fn=0.1)
    f["has_rhythm_disturbance"] = int(afib or morph.paced or rng.random() < 0.03)
    f["has_lead_reversal"] = _reader(rng, rec.lead_reversal, fp=0.001, fn=0.2)
    f["has_poor_or_quality"] = _reader(rng, rec.noise >= 2.5, fp=0.01, fn=0.2)
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
