"""One row per ECG: labels, cohort membership, duplicate groups and the patient-level split.

Follows DATA-CONTRACT section 2: ACS = ``stent_or_cabg_010_day``, MACE =
``macetrop_pos_or_death_030``; included = ``exclude_modeling == False``; tested = included with
``cath_010_day``. Splits are 70/30 by patient, seeded, separately per cohort, with one vocabulary
(``train`` / ``validation``). Patients linked by a byte-identical waveform are split together, so
copies of one waveform never straddle two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import polars as pl

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS, ID_PATTERNS, RACE_COLUMNS

SPLITS = ("train", "validation")
COHORTS = ("tested", "untested", "excluded")


class CohortError(ValueError):
    """The cohort cannot be built (for example no ECG joins to an encounter)."""


def _race(df: pl.DataFrame) -> pl.Expr:
    expr = pl.lit("unknown")
    for col in reversed(RACE_COLUMNS):
        if col in df.columns:
            expr = pl.when(pl.col(col).fill_null(False)).then(pl.lit(col.removeprefix("race_"))) \
                .otherwise(expr)
    return expr


def _groups(patients: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Union-find: patients that share a waveform hash get the same group id (a patient id)."""
    parent: dict[str, str] = {p: p for p in patients}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first: dict[str, str] = {}
    for p, h in zip(patients, hashes, strict=True):
        if h is None:
            continue
        if h in first:
            a, b = find(first[h]), find(p)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[h] = p
    return np.array([find(p) for p in patients], dtype=object)


