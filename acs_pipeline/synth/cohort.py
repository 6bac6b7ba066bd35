"""Synthetic ``ed-bwh-ecg`` cohort: heart-dipole 12-lead ECGs with a planted ACS signal.

The cohort is laid out exactly like the Nightingale dataset (docs/data-contract.md §1, 2 and 7)::

    out_dir/ed-bwh-ecg/v1/{patient,ecg-metadata,ecg-ed-enc,ed-encounter,ecg-npy-index}.csv
    out_dir/ed-bwh-ecg/v1/ecg-waveform.npy                   (N, 3, 1000) legacy 100 Hz strips
    out_dir/ed-bwh-ecg/v1/ecg-waveforms-npz/{hex[:2]}/{hex}.npz    (15, 5000) float32, mV
    out_dir/ed-bwh-ecg/holdout/ecg-waveforms-npz/...         unlabelled holdout ECGs
    out_dir/synthetic-truth.csv                              oracle risk and labels per ECG

The labels come from the latent model in `acs_pipeline.synth.latent`. Determinism: every random
draw comes from ``numpy.random.default_rng`` seeded by ``seed`` and a fixed stream id (per ECG
for the waveforms), so the same arguments give the same bytes whatever ``workers`` is.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from acs_pipeline.ecg.leads import NPZ_DIR
from acs_pipeline.synth import SynthError
from acs_pipeline.synth.dipole import Recording
from acs_pipeline.synth.latent import Calibration, calibrate, scale_ischemia
from acs_pipeline.synth.layout import (
    DATASET,
    ENCOUNTER_COLUMNS,
    ENCOUNTER_FILE,
    LEGACY_FILE,
    LINK_COLUMNS,
    LINK_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    NPY_INDEX_COLUMNS,
    NPY_INDEX_FILE,
    PATIENT_COLUMNS,
    PATIENT_FILE,
    TRUTH_COLUMNS,
    TRUTH_FILE,
    fmt_datetime,
)
from acs_pipeline.synth.population import (
    DATE_START,
    Visit,
    draw_patient,
    draw_visits,
    make_visit,
    unique_hex,
)
from acs_pipeline.synth.waveform import EcgResult, EcgSpec, write_ecg

HOLDOUT_TESTED_SHARE = 0.5  # holdout ECGs: half from cath-tested visits, so ACS can be scored
DUPLICATE_SHARE = 0.01


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
    final_ds, final_truth = out_dir / DATASET, out_dir / TRUTH_FILE
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
        os.replace(stage / TRUTH_FILE, final_truth)
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
    (ho_dir / NPZ_DIR).mkdir(parents=True)
    v1_dir.mkdir(parents=True)
    cal = calibrate()
    rng = np.random.default_rng([seed, 0])
    taken: set[str] = set()
    patients = [draw_patient(rng, "pat" + h) for h in unique_hex(rng, n_patients, 8, taken)]
    visits = draw_visits(rng, patients, cal, tested_fraction, taken)
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
                "date": fmt_datetime(dates[i]),
                **res.metadata,
            }
        )
        link_rows.append({"ecg_id": spec.ecg_id, "ed_enc_id": visit.row["ed_enc_id"]})
        dup_id = specs[d].ecg_id if d >= 0 else ""
        truth_rows.append(_truth_row(spec, "v1", visit, res.rule, dup_id))
    for spec, visit, res in zip(h_specs, h_visits, h_results, strict=True):
        truth_rows.append(_truth_row(spec, "holdout", visit, res.rule, ""))

    _write_csv([p.row for p in patients], PATIENT_COLUMNS, v1_dir / PATIENT_FILE)
    _write_csv(meta_rows, METADATA_COLUMNS, v1_dir / METADATA_FILE)
    _write_csv(link_rows, LINK_COLUMNS, v1_dir / LINK_FILE)
    _write_csv([v.row for v in visits], ENCOUNTER_COLUMNS, v1_dir / ENCOUNTER_FILE)
    index_rows = [{"ecg_id": s.ecg_id, "npy_index": k} for k, s in enumerate(specs)]
    _write_csv(index_rows, NPY_INDEX_COLUMNS, v1_dir / NPY_INDEX_FILE)
    np.save(v1_dir / LEGACY_FILE, legacy)
    _write_csv(truth_rows, TRUTH_COLUMNS, stage / TRUTH_FILE)
    return len(specs), nh, sum(d >= 0 for d in dup_of)


def _v1_specs(
    rng: np.random.Generator, visits: list[Visit], seed: int, root: Path, taken: set[str]
) -> tuple[list[EcgSpec], list[Visit], list[datetime], list[int]]:
    """The v1 ECGs of every visit; ~1 % are byte copies of an earlier ECG of the same visit.

    Returns the specs and, per ECG, its visit, its date and the index of the ECG it copies
    (-1 for an original)."""
    n_v1 = sum(v.n_ecgs for v in visits)
    ecg_hex = unique_hex(rng, n_v1, 10, taken)
    p_dup = DUPLICATE_SHARE * n_v1 / max(1, n_v1 - len(visits))
    specs: list[EcgSpec] = []
    ecg_visit: list[Visit] = []
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
    rng: np.random.Generator, nh: int, cal: Calibration, seed: int, root: Path, taken: set[str]
) -> tuple[list[Visit], list[EcgSpec]]:
    """Holdout ECGs: new patients, one ECG each, half of them from cath-tested visits."""
    h_pids, h_hex = unique_hex(rng, nh, 8, taken), unique_hex(rng, nh, 10, taken)
    visits, specs = [], []
    for h in range(nh):
        pat = draw_patient(rng, "pat" + h_pids[h])
        tested = bool(rng.random() < HOLDOUT_TESTED_SHARE)
        group = "tested" if tested else "untested"
        visit = make_visit(
            rng, pat, group=group, tested=tested, enc_id="", start=DATE_START, age=pat.age, cal=cal
        )
        visits.append(visit)
        specs.append(
            _ecg_spec(rng, visit, index=h, ecg_id="ecg" + h_hex[h], stream=2, seed=seed, root=root)
        )
    return visits, specs


def _ecg_spec(
    rng: np.random.Generator,
    visit: Visit,
    *,
    index: int,
    ecg_id: str,
    stream: int,
    seed: int,
    root: Path,
) -> EcgSpec:
    """One recording of a visit: rhythm, rate, noise level, rare lead reversal."""
    pat = visit.patient
    afib = pat.afib and rng.random() < 0.8
    hr = float(np.clip(pat.hr + rng.normal(0.0, 6.0) + (10.0 if afib else 0.0), 42.0, 165.0))
    noise = float(np.exp(rng.normal(0.0, 0.35)))
    if rng.random() < 0.03:
        noise *= 3.0
    ischemia = scale_ischemia(visit.ischemia, math.exp(rng.normal(0.0, 0.2)))
    lead_reversal = bool(rng.random() < 0.004)
    rhythm = "afib" if afib else "sinus"
    hexid = ecg_id[3:]
    return EcgSpec(
        index=index,
        ecg_id=ecg_id,
        stream=stream,
        seed=seed,
        recording=Recording(visit.morphology, hr, rhythm, ischemia, noise, lead_reversal),
        female=pat.female,
        early_repol=pat.early_repol,
        path=str(root / NPZ_DIR / hexid[:2] / f"{hexid}.npz"),
    )


def _truth_row(
    spec: EcgSpec, dataset: str, visit: Visit, rule: dict[str, bool], duplicate_of: str
) -> dict:
    flagged = rule["has_st_eleva"] or rule["has_depress"] or rule["has_twave_inver"]
    isch = spec.recording.ischemia
    return {
        "ecg_id": spec.ecg_id,
        "dataset": dataset,
        "oracle_risk": round(visit.risk, 6),
        "acs": int(visit.acs),
        "mace": int(visit.mace),
        "territory": isch.territory if isch is not None else "none",
        "subtle": bool(isch is not None and not flagged),
        "duplicate_of": duplicate_of,
    }


def _run(specs: list[EcgSpec], workers: int) -> list[EcgResult]:
    if workers <= 1 or len(specs) < 2:
        return [write_ecg(s) for s in specs]
    chunk = max(1, len(specs) // (workers * 8))
    # spawn, not fork: safe when the caller runs threads (a Dagster run, a web server)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(write_ecg, specs, chunksize=chunk))


def _write_csv(rows: list[dict], cols: tuple[str, ...], path: Path) -> None:
    pd.DataFrame(rows, columns=list(cols)).to_csv(path, index=False, lineterminator="\n")
