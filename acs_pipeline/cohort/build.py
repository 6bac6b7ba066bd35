"""One row per ECG: labels, cohort membership, duplicate groups and the patient-level split.

Follows docs/data-contract.md §2: ACS = ``stent_or_cabg_010_day``, MACE =
``macetrop_pos_or_death_030``; included = ``exclude_modeling == False``; tested = included with
``cath_010_day``. Splits are 70/30 by patient, seeded, separately per cohort (``train`` /
``validation``); a second seeded draw then carves ``selection`` (the patients that choose the
checkpoint) out of ``train`` only, so the validation split's membership does not depend on it.
Patients linked by a byte-identical waveform are split together, in one cohort or across both, so
copies of one waveform never straddle two splits. ECGs that cannot enter the cohort are returned
as rejections with a reason (:data:`REASONS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import polars as pl

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS, ID_PATTERNS, RACE_COLUMNS

SPLITS = ("train", "selection", "validation")
SELECTION_FRACTION = 0.2  # of the training patients, per cohort
COHORTS = ("tested", "untested", "excluded")
SPLIT_COHORTS = ("tested", "untested")  # the cohorts with a split; tested draws first


REASONS = {
    "no_metadata": "a waveform file whose id has no row in ecg-metadata.csv",
    "malformed_ecg_id": "ecg_id is not 'ecg' + 10 hex digits",
    "duplicate_ecg_id": "the ecg_id appears more than once in ecg-metadata.csv",
    "ambiguous_encounter_link": "the ecg_id has rows with different values in ecg-ed-enc.csv",
    "ambiguous_encounter": "its ed_enc_id has rows with different values in ed-encounter.csv",
    "ambiguous_patient": "its patient has rows with different values in patient.csv",
    "no_encounter": "the ecg_id is not in ecg-ed-enc.csv",
    "encounter_missing": "its ed_enc_id is not in ed-encounter.csv",
    "patient_mismatch": "the encounter's patient differs from the ECG's patient",
    "no_patient": "its patient_ngsci_id is not in patient.csv",
    "no_waveform_file": "no usable npz file for the ecg_id",
}


class CohortError(ValueError):
    """The cohort cannot be built (for example no ECG joins to an encounter)."""


def _race(df: pl.DataFrame) -> pl.Expr:
    expr = pl.lit("unknown")
    for col in reversed(RACE_COLUMNS):
        if col in df.columns:
            expr = pl.when(pl.col(col).fill_null(False)).then(pl.lit(col.removeprefix("race_"))) \
                .otherwise(expr)
    return expr


def _groups(nodes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Union-find: nodes (patients, or cohort + patient) that share a waveform hash get the
    same group id, the smallest node of the group."""
    parent: dict[str, str] = {p: p for p in nodes}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first: dict[str, str] = {}
    for p, h in zip(nodes, hashes, strict=True):
        if h is None:
            continue
        if h in first:
            a, b = find(first[h]), find(p)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[h] = p
    return np.array([find(p) for p in nodes], dtype=object)


def _draw(rows: pl.DataFrame, key: str, fraction: float) -> list[bool]:
    """Whether each row (``cohort``, ``patient_ngsci_id``, ``waveform_sha256``) is drawn: by
    patient, seeded by ``key``, separately per cohort, with the patients that share a waveform in
    one group. A group whose waveform copies reach both cohorts takes the tested cohort's draw."""
    sep = "\x00"
    nodes = (rows["cohort"] + sep + rows["patient_ngsci_id"].fill_null("")).to_numpy()
    comp = _groups(nodes, rows["waveform_sha256"].to_numpy())
    drawn = [False] * len(rows)
    fixed: dict[str, bool] = {}  # component -> drawn, for groups already drawn
    for name in SPLIT_COHORTS:
        mask = (rows["cohort"] == name).to_numpy()
        if not mask.any():
            continue
        # a group's label in the draw is its smallest patient in this cohort, so a link to
        # the other cohort leaves every other group's draw as it was
        label: dict[str, str] = {}
        for c, node in zip(comp[mask], nodes[mask], strict=True):
            patient = node.partition(sep)[2]
            label[c] = min(label.get(c, patient), patient)
        assign = split_groups(list(label.values()), seed=key, validation_fraction=fraction)
        for i, c in zip(np.flatnonzero(mask), comp[mask], strict=True):
            drawn[i] = fixed.setdefault(c, assign[label[c]] == "validation")
    return drawn


