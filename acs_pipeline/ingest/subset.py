"""Chosen ECGs of an ingested view, read part by part.

A training or prediction step needs some ids of a view (a stage's split, a validation set), not
the whole view (the full 12-lead view is ~13.5 GB). These functions read one part at a time and
keep only the wanted rows, so memory holds one part plus the result: ``read_subset`` gathers the
rows into one array (in memory, or a local ``.npy`` file that is then memory-mapped),
``iter_subset`` hands them on part by part (prediction: nothing is gathered).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from acs_pipeline.ingest.read import shard_paths
from acs_pipeline.io import tensors
from acs_pipeline.io.storage import Storage


def view_ids(storage: Storage, view: str, prefix: str = "tensors") -> np.ndarray:
    """Every ecg_id of a view, sorted; only the id column of each part is read (no samples)."""
    ids = []
    for path in shard_paths(storage, view, prefix):
        with storage.open_read(path) as f:
            ids.append(pq.read_table(f, columns=["ecg_id"]).column("ecg_id").to_numpy())
    out = np.concatenate(ids).astype(object) if ids else np.empty(0, dtype=object)
    return np.sort(out, kind="stable")


def iter_subset(storage: Storage, view: str, ids: Collection[str] | None = None,
                prefix: str = "tensors") -> Iterator[tensors.TensorSet]:
    """The rows of ``ids`` (all rows when ``None``), one part at a time in index order.

    Each yielded set owns its rows (a copy), so the part's buffer is freed before the next one
    is read; parts without a wanted id yield nothing. Ids absent from the view are not an error
    here: the caller compares what it got with what it asked for.
    """
    wanted = None if ids is None else set(ids)
    for path in shard_paths(storage, view, prefix):
        part = tensors.load(storage, path)
        if wanted is None:
            keep = np.arange(len(part))
        else:
            keep = np.flatnonzero([e in wanted for e in part.ecg_ids.tolist()])
        if len(keep):
            yield tensors.TensorSet(part.ecg_ids[keep], part.x[keep])
        del part


def read_subset(storage: Storage, view: str, ids: Sequence[str], prefix: str = "tensors",
                out: Path | None = None) -> tensors.TensorSet:
    """The rows of ``ids``, in that order, gathered part by part.

    With ``out`` (a local ``.npy`` path) the rows are written to that file and returned as a
    read-only memory map of it: the process keeps only the pages it touches, and several
    processes (DDP ranks) share one copy. Raises ``TensorFileError`` naming ids the view lacks.
    """
    ids = list(ids)
    pos = {e: i for i, e in enumerate(ids)}
    if len(pos) != len(ids):
        raise tensors.TensorFileError(f"{view}: duplicate ids requested")
    x: np.ndarray | None = None
    found = np.zeros(len(ids), dtype=bool)
    for part in iter_subset(storage, view, pos, prefix):
        if x is None:
            shape = (len(ids), *part.x.shape[1:])
            x = (np.lib.format.open_memmap(out, mode="w+", dtype=part.x.dtype, shape=shape)
                 if out is not None else np.empty(shape, dtype=part.x.dtype))
        dest = np.fromiter((pos[e] for e in part.ecg_ids.tolist()), np.int64, len(part))
        x[dest] = part.x
        found[dest] = True
    if not found.all():
        missing = [ids[i] for i in np.flatnonzero(~found)[:5]]
        raise tensors.TensorFileError(
            f"{view}: {int((~found).sum())} requested ECG(s) have no tensor, e.g. {missing}")
    if x is None:  # no ids asked for: the view's layout from any part
        first = next(iter_subset(storage, view, None, prefix))
        x = np.empty((0, *first.x.shape[1:]), dtype=first.x.dtype)
    elif out is not None:
        assert isinstance(x, np.memmap)
        x.flush()
        del x
        x = np.load(out, mmap_mode="r")
    return tensors.TensorSet(np.asarray(ids, dtype=object), x)
