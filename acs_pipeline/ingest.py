"""Sharded, incremental ingest of the raw npz waveforms into Parquet tensor shards.

ECGs are grouped into shards by the two-hex-digit folder Nightingale already uses. Each shard's
output records a fingerprint of its inputs (file keys and content hashes), the view and the
processing code version; a re-run recomputes only the shards whose fingerprint changed. Every
listed file ends either as a tensor row or as a rejection with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from acs_pipeline import tensors
from acs_pipeline.leads import WaveformError, decode_npz, to_3by4
from acs_pipeline.rawsource import RawObject, RawSource
from acs_pipeline.reconstruct import reconstruct_12lead
from acs_pipeline.storage import Storage

NPZ_DIR = "ecg-waveforms-npz"
VIEWS = {"ecg_3by4": 3, "ecg_12lead": 12}
_KEY = re.compile(r"^ecg-waveforms-npz/([0-9a-f]{2})/([0-9a-f]{10})\.npz$")
MANIFEST_SCHEMA = {
    "key": pl.String, "ecg_id": pl.String, "shard": pl.String, "size": pl.Int64,
    "etag": pl.String, "sha256": pl.String, "status": pl.String, "detail": pl.String,
}
REJECT_SCHEMA = {"ecg_id": pl.String, "key": pl.String, "stage": pl.String,
                 "reason": pl.String, "detail": pl.String}


class IngestError(RuntimeError):
    """The raw root cannot be ingested at all (for example it holds no waveform files)."""


def ecg_id_for_key(key: str) -> str | None:
    """``ecg-waveforms-npz/3d/3df45120a4.npz`` -> ``ecg3df45120a4``; None if malformed."""
    m = _KEY.match(key)
    if not m or not m.group(2).startswith(m.group(1)):
        return None
    return "ecg" + m.group(2)


def build_manifest(
    source: RawSource, previous: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """List the npz files and their content hashes; reuse hashes whose ETag did not change.

    Returns the manifest (one row per listed file, ``status`` ``ok`` or a rejection reason) and
    counts ``{'listed', 'hashed', 'reused', 'rejected'}``.
    """
    objects = source.list(NPZ_DIR + "/", suffix=".npz")
    if not objects:
        raise IngestError(f"no '{NPZ_DIR}/**.npz' files under the raw root {source.root!r}")
    known: dict[tuple[str, str], str] = {}
    if previous is not None and len(previous):
        for k, e, h in previous.select("key", "etag", "sha256").iter_rows():
            if h:
                known[(k, e)] = h
    rows: list[dict] = []
    to_hash: list[RawObject] = []
    for obj in objects:
        ecg_id = ecg_id_for_key(obj.key)
        row = {"key": obj.key, "ecg_id": ecg_id, "shard": ecg_id[3:5] if ecg_id else None,
               "size": obj.size, "etag": obj.etag, "sha256": known.get((obj.key, obj.etag)),
               "status": "ok", "detail": None}
        if ecg_id is None:
            row.update(status="unexpected_file_name",
                       detail="expected ecg-waveforms-npz/<hex2>/<10 hex>.npz")
        elif row["sha256"] is None:
            to_hash.append(obj)
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for key, data in source.read_many([o.key for o in to_hash]):
        row = by_key[key]
        if isinstance(data, Exception):
            row.update(status="unreadable", detail=str(data))
        else:
            row["sha256"] = hashlib.sha256(data).hexdigest()
    manifest = pl.DataFrame(rows, schema=MANIFEST_SCHEMA).sort("key")
    counts = {
        "listed": len(rows),
        "hashed": len(to_hash),
        "reused": len(rows) - len(to_hash) - manifest.filter(pl.col("status") ==
                                                             "unexpected_file_name").height,
        "rejected": manifest.filter(pl.col("status") != "ok").height,
    }
    return manifest, counts


def shard_fingerprint(view: str, code_version: str, members: Iterable[tuple[str, str]]) -> str:
    """Hash of the view, the code version and the sorted (key, content hash) pairs of a shard."""
    h = hashlib.sha256(f"{view}\n{code_version}\n".encode())
    for key, sha in sorted(members):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


def transform_batch(view: str, raw: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Apply a view's processing to a (N, 15, 5000) batch; per-ECG failures are reported."""
    if view == "ecg_3by4":
        return to_3by4(raw), [None] * len(raw)
    if view == "ecg_12lead":
        out = np.zeros((len(raw), 12, raw.shape[-1]), dtype=np.float32)
        errors: list[str | None] = []
        for i, one in enumerate(raw):
            try:
                out[i] = reconstruct_12lead(one)
                errors.append(None)
            except WaveformError as exc:
                errors.append(f"{exc.reason}: {exc}")
        return out, errors
    raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}")


@dataclass
class ShardResult:
    shard: str
    fingerprint: str
    path: str
    rows: int
    bytes: int
    sha256: str
    rejects: list[dict] = field(default_factory=list)


@dataclass
class IngestReport:
    view: str
    shards_total: int = 0
    shards_reused: int = 0
    shards_computed: int = 0
    shards_removed: int = 0
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    index_path: str = ""
    data_version: str = ""
    rejects: list[dict] = field(default_factory=list)

    def metadata(self) -> dict:
        d = asdict(self)
        d.pop("rejects")
        return d