def assign_splits(df: pl.DataFrame, seed: int, validation_fraction: float = 0.3,
                  selection_fraction: float = SELECTION_FRACTION) -> pl.DataFrame:
    """``df`` (a cohort: ``cohort``, ``patient_ngsci_id``, ``waveform_sha256``) with its
    ``split`` column drawn for ``seed``: ``validation`` first, then ``selection`` carved from the
    rest (``train``) with a draw of its own, so that the validation split is the same whatever
    ``selection_fraction``. Rows outside the tested / untested cohorts get no split."""
    split: list[str | None] = [None] * len(df)
    rows = df.with_row_index("_row").filter(pl.col("cohort").is_in(SPLIT_COHORTS))
    val = _draw(rows, str(seed), validation_fraction)
    for i, v in zip(rows["_row"], val, strict=True):
        split[i] = "validation" if v else "train"
    train = rows.filter(~pl.Series(val, dtype=pl.Boolean))
    if selection_fraction > 0 and len(train):
        for i, s in zip(train["_row"], _draw(train, f"selection-{seed}", selection_fraction),
                        strict=True):
            if s:
                split[i] = "selection"
    return df.with_columns(split=pl.Series(split, dtype=pl.String))


def _unambiguous(df: pl.DataFrame, key: str) -> tuple[pl.DataFrame, pl.Expr]:
    """One row per key (repeated identical rows collapse) and, as a literal for ``is_in``, the
    keys whose rows differ (dropped: the caller rejects the ECGs that use them)."""
    rows = df.unique(maintain_order=True)
    dup = rows[key].is_duplicated()
    return rows.filter(~dup), rows.filter(dup)[key].unique().implode()


