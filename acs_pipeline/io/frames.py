"""Small tables (manifest, cohort, quarantine, predictions) as Parquet or CSV in storage."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import polars as pl

from acs_pipeline.io.storage import Storage


@dataclass(frozen=True)
class Written:
    """Where a table went and what it holds: the facts an asset records as metadata."""

    uri: str
    rows: int
    bytes: int
    sha256: str
    columns: dict[str, str]

    @property
    def version(self) -> str:
        return self.sha256[:16]


def _written(storage: Storage, rel: str, df: pl.DataFrame, data: bytes) -> Written:
    uri = storage.write_bytes(rel, data)
    return Written(uri, df.height, len(data), hashlib.sha256(data).hexdigest(),
                   {k: str(v) for k, v in df.schema.items()})


def write_parquet(storage: Storage, rel: str, df: pl.DataFrame) -> Written:
    """Write ``df`` atomically as Parquet; the bytes do not depend on the write time."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=False)
    return _written(storage, rel, df, buf.getvalue())


def write_csv(storage: Storage, rel: str, df: pl.DataFrame) -> Written:
    """Write ``df`` atomically as CSV."""
    return _written(storage, rel, df, df.write_csv().encode())


def read_parquet(storage: Storage, rel: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(storage.read_bytes(rel)))


def read_csv(storage: Storage, rel: str, **kwargs) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(storage.read_bytes(rel)), **kwargs)


def to_markdown(df: pl.DataFrame, float_digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (floats rounded)."""

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.{float_digits}f}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join([head, rule, *body])
