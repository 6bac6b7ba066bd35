"""Reading an ingested view back: its index, content version, parts, row count and tensors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from acs_pipeline.ingest.manifest import IngestError
from acs_pipeline.io import tensors
from acs_pipeline.io.storage import Storage

INDEX_FORMAT = 2


def index_version(index: dict) -> str:
    """Content version of a view: a hash of every part's SHA-256, in shard order."""
    h = hashlib.sha256()
    for s in sorted(index["shards"]):
        for p in index["shards"][s]:
            h.update(f"{s}:{p['sha256']}\n".encode())
    return h.hexdigest()[:16]


def _index(storage: Storage, view: str, prefix: str) -> dict:
    index_path = f"{prefix}/{view}/_index.json"
    if not storage.exists(index_path):
        raise IngestError(f"{storage.uri(index_path)} does not exist: materialize {view} first")
    index = json.loads(storage.read_bytes(index_path))
    if index.get("format") != INDEX_FORMAT:
        raise IngestError(f"{storage.uri(index_path)} has an older layout: materialize {view} "
                          "again")
    return index


def view_version(storage: Storage, view: str, prefix: str = "tensors") -> str:
    """The content version of an ingested view (changes whenever any part changes)."""
    return index_version(_index(storage, view, prefix))


def shard_paths(storage: Storage, view: str, prefix: str = "tensors") -> list[str]:
    """The tensor part files recorded in a view's index, in shard order."""
    index = _index(storage, view, prefix)
    return [p["path"] for s in sorted(index["shards"]) for p in index["shards"][s]]


def iter_view(storage: Storage, view: str, prefix: str = "tensors") -> Iterator[tensors.TensorSet]:
    """Each part of a view, in index order, one at a time: memory stays at one part's size
    (a check over the full 12-lead view would otherwise hold 13.5 GB)."""
    for path in shard_paths(storage, view, prefix):
        yield tensors.load(storage, path)


def view_rows(storage: Storage, view: str, prefix: str = "tensors") -> int:
    """A view's row count from its parts' Parquet footers (no samples are read)."""
    paths = shard_paths(storage, view, prefix)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(lambda p: tensors.count_rows(storage, p), paths))


def load_view(storage: Storage, view: str, prefix: str = "tensors") -> tensors.TensorSet:
    """Read every part of a view into one (N, C, 5000) float16 tensor set, sorted by ecg_id.

    The rows are copied once, straight into their sorted place, whatever the part layout
    (a view grown incrementally reads back exactly like one ingested in one go).
    """
    paths = shard_paths(storage, view, prefix)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda p: tensors.load(storage, p), paths))
    parts = [p for p in parts if len(p)]
    if not parts:
        raise tensors.TensorFileError(f"{view}: no tensors in {storage.uri(prefix)}")
    ids = np.concatenate([p.ecg_ids for p in parts])
    order = np.argsort(ids, kind="stable")
    dest = np.empty_like(order)
    dest[order] = np.arange(len(order))
    x = np.empty((len(ids), *parts[0].x.shape[1:]), dtype=parts[0].x.dtype)
    at = 0
    for p in parts:
        x[dest[at:at + len(p)]] = p.x
        at += len(p)
    return tensors.TensorSet(ids[order], x)
