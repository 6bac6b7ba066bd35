"""The clinical tables of ``ed-bwh-ecg`` v1, read with polars and typed.

Each table has a set of required columns; unknown extra columns are kept. Values are stripped of
surrounding whitespace; CR, LF and CRLF line endings are all read. A row that cannot be used (short,
long, a repeated header, a value that cannot be typed) is quarantined with its line number; a
structural fault (a missing or unreadable file, a missing column, a column of which no value parses)
raises :class:`TableError` naming the file and the column.
"""

from __future__ import annotations

import csv
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
LINE = "__line"  # the CSV line a row came from (1 = the header), while a table is typed
REJECT_COLUMNS = {"ecg_id": pl.String, "key": pl.String, "reason": pl.String,
                  "detail": pl.String}
# Row-level reasons (the row is quarantined, the table is kept).
ROW_REASONS = ("repeated_header", "short_row", "long_row", "bad_value")


class TableError(ValueError):
    """A clinical table is missing or unreadable, lacks a required column, or has a column that
    cannot be parsed at all (a structural fault: the table cannot be used)."""


@dataclass(frozen=True)
class ParsedTable:
    """A typed table and the rows it quarantined (``ecg_id, key, reason, detail``; ``key`` is
    ``<file>:<line>``)."""

    frame: pl.DataFrame
    rejects: pl.DataFrame


