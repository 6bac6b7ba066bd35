"""Parquet tensor files: one row per ECG, an ``ecg_id`` and a fixed-size list of float16 samples.

A file holds an (N, C, L) array as a ``fixed_size_list<halffloat>[C*L]`` column ``x`` next to the
``ecg_id`` column; ``C`` and ``L`` are stored in the schema metadata. Reading a single-row-group
file back gives a view of Arrow's buffer, reshaped without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from acs_pipeline.io.storage import Storage

STORAGE_DTYPE = np.float16


class TensorFileError(ValueError):
    """A tensor file or array does not have the expected layout."""


@dataclass(frozen=True)
class TensorSet:
    """ECG ids and their samples, ``x[i]`` belonging to ``ecg_ids[i]``."""

    ecg_ids: np.ndarray
    x: np.ndarray

    def __len__(self) -> int:
        return len(self.ecg_ids)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def select(self, ids: Sequence[str]) -> TensorSet:
        """Rows for ``ids`` in that order; raises naming the ids that are absent."""
        pos = {e: i for i, e in enumerate(self.ecg_ids.tolist())}
        missing = [e for e in ids if e not in pos]
        if missing:
            raise TensorFileError(
                f"{len(missing)} requested ECG(s) have no tensor, e.g. {missing[:5]}"
            )
        idx = np.fromiter((pos[e] for e in ids), dtype=np.int64, count=len(ids))
        return TensorSet(np.asarray(ids, dtype=object), self.x[idx])


def to_table(ecg_ids: Sequence[str], x: np.ndarray) -> pa.Table:
    """Build the Arrow table for ``x`` of shape (N, C, L), stored as float16."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise TensorFileError(f"expected an (N, C, L) array, got shape {x.shape}")
    if len(ecg_ids) != x.shape[0]:
        raise TensorFileError(f"{len(ecg_ids)} ids for {x.shape[0]} tensors")
    n, c, length = x.shape
    flat = np.ascontiguousarray(x, dtype=STORAGE_DTYPE).reshape(-1)
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat), c * length)
    schema = pa.schema(
        [pa.field("ecg_id", pa.string()), pa.field("x", values.type)],
        metadata={b"channels": str(c).encode(), b"length": str(length).encode()},
    )
    return pa.Table.from_arrays([pa.array(list(ecg_ids), pa.string()), values], schema=schema)


def write(sink: str | BinaryIO, ecg_ids: Sequence[str], x: np.ndarray, **kwargs) -> None:
    """Write one tensor file (one row group) to a path or an open binary file.

    The samples are stored BYTE_STREAM_SPLIT (the high and low bytes of the float16 values in
    separate streams) and zstd-compressed: about 0.69 of the raw float16 bytes, cheaper to
    write than zstd alone. No min/max statistics: nothing filters on sample values.
    """
    options = dict(compression="zstd", row_group_size=max(1, len(ecg_ids)),
                   use_dictionary=False, use_byte_stream_split=["x.list.element"],
                   write_statistics=["ecg_id"])
    pq.write_table(to_table(ecg_ids, x), sink, **{**options, **kwargs})


def from_table(table: pa.Table, source: str = "<table>") -> TensorSet:
    """Read an (N, C, L) float16 view from a table written by :func:`to_table`."""
    meta = table.schema.metadata or {}
    try:
        c, length = int(meta[b"channels"]), int(meta[b"length"])
    except KeyError as exc:
        raise TensorFileError(f"{source}: no channels/length schema metadata") from exc
    missing = {"ecg_id", "x"} - set(table.column_names)
    if missing:
        raise TensorFileError(f"{source}: missing column(s) {sorted(missing)}")
    col = table.column("x")
    if len(col) == 0:
        x = np.empty((0, c, length), dtype=STORAGE_DTYPE)
    else:
        chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        values = chunk.flatten()
        if values.null_count:
            raise TensorFileError(f"{source}: null samples in the tensor column")
        x = values.to_numpy(zero_copy_only=True).reshape(-1, c, length)
    ids = np.asarray(table.column("ecg_id").to_pylist(), dtype=object)
    return TensorSet(ids, x)


def read(source) -> TensorSet:
    """Read a tensor file from a local path or a file object."""
    return from_table(pq.read_table(source), source=str(source))


# Parquet files under a storage root are read through boto3 like every other object, so S3
# reads use the client's refreshable credentials (no frozen keys handed to pyarrow.fs), and it
# is also the faster way. Measured on the moto server on loopback (16 parts of 64 (3, 5000)
# ECGs, 1.6 MB each, 8 threads, median of 5, two runs): whole parts 145-178 ms by one GetObject
# each into pyarrow vs 283-288 ms through pyarrow.fs.S3FileSystem (210-330 ms by ranged GETs);
# footers 68-76 ms by one GET of the last 64 KiB (Storage.open_read) vs 82-97 ms through
# pyarrow.fs. benchmarks/ingest.py (parquet_reads_s3_loopback) repeats the comparison.
def load(storage: Storage, rel: str) -> TensorSet:
    """Read the tensor file ``rel`` of a storage root: one whole-object read."""
    return from_table(pq.read_table(pa.BufferReader(storage.read_bytes(rel))),
                      source=storage.uri(rel))


def count_rows(storage: Storage, rel: str) -> int:
    """Rows of the tensor file ``rel`` from its Parquet footer (on S3 one ranged read)."""
    with storage.open_read(rel) as f:
        return pq.read_metadata(f).num_rows


def concat(parts: Sequence[TensorSet]) -> TensorSet:
    """Concatenate tensor sets of the same (C, L), keeping their order."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise TensorFileError("no tensors to concatenate")
    shapes = {p.x.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise TensorFileError(f"tensor parts have different shapes {sorted(shapes)}")
    return TensorSet(
        np.concatenate([p.ecg_ids for p in parts]), np.concatenate([p.x for p in parts])
    )