def split_groups(groups: list[str], seed: int, validation_fraction: float = 0.3) -> dict[str, str]:
    """Assign each group to ``train`` or ``validation``, deterministically for a seed.

    Groups are ordered by a seeded hash, and the first ``round(n * fraction)`` are validation, so
    the fraction is exact in groups and independent of the input order.
    """
    uniq = sorted(set(groups))
    keyed = sorted(uniq, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n_val = int(round(len(keyed) * validation_fraction))
    return {g: ("validation" if i < n_val else "train") for i, g in enumerate(keyed)}


def build_cohort(
    tables: Mapping[str, pl.DataFrame],
    waveform_hashes: Mapping[str, str] | None = None,
    *,
    seed: int = 0,
    validation_fraction: float = 0.3,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join the tables into one row per ECG; return ``(cohort, rejected)``.

    ``rejected`` has one row per ECG that cannot enter the cohort (``ecg_id, reason, detail``):
    malformed or duplicate ids, no encounter, an encounter without a patient.
    ``waveform_hashes`` maps ecg_id to the content hash of its waveform file.
    """
    meta = tables["ecg_metadata"]
    rejected: list[pl.DataFrame] = []

    def reject(df: pl.DataFrame, reason: str, detail: str) -> None:
        if len(df):
            rejected.append(df.select("ecg_id").with_columns(
                reason=pl.lit(reason), detail=pl.lit(detail)))

    bad_id = meta.filter(~pl.col("ecg_id").str.contains(ID_PATTERNS["ecg_id"]))
    reject(bad_id, "malformed_ecg_id", "ecg_id must be 'ecg' + 10 hex digits")
    meta = meta.filter(pl.col("ecg_id").str.contains(ID_PATTERNS["ecg_id"]))
    dup = meta.filter(pl.col("ecg_id").is_duplicated())
    reject(dup.unique("ecg_id"), "duplicate_ecg_id", "ecg_id appears more than once in "
           "ecg-metadata.csv")
    meta = meta.filter(~pl.col("ecg_id").is_duplicated())

    link = tables["ecg_ed_enc"].unique("ecg_id", keep="first")
    enc = tables["ed_encounter"].unique("ed_enc_id", keep="first")
    pat = tables["patient"].unique("patient_ngsci_id", keep="first")

    df = meta.join(link.select("ecg_id", "ed_enc_id"), on="ecg_id", how="left")
    reject(df.filter(pl.col("ed_enc_id").is_null()), "no_encounter",
           "ecg_id not in ecg-ed-enc.csv")
    df = df.filter(pl.col("ed_enc_id").is_not_null())
    enc_cols = ["ed_enc_id", "age_at_admit", "macetrop_pos_or_death_030",
                "stent_or_cabg_010_day", "cath_010_day", "exclude_modeling"]
    df = df.join(enc.select(enc_cols).with_columns(_enc=pl.lit(True)), on="ed_enc_id",
                 how="left")
    reject(df.filter(pl.col("_enc").is_null()), "encounter_missing",
           "ed_enc_id not in ed-encounter.csv")
    df = df.filter(pl.col("_enc").is_not_null()).drop("_enc")
    pat_cols = ["patient_ngsci_id", "sex", *[c for c in RACE_COLUMNS if c in pat.columns]]
    df = df.join(pat.select(pat_cols).with_columns(_pat=pl.lit(True)), on="patient_ngsci_id",
                 how="left")
    reject(df.filter(pl.col("_pat").is_null()), "no_patient",
           "patient_ngsci_id not in patient.csv")
    df = df.filter(pl.col("_pat").is_not_null()).drop("_pat")
    if df.is_empty():
        raise CohortError("no ECG joins to an encounter and a patient: check the raw tables")

    included = ~pl.col("exclude_modeling").fill_null(True)
    df = df.with_columns(
        cohort=pl.when(~included).then(pl.lit("excluded"))
        .when(pl.col("cath_010_day").fill_null(False)).then(pl.lit("tested"))
        .otherwise(pl.lit("untested")),
        acs=pl.col("stent_or_cabg_010_day").cast(pl.Int8),
        mace=pl.col("macetrop_pos_or_death_030").cast(pl.Int8),
        race=_race(df),
        age=pl.col("age_at_admit"),
    )
    hashes = waveform_hashes or {}
    df = df.with_columns(
        waveform_sha256=pl.col("ecg_id").replace_strict(hashes, default=None,
                                                        return_dtype=pl.String)
    )
    counts = df.group_by("waveform_sha256").len()
    shared = counts.filter(pl.col("waveform_sha256").is_not_null() & (pl.col("len") > 1))
    df = df.with_columns(
        is_duplicate=pl.col("waveform_sha256").is_in(shared["waveform_sha256"].implode())
        & pl.col("waveform_sha256").is_duplicated()
    )
    # Keep the first ECG of each identical-waveform set; mark the copies.
    df = df.sort("ecg_id").with_columns(
        duplicate_of=pl.when(pl.col("is_duplicate"))
        .then(pl.col("ecg_id").first().over("waveform_sha256")).otherwise(None)
    ).with_columns(
        duplicate_of=pl.when(pl.col("duplicate_of") == pl.col("ecg_id")).then(None)
        .otherwise(pl.col("duplicate_of"))
    )

    split = np.full(len(df), None, dtype=object)
    for name in ("tested", "untested"):
        mask = (df["cohort"] == name).to_numpy()
        if not mask.any():
            continue
        sub = df.filter(pl.col("cohort") == name)
        groups = _groups(sub["patient_ngsci_id"].to_numpy(), sub["waveform_sha256"].to_numpy())
        assign = split_groups(list(groups), seed=seed, validation_fraction=validation_fraction)
        split[mask] = [assign[g] for g in groups]
    df = df.with_columns(split=pl.Series(split.tolist(), dtype=pl.String))

    columns = ["ecg_id", "patient_ngsci_id", "ed_enc_id", "date", "cohort", "split", "acs",
               "mace", "sex", "race", "age", *CLASSICAL_FLAGS, "waveform_sha256",
               "duplicate_of"]
    out = df.select(columns).sort("ecg_id")
    rej = (pl.concat(rejected) if rejected else
           pl.DataFrame(schema={"ecg_id": pl.String, "reason": pl.String, "detail": pl.String}))
    return out, rej


def split_leaks(cohort: pl.DataFrame) -> dict[str, int]:
    """Count patients and waveform hashes that appear in both splits of one cohort."""
    out = {}
    for col in ("patient_ngsci_id", "waveform_sha256"):
        leaks = (
            cohort.filter(pl.col("split").is_not_null() & pl.col(col).is_not_null())
            .group_by("cohort", col).agg(pl.col("split").n_unique().alias("n"))
            .filter(pl.col("n") > 1)
        )
        out[col] = len(leaks)
    return out


def summary(cohort: pl.DataFrame) -> pl.DataFrame:
    """ECGs, patients, ACS and MACE rates per cohort and split (the contract's section-2 table)."""
    return (
        cohort.group_by("cohort", "split")
        .agg(
            ecgs=pl.len(),
            patients=pl.col("patient_ngsci_id").n_unique(),
            acs_rate=pl.col("acs").cast(pl.Float64).mean(),
            mace_rate=pl.col("mace").cast(pl.Float64).mean(),
        )
        .sort("cohort", "split", nulls_last=True)
    )
