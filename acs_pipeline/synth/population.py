"""Patients and their ED visits: demographics, heart, latent ischaemia, labels, encounter rows.

Visits fall in the 2110s (dates are shifted, as in the dataset). ~35 % of the ECGs come from
visits excluded from modelling (frail or old patients); a share of the included ones from
cath-tested visits, the only visits that can be labelled ACS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from acs_pipeline.cohort.tables import RACE_COLUMNS
from acs_pipeline.synth.dipole import Ischemia, Morphology, random_morphology
from acs_pipeline.synth.latent import (
    ECGS_PER_VISIT,
    MACE_GIVEN_ACS,
    MIMIC_RATE,
    MIMIC_TESTED,
    Z_MEAN,
    Calibration,
    mimic,
    visit_ischemia,
)
from acs_pipeline.synth.layout import AGI_COLUMNS, fmt_datetime

DATE_START, DATE_END = datetime(2110, 1, 1), datetime(2120, 1, 1)  # dates shifted into the 2110s
EXCLUDED_SHARE = 0.35


def unique_hex(rng: np.random.Generator, n: int, digits: int, taken: set[str]) -> list[str]:
    """``n`` random hex strings of ``digits`` digits, none in ``taken`` (which they join)."""
    out: list[str] = []
    while len(out) < n:
        for v in rng.integers(0, 16**digits, size=n - len(out), dtype=np.int64):
            h = format(int(v), f"0{digits}x")
            if h not in taken:
                taken.add(h)
                out.append(h)
    return out


@dataclass(frozen=True)
class Patient:
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


def draw_patient(rng: np.random.Generator, pid: str) -> Patient:
    """One patient: sex, age, heart (LVH, early repolarisation, BBB, pacing, AF), race, income."""
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
        **{c: int(race == k) for k, c in enumerate(RACE_COLUMNS)},
        **{c: round(float(a), 3) for c, a in zip(AGI_COLUMNS, agi, strict=True)},
    }
    cad, frailty = float(rng.normal()), float(rng.normal())
    return Patient(pid, female, age, cad, frailty, morph, hr, afib, early_repol, row)


@dataclass(frozen=True)
class Visit:
    patient: Patient
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


def make_visit(
    rng: np.random.Generator,
    pat: Patient,
    *,
    group: str,
    tested: bool,
    enc_id: str,
    start: datetime,
    age: float,
    cal: Calibration,
) -> Visit:
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
    ischemia = visit_ischemia(rng, z)
    if group == "tested":
        p_mimic = MIMIC_TESTED[0] + MIMIC_TESTED[1] * (1.0 - risk)
    else:
        p_mimic = MIMIC_RATE[group]
    morph = mimic(rng, pat.morphology) if rng.random() < p_mimic else pat.morphology
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
    return Visit(pat, group, tested, z, risk, acs, mace, ischemia, morph, times, row)


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
        "start_datetime": fmt_datetime(start),
        "end_datetime": fmt_datetime(end),
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


def draw_visits(
    rng: np.random.Generator,
    patients: list[Patient],
    cal: Calibration,
    tested_fraction: float,
    taken: set[str],
) -> list[Visit]:
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
    enc_ids = unique_hex(rng, nv, 10, taken)
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
            make_visit(
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