class _Rejects:
    """Row rejections of one file, with the row's ecg_id where the table has one."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.rows: list[dict] = []

    def add(self, line: int, ecg_id: str | None, reason: str, detail: str) -> None:
        self.rows.append({"ecg_id": ecg_id, "key": f"{self.file}:{line}", "reason": reason,
                          "detail": f"line {line}: {detail}"})

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=REJECT_COLUMNS)


def _read_rows(spec: TableSpec, data: bytes, rejects: _Rejects) -> pl.DataFrame:
    """CSV bytes -> a frame of strings (stripped; empty -> null) with the line of each row.

    CR, LF and CRLF all end a line. A row with fewer fields than the header, more non-empty
    fields, or a copy of the header is quarantined with its line number.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TableError(f"{spec.file}: not UTF-8 text near line {line} ({exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    last = 0
    try:
        for fields in reader:
            line, last = last + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line holds no record
            if header is None:
                header = [f.strip() for f in fields]
                dup = sorted({c for c in header if header.count(c) > 1})
                if dup:
                    raise TableError(f"{spec.file}: column(s) {dup} appear more than once "
                                     "in the header")
                id_at = header.index("ecg_id") if "ecg_id" in header else None
                continue
            n = len(header)
            ecg_id = (fields[id_at].strip() or None) if id_at is not None \
                and id_at < len(fields) else None
            if len(fields) == n and [f.strip() for f in fields] == header:
                rejects.add(line, None, "repeated_header", "a copy of the header line")
            elif len(fields) < n:
                rejects.add(line, ecg_id, "short_row",
                            f"{len(fields)} fields, the header has {n}")
            elif len(fields) > n and any(f.strip() for f in fields[n:]):
                rejects.add(line, ecg_id, "long_row",
                            f"{len(fields)} fields, the header has {n}")
            else:
                rows.append(fields[:n])
                lines.append(line)
    except csv.Error as exc:
        raise TableError(f"{spec.file}: cannot be read as CSV near line {last + 1} "
                         f"({exc})") from exc
    if header is None:
        raise TableError(f"{spec.file}: empty file (no header line)")
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    df = pl.DataFrame([pl.Series(c, v, dtype=pl.String) for c, v in zip(header, columns,
                                                                         strict=True)])
    stripped = pl.col(pl.String).str.strip_chars()
    return df.with_columns(pl.when(stripped != "").then(stripped)).with_columns(
        pl.Series(LINE, lines, dtype=pl.Int64))


def _typed(df: pl.DataFrame, col: str, kind: str) -> pl.Expr:
    if kind == "boolean":
        s = pl.col(col).str.to_lowercase()
        return (pl.when(s.is_in(list(_TRUE))).then(True)
                .when(s.is_in(list(_FALSE))).then(False).otherwise(None))
    if kind == "number":
        return pl.col(col).cast(pl.Float64, strict=False)
    return pl.col(col).str.to_datetime(strict=False)


def parse_table_rows(name: str, data: bytes) -> ParsedTable:
    """Parse one table's CSV bytes into a typed frame (extra columns kept as read), quarantining
    rows that cannot be used: a short or long row, a repeated header line, a value that cannot
    be typed. Ids and every other value are compared after stripping surrounding whitespace.

    Raises :class:`TableError` (naming file and column) for a structural fault: unreadable
    text, a required column absent, or a typed column of which no value parses.
    """
    spec = TABLES[name]
    rejects = _Rejects(spec.file)
    df = _read_rows(spec, data, rejects)
    if name == "patient":
        df = df.rename({k: v for k, v in _OLD_RACE_NAMES.items() if k in df.columns
                        and v not in df.columns})
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        cols = [c for c in df.columns if c != LINE]
        raise TableError(
            f"{spec.file}: missing required column(s) {missing}; it has {len(cols)} "
            f"columns: {cols[:12]}{' ...' if len(cols) > 12 else ''}"
        )
    kinds = {**{c: "boolean" for c in spec.booleans}, **{c: "number" for c in spec.numbers},
             **{c: "date" for c in spec.dates}}
    out = df.with_columns(_typed(df, c, k).alias(c) for c, k in kinds.items())
    bad_rows = pl.lit(False)
    for c, kind in kinds.items():
        bad = pl.col(c).is_null() & df[c].is_not_null()
        n_bad, n_set = out.select(bad.sum()).item(), df[c].is_not_null().sum()
        if n_bad and n_bad == n_set:
            raise TableError(
                f"{spec.file}: column {c!r} cannot be parsed as {kind}s: none of its {n_set} "
                f"values is one, e.g. {df[c].drop_nulls().unique().sort().head(3).to_list()}")
        if n_bad:
            ids = out["ecg_id"] if "ecg_id" in out.columns else pl.Series([None] * len(out))
            for i in out.with_row_index("_i").filter(bad)["_i"].to_list():
                rejects.add(out[LINE][i], ids[i], "bad_value",
                            f"column {c!r} = {df[c][i]!r} is not a {kind}")
            bad_rows = bad_rows | bad
    out = out.filter(~bad_rows).drop(LINE)
    return ParsedTable(out, rejects.frame())


def parse_table(name: str, data: bytes) -> pl.DataFrame:
    """Parse one table's CSV bytes into a typed polars frame; any quarantined row is an error
    here (use :func:`parse_table_rows` to keep the table and quarantine the rows)."""
    parsed = parse_table_rows(name, data)
    if len(parsed.rejects):
        first = parsed.rejects.row(0, named=True)
        raise TableError(f"{TABLES[name].file}: {len(parsed.rejects)} row(s) cannot be used, "
                         f"e.g. {first['reason']} at {first['detail']}")
    return parsed.frame


def read_tables(read: Callable[[str], bytes]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Read all four tables through ``read(file_name) -> bytes``: the typed tables and every
    quarantined row (``ecg_id, key, reason, detail``).

    ``read`` raises ``FileNotFoundError`` (or any error) for a missing file; it is re-raised as a
    :class:`TableError` naming the file.
    """
    out, rejects = {}, []
    for name, spec in TABLES.items():
        try:
            data = read(spec.file)
        except Exception as exc:
            raise TableError(f"{spec.file}: cannot be read from the raw root ({exc})") from exc
        parsed = parse_table_rows(name, data)
        out[name] = parsed.frame
        rejects.append(parsed.rejects)
    return out, pl.concat(rejects)


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
