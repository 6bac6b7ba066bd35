"""The clinical tables of ``ed-bwh-ecg`` v1, read with polars and typed.

Each table has a set of required columns; unknown extra columns are kept. A missing file, a missing
column or a value that cannot be typed raises :class:`TableError` naming the file and the columns.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl

CLASSICAL_FLAGS = ("has_depress", "has_st_eleva", "has_twave_inver", "has_twave_abnormal")
RACE_COLUMNS = ("race_black", "race_hispanic", "race_white", "race_other")
_OLD_RACE_NAMES = {"black": "race_black", "hispanic": "race_hispanic", "white": "race_white",
                   "other": "race_other"}

ID_PATTERNS = {
    "ecg_id": r"^ecg[0-9a-f]{10}$",
    "patient_ngsci_id": r"^pat[0-9a-f]{8}$",
    "ed_enc_id": r"^enc[0-9a-f]+$",
}


@dataclass(frozen=True)
class TableSpec:
    file: str
    required: tuple[str, ...]
    booleans: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    key: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    "patient": TableSpec(
        "patient.csv",
        required=("patient_ngsci_id", "sex", *RACE_COLUMNS),
        booleans=RACE_COLUMNS,
        key=("patient_ngsci_id",),
    ),
    "ecg_metadata": TableSpec(
        "ecg-metadata.csv",
        required=("patient_ngsci_id", "ecg_id", "date", *CLASSICAL_FLAGS),
        booleans=CLASSICAL_FLAGS,
        dates=("date",),
        key=("ecg_id",),
    ),
    "ecg_ed_enc": TableSpec("ecg-ed-enc.csv", required=("ecg_id", "ed_enc_id"), key=("ecg_id",)),
    "ed_encounter": TableSpec(
        "ed-encounter.csv",
        required=(
            "patient_ngsci_id", "ed_enc_id", "start_datetime", "age_at_admit",
            "macetrop_pos_or_death_030", "stent_or_cabg_010_day", "cath_010_day",
            "exclude_modeling",
        ),
        booleans=("macetrop_pos_or_death_030", "stent_or_cabg_010_day", "cath_010_day",
                  "exclude_modeling"),
        numbers=("age_at_admit",),
        key=("ed_enc_id",),
    ),
}

_TRUE = {"true", "t", "1", "1.0", "yes", "y"}
_FALSE = {"false", "f", "0", "0.0", "no", "n"}


class TableError(ValueError):
    """A clinical table is missing, lacks columns, or holds values of the wrong type."""


def _parse_bool(df: pl.DataFrame, col: str, file: str) -> pl.Series:
    s = df[col].cast(pl.String).str.strip_chars().str.to_lowercase()
    bad = s.filter(s.is_not_null() & ~s.is_in(list(_TRUE | _FALSE)) & (s != ""))
    if len(bad):
        raise TableError(
            f"{file}: column {col!r} must be boolean (True/False or 1/0); "
            f"found {len(bad)} other value(s), e.g. {bad.unique().head(3).to_list()}"
        )
    return (
        pl.when(s.is_in(list(_TRUE))).then(True)
        .when(s.is_in(list(_FALSE))).then(False)
        .otherwise(None)
    )


def parse_table(name: str, data: bytes) -> pl.DataFrame:
    """Parse one table's CSV bytes into a typed polars frame (extra columns kept as read)."""
    spec = TABLES[name]
    try:
        df = pl.read_csv(io.BytesIO(data), infer_schema_length=0)  # all columns as strings
    except Exception as exc:  # polars raises several error types for malformed CSV
        raise TableError(f"{spec.file}: cannot be read as CSV ({exc})") from exc
    if name == "patient":
        df = df.rename({k: v for k, v in _OLD_RACE_NAMES.items() if k in df.columns
                        and v not in df.columns})
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise TableError(
            f"{spec.file}: missing required column(s) {missing}; it has {len(df.columns)} "
            f"columns: {df.columns[:12]}{' ...' if len(df.columns) > 12 else ''}"
        )
    exprs = [_parse_bool(df, c, spec.file).alias(c) for c in spec.booleans]
    for c in spec.numbers:
        exprs.append(pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(c))
    for c in spec.dates:
        exprs.append(pl.col(c).str.to_datetime(strict=False).alias(c))
    out = df.with_columns(exprs)
    for c in spec.numbers + spec.dates:
        bad = out.filter(pl.col(c).is_null() & df[c].is_not_null() & (df[c] != ""))
        if len(bad):
            raise TableError(
                f"{spec.file}: column {c!r} has {len(bad)} value(s) that are not "
                f"{'numbers' if c in spec.numbers else 'dates'}, e.g. "
                f"{df.filter(out[c].is_null() & df[c].is_not_null())[c].head(3).to_list()}"
            )
    return out


def read_tables(read: Callable[[str], bytes]) -> dict[str, pl.DataFrame]:
    """Read all four tables through ``read(file_name) -> bytes``.

    ``read`` raises ``FileNotFoundError`` (or any error) for a missing file; it is re-raised as a
    :class:`TableError` naming the file.
    """
    out = {}
    for name, spec in TABLES.items():
        try:
            data = read(spec.file)
        except Exception as exc:
            raise TableError(f"{spec.file}: cannot be read from the raw root ({exc})") from exc
        out[name] = parse_table(name, data)
    return out


def key_problems(tables: Mapping[str, pl.DataFrame]) -> dict[str, int]:
    """Count duplicate keys per table (``{'ecg_metadata.ecg_id': 3}``), only where non-zero."""
    problems = {}
    for name, spec in TABLES.items():
        df = tables[name]
        if spec.key:
            n = len(df) - df.select(spec.key).n_unique()
            if n:
                problems[f"{name}.{'+'.join(spec.key)}"] = n
    return problems
