"""The latent model behind the labels and the planted ACS signal.

Every ED visit has a latent ischaemia score ``z`` (correlated within a patient; higher in
cath-tested visits). The oracle ACS risk is ``sigmoid(a + b z)``; a tested visit's ACS label is
drawn from it, untested visits have ACS 0 (no cath, no stent). MACE rises with ``z`` (and a
frailty latent), and ACS implies MACE 90 % of the time. `calibrate` solves the intercepts so
that the rates match docs/data-contract.md §2. Above a threshold, ``z`` shows on the waveform
as an injury current toward a coronary territory (`visit_ischemia`): a terminal QRS notch plus
an ST shift, a hyperacute T or a T inversion, mostly below the 0.1 mV that the machine reader
flags. Non-ischaemic ST-T changes (early repolarisation, LVH strain, bundle-branch block, and
per-visit `mimic` changes that are commoner in tested visits with a low risk) make the flags
non-specific. In a tested cohort the four flags reach an AUROC of about 0.50-0.55, the oracle
about 0.85, and a simple model on median-beat samples about 0.7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from acs_pipeline.synth.dipole import (
    TERRITORIES,
    TERRITORY_DIRECTIONS,
    Ischemia,
    Morphology,
    R,
    T,
)

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

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)
_GH_W = _GH_W / _GH_W.sum()


def _normal_mean(fn, mu: float = 0.0, sd: float = 1.0) -> float:
    """E[fn(Z)] for Z ~ N(mu, sd^2) by Gauss-Hermite quadrature."""
    return float(np.sum(_GH_W * fn(mu + sd * _GH_X)))


@dataclass(frozen=True)
class Calibration:
    """Intercepts of the ACS risk and of MACE per group (see `calibrate`)."""

    acs_a: float
    mace_untested: float
    mace_tested_neg: float
    mace_excluded: float

    def risk(self, z: np.ndarray) -> np.ndarray:
        return expit(self.acs_a + RISK_SLOPE * z)


def calibrate() -> Calibration:
    """Intercepts that give the contract's rates (docs/data-contract.md §2) in expectation."""
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
    return Calibration(a, mu, mn, mx)


def visit_ischemia(rng: np.random.Generator, z: float) -> Ischemia | None:
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


def scale_ischemia(isch: Ischemia | None, k: float) -> Ischemia | None:
    """The injury current scaled by ``k`` (one ECG of an ischaemic visit)."""
    if isch is None:
        return None
    return replace(
        isch,
        st_mv=isch.st_mv * k,
        hyperacute_mv=isch.hyperacute_mv * k,
        t_inversion_mv=isch.t_inversion_mv * k,
        qrs_notch_mv=isch.qrs_notch_mv * k,
    )


def mimic(rng: np.random.Generator, morph: Morphology) -> Morphology:
    """A non-ischaemic ST-T change for one visit: diffuse ST elevation along the T vector
    (pericarditis, early repolarisation), strain-like ST depression with a flat T, or a
    globally flat or inverted T."""
    amps, st = morph.amplitudes.copy(), morph.st_offset.copy()
    t_dir = amps[T] / np.linalg.norm(amps[T])
    r_dir = amps[R] / np.linalg.norm(amps[R])
    kind = rng.random()
    if kind < 0.2:
        st = st + rng.uniform(0.06, 0.16) * t_dir
    elif kind < 0.4:
        st = st - rng.uniform(0.05, 0.12) * r_dir
        amps[T] *= rng.uniform(-0.4, 0.5)
    elif kind < 0.7:
        amps[T] *= rng.uniform(-1.0, -0.2)
    else:
        amps[T] *= rng.uniform(0.05, 0.35)
    return replace(morph, amplitudes=amps, st_offset=st)