def split_groups(groups: list[str], seed: int | str,
                 validation_fraction: float = 0.3) -> dict[str, str]:
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
    selection_fraction: float = SELECTION_FRACTION,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join the tables into one row per ECG; return ``(cohort, rejected)``.

    ``rejected`` has one row per ECG that cannot enter the cohort (``ecg_id, reason, detail``),
    with the reasons of :data:`REASONS`. ``waveform_hashes`` maps the ecg_id of every usable
    waveform file to its content hash; when given, an ECG without one is rejected
    (``no_waveform_file``) and a file without a row in ecg-metadata.csv too (``no_metadata``).
    """
    meta = tables["ecg_metadata"]
    rejected: list[pl.DataFrame] = []

    def reject(df: pl.DataFrame, reason: str, detail: str | pl.Expr) -> None:
        if len(df):
            rejected.append(df.select("ecg_id", reason=pl.lit(reason),
                                      detail=detail if isinstance(detail, pl.Expr)
                                      else pl.lit(detail)))

    if waveform_hashes is not None:
        listed = set(meta["ecg_id"].drop_nulls().to_list())
        orphans = sorted(e for e in waveform_hashes if e not in listed)
        reject(pl.DataFrame({"ecg_id": orphans}, schema={"ecg_id": pl.String}), "no_metadata",
               "waveform file without a row in ecg-metadata.csv")
    well_formed = pl.col("ecg_id").str.contains(ID_PATTERNS["ecg_id"]).fill_null(False)
    reject(meta.filter(~well_formed), "malformed_ecg_id", "ecg_id must be 'ecg' + 10 hex digits")
    meta = meta.filter(well_formed)
    dup = meta.filter(pl.col("ecg_id").is_duplicated())
    reject(dup.unique("ecg_id"), "duplicate_ecg_id", "ecg_id appears more than once in "
           "ecg-metadata.csv")
    meta = meta.filter(~pl.col("ecg_id").is_duplicated())

    # A key listed twice with different values is ambiguous: the ECGs that use it are rejected
    # (identical repeated rows are harmless).
    link, bad_link = _unambiguous(tables["ecg_ed_enc"], "ecg_id")
    enc, bad_enc = _unambiguous(tables["ed_encounter"], "ed_enc_id")
    pat, bad_pat = _unambiguous(tables["patient"], "patient_ngsci_id")
    ambiguous = {
        "ambiguous_encounter_link": (pl.col("ecg_id").is_in(bad_link),
                                     "the ecg_id has rows with different values in "
                                     "ecg-ed-enc.csv"),
        "ambiguous_encounter": (pl.col("ecg_id").is_in(
            link.filter(pl.col("ed_enc_id").is_in(bad_enc))["ecg_id"].implode()),
            "its ed_enc_id has rows with different values in ed-encounter.csv"),
        "ambiguous_patient": (pl.col("patient_ngsci_id").is_in(bad_pat),
                              "its patient_ngsci_id has rows with different values in "
                              "patient.csv"),
    }
    for reason, (hit, detail) in ambiguous.items():
        reject(meta.filter(hit), reason, detail)
        meta = meta.filter(~hit)

    df = meta.join(link.select("ecg_id", "ed_enc_id"), on="ecg_id", how="left")
    reject(df.filter(pl.col("ed_enc_id").is_null()), "no_encounter",
           "ecg_id not in ecg-ed-enc.csv")
    df = df.filter(pl.col("ed_enc_id").is_not_null())
    enc_cols = ["ed_enc_id", "age_at_admit", "macetrop_pos_or_death_030",
                "stent_or_cabg_010_day", "cath_010_day", "exclude_modeling"]
    df = df.join(enc.select(*enc_cols, _enc_patient="patient_ngsci_id",
                            _enc=pl.lit(True)), on="ed_enc_id", how="left")
    reject(df.filter(pl.col("_enc").is_null()), "encounter_missing",
           "ed_enc_id not in ed-encounter.csv")
    df = df.filter(pl.col("_enc").is_not_null()).drop("_enc")
    mismatch = pl.col("_enc_patient").ne_missing(pl.col("patient_ngsci_id"))
    reject(df.filter(mismatch), "patient_mismatch",
           pl.format("ecg-metadata.csv gives patient {}, its encounter {} in ed-encounter.csv "
                     "gives {}", pl.col("patient_ngsci_id").fill_null("none"),
                     pl.col("ed_enc_id"), pl.col("_enc_patient").fill_null("none")))
    df = df.filter(~mismatch).drop("_enc_patient")
    pat_cols = ["patient_ngsci_id", "sex", *[c for c in RACE_COLUMNS if c in pat.columns]]
    df = df.join(pat.select(pat_cols).with_columns(_pat=pl.lit(True)), on="patient_ngsci_id",
                 how="left")
    reject(df.filter(pl.col("_pat").is_null()), "no_patient",
           "patient_ngsci_id not in patient.csv")
    df = df.filter(pl.col("_pat").is_not_null()).drop("_pat")
    if waveform_hashes is not None:
        has_file = pl.col("ecg_id").is_in(list(waveform_hashes))
        reject(df.filter(~has_file), "no_waveform_file",
               "no usable npz file for this ecg_id in the manifest")
        df = df.filter(has_file)
    if df.is_empty():
        counts = (pl.concat(rejected).group_by("reason").len().sort("reason").iter_rows()
                  if rejected else [])
        raise CohortError(
            f"no ECG of {len(tables['ecg_metadata'])} in ecg-metadata.csv joins to an encounter, "
            "a patient and a waveform file (ecg_id -> ecg-ed-enc.csv ed_enc_id -> "
            "ed-encounter.csv -> patient_ngsci_id -> patient.csv); rejected: "
            + (", ".join(f"{n} {r}" for r, n in counts) or "none"))

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

    df = assign_splits(df, seed, validation_fraction, selection_fraction)

    columns = ["ecg_id", "patient_ngsci_id", "ed_enc_id", "date", "cohort", "split", "acs",
               "mace", "sex", "race", "age", *CLASSICAL_FLAGS, "waveform_sha256",
               "duplicate_of"]
    out = df.select(columns).sort("ecg_id")
    rej = (pl.concat(rejected) if rejected else
           pl.DataFrame(schema={"ecg_id": pl.String, "reason": pl.String, "detail": pl.String}))
    return out, rej


def split_leaks(cohort: pl.DataFrame) -> dict[str, int]:
    """Count patients in two splits (of train / selection / validation) of one cohort, and
    waveform hashes in two splits of any cohorts (a copy in the untested training set and in the
    tested validation set leaks)."""
    rows = cohort.filter(pl.col("split").is_not_null())
    out = {}
    for col, by in (("patient_ngsci_id", ["cohort"]), ("waveform_sha256", [])):
        leaks = (rows.filter(pl.col(col).is_not_null())
                 .group_by(*by, col).agg(pl.col("split").n_unique().alias("n"))
                 .filter(pl.col("n") > 1))
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