def _ingest_shard(source: RawSource, storage: Storage, view: str, shard: str,
                  members: pl.DataFrame, fingerprint: str, path: str) -> ShardResult:
    keys = members["key"].to_list()
    ids = dict(zip(keys, members["ecg_id"].to_list(), strict=True))
    rejects: list[dict] = []
    good_ids: list[str] = []
    arrays: list[np.ndarray] = []
    for key, data in source.read_many(keys):
        if isinstance(data, Exception):
            rejects.append({"ecg_id": ids[key], "key": key, "stage": view,
                            "reason": "unreadable", "detail": str(data)})
            continue
        try:
            arrays.append(decode_npz(data, source=key))
            good_ids.append(ids[key])
        except WaveformError as exc:
            rejects.append({"ecg_id": ids[key], "key": key, "stage": view,
                            "reason": exc.reason, "detail": str(exc)})
    kept_ids: list[str] = []
    if arrays:
        out, errors = transform_batch(view, np.stack(arrays))
        keep = np.array([e is None for e in errors])
        key_of = {v: k for k, v in ids.items()}
        for ecg_id, err in zip(good_ids, errors, strict=True):
            if err is not None:
                reason, _, detail = err.partition(": ")
                rejects.append({"ecg_id": ecg_id, "key": key_of[ecg_id], "stage": view,
                                "reason": reason, "detail": detail})
        kept_ids = [e for e, k in zip(good_ids, keep, strict=True) if k]
        out = out[keep]
    else:
        out = np.zeros((0, VIEWS[view], 5000), dtype=np.float32)
    order = np.argsort(kept_ids, kind="stable")
    kept_ids = [kept_ids[i] for i in order]
    out = out[order]
    buf = io.BytesIO()
    tensors.write(buf, kept_ids, out)
    data = buf.getvalue()
    storage.write_bytes(path, data)  # atomic; hashed from memory, no read-back
    return ShardResult(shard, fingerprint, path, len(kept_ids), len(data),
                       hashlib.sha256(data).hexdigest(), rejects)


def ingest_view(
    source: RawSource,
    storage: Storage,
    manifest: pl.DataFrame,
    view: str,
    *,
    code_version: str,
    prefix: str = "tensors",
    on_shard: Callable[[str, bool], None] | None = None,
) -> IngestReport:
    """Bring ``{prefix}/{view}/`` up to date with the manifest's ``ok`` files.

    Shards whose fingerprint matches the index are reused; the index is rewritten after every
    computed shard, so an interrupted run keeps its progress. Files not ``ok`` in the manifest are
    reported as rejections of stage ``manifest``.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}")
    t0 = time.perf_counter()
    base = f"{prefix}/{view}"
    index_path = f"{base}/_index.json"
    index: dict = {"view": view, "code_version": code_version, "shards": {}}
    if storage.exists(index_path):
        old = json.loads(storage.read_bytes(index_path))
        if old.get("view") == view:
            index["shards"] = old.get("shards", {})
    report = IngestReport(view=view, index_path=storage.uri(index_path))
    bad = manifest.filter(pl.col("status") != "ok")
    for r in bad.iter_rows(named=True):
        report.rejects.append({"ecg_id": r["ecg_id"], "key": r["key"], "stage": "manifest",
                               "reason": r["status"], "detail": r["detail"]})
    ok = manifest.filter(pl.col("status") == "ok")
    shards = ok.partition_by("shard", as_dict=True, maintain_order=True)
    wanted = {}
    for (shard,), members in sorted(shards.items()):
        fp = shard_fingerprint(view, code_version,
                               members.select("key", "sha256").iter_rows())
        wanted[shard] = (members, fp)
    for shard in sorted(set(index["shards"]) - set(wanted)):
        path = index["shards"].pop(shard)["path"]
        if storage.exists(path):
            storage.delete(path)
        report.shards_removed += 1
    for shard, (members, fp) in wanted.items():
        path = f"{base}/shard={shard}.parquet"
        prev = index["shards"].get(shard)
        reuse = prev is not None and prev["fingerprint"] == fp and storage.exists(path)
        if reuse:
            res = ShardResult(**prev)
            report.shards_reused += 1
        else:
            res = _ingest_shard(source, storage, view, shard, members, fp, path)
            index["shards"][shard] = asdict(res)
            storage.write_bytes(index_path, json.dumps(index, indent=1).encode())
            report.shards_computed += 1
        if on_shard:
            on_shard(shard, reuse)
        report.rows += res.rows
        report.bytes += res.bytes
        report.rejects.extend(res.rejects)
    index["code_version"] = code_version
    storage.write_bytes(index_path, json.dumps(index, indent=1).encode())
    report.shards_total = len(wanted)
    report.rejected = len(report.rejects)
    report.data_version = hashlib.sha256(
        "".join(f"{s}:{index['shards'][s]['sha256']}" for s in sorted(wanted)).encode()
    ).hexdigest()[:16]
    report.seconds = time.perf_counter() - t0
    return report


def rejects_frame(rejects: Sequence[dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rejects), schema=REJECT_SCHEMA)


def shard_paths(storage: Storage, view: str, prefix: str = "tensors") -> list[str]:
    """The tensor shard files recorded in a view's index, in shard order."""
    index_path = f"{prefix}/{view}/_index.json"
    if not storage.exists(index_path):
        raise IngestError(f"{storage.uri(index_path)} does not exist: materialize {view} first")
    index = json.loads(storage.read_bytes(index_path))
    return [index["shards"][s]["path"] for s in sorted(index["shards"])]


def load_view(storage: Storage, view: str, prefix: str = "tensors") -> tensors.TensorSet:
    """Read every shard of a view into one (N, C, 5000) float16 tensor set."""
    fs, base = storage.pyarrow_fs()
    parts = [tensors.read(f"{base.rstrip('/')}/{p}" if base else p, filesystem=fs)
             for p in shard_paths(storage, view, prefix)]
    return tensors.concat(parts)
