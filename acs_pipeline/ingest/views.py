"""Sharded, incremental ingest of the raw npz waveforms into Parquet tensor parts.

ECGs are grouped into shards by the two-hex-digit folder Nightingale already uses
(``{prefix}/{view}/shard=3d/``). A shard holds one or more parts; each part records the raw files
it was made from (key and content hash), and its name carries a fingerprint of those, the view
and the processing code version. A re-run leaves a shard alone when its parts cover exactly the
manifest's files, and otherwise decodes only the files no part covers, so new files cost in
proportion to their number. Shards are independent and can run in separate processes. Every
listed file ends either as a tensor row or as a rejection with its reason.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, astuple, dataclass, field, fields
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from acs_pipeline.ecg.leads import N_SAMPLES, WaveformError, decode_npz, to_3by4
from acs_pipeline.ecg.reconstruct import reconstruct_12lead
from acs_pipeline.io import tensors
from acs_pipeline.io.rawsource import RawSource
from acs_pipeline.io.storage import Storage

NPZ_DIR = "ecg-waveforms-npz"
VIEWS = {"ecg_3by4": 3, "ecg_12lead": 12}
_KEY = re.compile(r"^ecg-waveforms-npz/([0-9a-f]{2})/([0-9a-f]{10})\.npz$")
MANIFEST_SCHEMA = {
    "key": pl.String, "ecg_id": pl.String, "shard": pl.String, "size": pl.Int64,
    "etag": pl.String, "sha256": pl.String, "status": pl.String, "detail": pl.String,
}
INDEX_FORMAT = 2
MAX_PARTS = 8  # parts a shard may hold before an update compacts it into one
_WRITERS = 4  # shards whose writes may be in flight at once (in-process ingest)
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
    listed = pl.DataFrame({"key": [o.key for o in objects], "size": [o.size for o in objects],
                           "etag": [o.etag for o in objects]},
                          schema={k: MANIFEST_SCHEMA[k] for k in ("key", "size", "etag")})
    folder = pl.col("key").str.extract(_KEY.pattern, 1)
    hex_id = pl.col("key").str.extract(_KEY.pattern, 2)
    ecg_id = pl.when(hex_id.str.starts_with(folder)).then(pl.lit("ecg") + hex_id)
    manifest = listed.with_columns(ecg_id=ecg_id).with_columns(
        shard=pl.col("ecg_id").str.slice(3, 2))
    known = (previous.select("key", "etag", "sha256").filter(pl.col("sha256").is_not_null())
             if previous is not None and len(previous)
             else pl.DataFrame(schema={k: MANIFEST_SCHEMA[k] for k in ("key", "etag", "sha256")}))
    manifest = manifest.join(known, on=["key", "etag"], how="left").with_columns(
        status=pl.when(pl.col("ecg_id").is_null()).then(pl.lit("unexpected_file_name"))
        .otherwise(pl.lit("ok")),
        detail=pl.when(pl.col("ecg_id").is_null())
        .then(pl.lit("expected ecg-waveforms-npz/<hex2>/<10 hex>.npz")),
    )
    to_hash = manifest.filter(pl.col("ecg_id").is_not_null() & pl.col("sha256").is_null())["key"]
    hashed: dict[str, tuple[str | None, str, str | None]] = {}
    for key, data in source.read_many(to_hash.to_list()):
        hashed[key] = ((None, "unreadable", str(data)) if isinstance(data, Exception)
                       else (hashlib.sha256(data).hexdigest(), "ok", None))
    if hashed:
        new = pl.DataFrame([(k, *v) for k, v in hashed.items()], orient="row",
                           schema={"key": pl.String, "new_sha256": pl.String,
                                   "new_status": pl.String, "new_detail": pl.String})
        manifest = manifest.join(new, on="key", how="left").with_columns(
            sha256=pl.coalesce("new_sha256", "sha256"),
            status=pl.coalesce("new_status", "status"),
            detail=pl.when(pl.col("new_status").is_not_null()).then("new_detail")
            .otherwise("detail"),
        )
    manifest = manifest.select(list(MANIFEST_SCHEMA)).cast(MANIFEST_SCHEMA).sort("key")
    unexpected = manifest.filter(pl.col("status") == "unexpected_file_name").height
    counts = {
        "listed": manifest.height,
        "hashed": len(to_hash),
        "reused": manifest.height - len(to_hash) - unexpected,
        "rejected": manifest.filter(pl.col("status") != "ok").height,
    }
    return manifest, counts


def shard_fingerprint(view: str, code_version: str, members: Iterable[tuple[str, str]]) -> str:
    """Hash of the view, the code version and the sorted (key, content hash) pairs of a shard."""
    h = hashlib.sha256(f"{view}\n{code_version}\n".encode())
    for key, sha in sorted(members):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


def transform_batch(view: str, raw: np.ndarray | list[np.ndarray]
                    ) -> tuple[np.ndarray, list[str | None]]:
    """Apply a view's processing to a (N, 15, 5000) batch (or a list of N (15, 5000) arrays);
    per-ECG failures are reported."""
    if view == "ecg_3by4":
        return to_3by4(raw), [None] * len(raw)
    if view == "ecg_12lead":
        out = np.zeros((len(raw), 12, N_SAMPLES), dtype=np.float32)
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
class Part:
    """One Parquet file of a shard: the raw files it covers and what became of each of them.

    ``members`` maps every raw key the part was made from to that file's content hash; each
    member is either a tensor row or one of ``rejects``. The file name carries the part's
    fingerprint, so the same inputs always give the same path.
    """

    path: str
    fingerprint: str
    rows: int
    bytes: int
    sha256: str
    members: dict[str, str]
    rejects: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        """The part as a JSON-ready dict (shallow: ``asdict`` would deep-copy the members)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ShardTask:
    """Everything one shard's update needs; picklable, so it can run in another process."""

    source: RawSource
    storage: Storage
    view: str
    code_version: str
    shard: str
    base: str
    wanted: dict[str, str]  # raw key -> content hash, the manifest's ``ok`` files
    ids: dict[str, str]  # raw key -> ecg_id
    parts: list[Part]  # the shard's current parts (empty when none or stale)
    files: list[str] = field(default_factory=list)  # files in the shard's folder at the start
    max_parts: int = MAX_PARTS
    batch: int = 32  # ECGs transformed together; fits in cache (~10 % faster than 256)


@dataclass
class ShardOutcome:
    shard: str
    parts: list[Part]
    computed: int  # ECGs decoded and transformed
    carried: int  # rows (or rejections) copied from parts that were rewritten
    seconds: float


@dataclass
class IngestReport:
    view: str
    shards_total: int = 0
    shards_reused: int = 0
    shards_computed: int = 0
    shards_removed: int = 0
    ecgs_computed: int = 0
    rows_carried: int = 0
    parts: int = 0
    workers: int = 1
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


def _shard_dir(base: str, shard: str) -> str:
    return f"{base}/shard={shard}"


def _shard_file(base: str, shard: str) -> str:
    return f"{_shard_dir(base, shard)}/_shard.json"


Row = tuple[str, np.ndarray | None, dict | None]  # (ecg_id, float16 tensor, rejection)


def _transformed(view: str, keys: Sequence[tuple[str, str]],
                 reads: Iterator[tuple[str, bytes | Exception]], batch: int) -> Iterator[Row]:
    """Decode and transform ``keys`` ((raw key, ecg_id) pairs; their bytes come from
    ``reads``, in order) in batches of ``batch``, yielding one row per key, in order: its
    float16 tensor or its rejection.

    Batches run across shard boundaries, so a run that adds a few files to many shards
    transforms them as efficiently as a full run.
    """

    def reject(ecg_id: str, key: str, reason: str, detail: str) -> Row:
        return ecg_id, None, {"ecg_id": ecg_id, "key": key, "stage": view, "reason": reason,
                              "detail": detail}

    done: list[Row | None] = []  # in key order; None = waiting for its batch
    pending: list[tuple[int, np.ndarray]] = []  # (index into done, decoded raw)
    meta: list[tuple[str, str]] = []

    def flush() -> None:
        if not pending:
            return
        out, errors = transform_batch(view, [raw for _, raw in pending])  # no stacked copy
        out = out.astype(tensors.STORAGE_DTYPE)
        for j, ((i, _), (key, ecg_id), err) in enumerate(zip(pending, meta, errors,
                                                             strict=True)):
            if err is None:
                done[i] = (ecg_id, out[j], None)
            else:
                reason, _, detail = err.partition(": ")
                done[i] = reject(ecg_id, key, reason, detail)
        pending.clear()
        meta.clear()

    for (key, ecg_id), (got, data) in zip(keys, reads, strict=True):
        if got != key:
            raise RuntimeError(f"read {got!r} where {key!r} was expected")
        if isinstance(data, Exception):
            done.append(reject(ecg_id, key, "unreadable", str(data)))
        else:
            try:
                pending.append((len(done), decode_npz(data, source=key)))
                meta.append((key, ecg_id))
                done.append(None)
            except WaveformError as exc:
                done.append(reject(ecg_id, key, exc.reason, str(exc)))
        if len(pending) >= batch:
            flush()
        if not pending:  # everything so far is final
            yield from done  # type: ignore[misc]
            done.clear()
    flush()
    yield from done  # type: ignore[misc]


def _collect(view: str, rows: Iterable[Row]) -> tuple[list[str], np.ndarray, list[dict]]:
    """A shard's rows -> (ecg ids, (N, C, 5000) float16 tensors, rejections)."""
    ids: list[str] = []
    xs: list[np.ndarray] = []
    rejects: list[dict] = []
    for ecg_id, x, rejection in rows:
        if rejection is None:
            ids.append(ecg_id)
            xs.append(x)
        else:
            rejects.append(rejection)
    x = (np.stack(xs) if xs
         else np.zeros((0, VIEWS[view], N_SAMPLES), dtype=tensors.STORAGE_DTYPE))
    return ids, x, rejects


def _read_part(storage: Storage, part: Part) -> tensors.TensorSet:
    return tensors.from_table(pq.read_table(pa.BufferReader(storage.read_bytes(part.path))),
                              source=storage.uri(part.path))


def _valid(part: Part, wanted: dict[str, str]) -> bool:
    return all(wanted.get(k) == s for k, s in part.members.items())


Plan = tuple[list[Part], list[Part], list[str]]


def _plan(parts: list[Part], wanted: dict[str, str], max_parts: int = MAX_PARTS) -> Plan:
    """(parts kept as they are, parts to rewrite, raw keys to decode) for one shard."""
    keep = [p for p in parts if _valid(p, wanted)]
    if len(keep) >= max_parts:
        keep = []  # compact: everything is carried into one new part
    covered = {k for p in keep for k in p.members}
    rewrite = [p for p in parts if all(p is not k for k in keep)]
    carried = {k for p in rewrite for k, s in p.members.items() if wanted.get(k) == s}
    todo = sorted(k for k in wanted if k not in covered and k not in carried)
    return keep, rewrite, todo


def _process_shard(task: ShardTask) -> ShardOutcome:
    """Bring one shard up to date (`_build_shard`, then its writes)."""
    outcome, commit = _build_shard(task)
    commit()
    return outcome


def _build_shard(task: ShardTask, rows: Iterator[Row] | None = None, plan: Plan | None = None
                 ) -> tuple[ShardOutcome, Callable[[], None]]:
    """Bring one shard up to date: keep valid parts, add one part for what they do not cover.

    Parts whose members all still match the manifest are kept as they are. Rows of a part that
    lost a member (file changed or removed) are carried into the new part without recomputing;
    only files no part covers are decoded and transformed (their ``rows``, from
    `_transformed`, when the caller streams them across shards). With more than ``max_parts`` parts
    the shard is compacted into one. Returns the outcome and the shard's writes, to run in
    order: the new part, then ``_shard.json``, then deleting replaced parts, so a crash
    leaves the previous state readable. The new part's size and hash are known once the
    writes ran.
    """
    t0 = time.perf_counter()
    st = task.storage
    keep, rewrite, todo = plan or _plan(task.parts, task.wanted, task.max_parts)
    covered = {k for p in keep for k in p.members}
    carried_ids: list[str] = []
    carried_x: list[np.ndarray] = []
    carried_rejects: list[dict] = []
    members: dict[str, str] = {}
    for p in rewrite:
        still = {k: s for k, s in p.members.items() if task.wanted.get(k) == s
                 and k not in covered and k not in members}
        if not still:
            continue
        members.update(still)
        wanted_ids = {task.ids[k] for k in still}
        carried_rejects += [r for r in p.rejects if r["key"] in still]
        if p.rows:
            tset = _read_part(st, p)
            sel = np.array([e in wanted_ids for e in tset.ecg_ids.tolist()], dtype=bool)
            carried_ids += tset.ecg_ids[sel].tolist()
            carried_x.append(tset.x[sel])
    if rows is None:
        rows = _transformed(task.view, [(k, task.ids[k]) for k in todo],
                            task.source.read_many(todo), task.batch)
    ids, x, rejects = _collect(task.view, itertools.islice(rows, len(todo)))
    members.update({k: task.wanted[k] for k in todo})
    new_parts = list(keep)
    table: tuple[Part, list[str], np.ndarray] | None = None
    if members:
        all_ids = carried_ids + ids
        stack = [a for a in [*carried_x, x] if len(a)]
        xs = (np.concatenate(stack) if stack
              else np.zeros((0, VIEWS[task.view], 5000), dtype=tensors.STORAGE_DTYPE))
        fp = shard_fingerprint(task.view, task.code_version, members.items())
        path = f"{_shard_dir(task.base, task.shard)}/part-{fp[:16]}.parquet"
        part = Part(path, fp, len(all_ids), 0, "", members,  # size and hash set by commit
                    sorted(carried_rejects + rejects, key=lambda r: r["key"]))
        new_parts.append(part)
        table = part, all_ids, xs
    live = {p.path for p in new_parts}

    def commit() -> None:
        """Encode the new part (pyarrow releases the GIL: this overlaps the next shard's
        compute), then write it, then ``_shard.json``, then delete what it replaced."""
        if table is not None:
            part, all_ids, xs = table
            order = np.argsort(np.asarray(all_ids, dtype=object), kind="stable")
            buf = io.BytesIO()
            tensors.write(buf, [all_ids[i] for i in order], xs[order])
            data = buf.getvalue()  # hashed from memory, no read-back
            part.bytes, part.sha256 = len(data), hashlib.sha256(data).hexdigest()
            st.write_bytes(part.path, data)  # atomic
        st.write_bytes(_shard_file(task.base, task.shard), json.dumps({
            "view": task.view, "code_version": task.code_version, "shard": task.shard,
            "parts": [p.as_json() for p in new_parts]}).encode())
        for rel in task.files:
            if rel.endswith(".parquet") and rel not in live:
                st.delete(rel)  # replaced, stale (older code version) or left by a crash

    return ShardOutcome(task.shard, new_parts, len(todo), len(members) - len(todo),
                        time.perf_counter() - t0), commit


def _read_shard_state(storage: Storage, base: str, shard: str, view: str,
                      code_version: str, present: set[str]) -> list[Part]:
    """The shard's recorded parts whose files are ``present``; [] if none, stale or
    unreadable."""
    rel = _shard_file(base, shard)
    if rel not in present:
        return []
    try:
        doc = json.loads(storage.read_bytes(rel))
    except (FileNotFoundError, ValueError):
        return []
    if doc.get("view") != view or doc.get("code_version") != code_version:
        return []
    parts = [Part(**p) for p in doc.get("parts", [])]
    return [p for p in parts if p.path in present]


def _written(pending: deque[tuple[ShardOutcome, Future[None]]]) -> ShardOutcome:
    """The oldest pending shard's outcome, once its writes finished (their error raised)."""
    outcome, future = pending.popleft()
    future.result()
    return outcome


def _run_tasks(tasks: list[ShardTask], workers: int,
               min_parallel: int) -> Iterator[ShardOutcome]:
    plans = [_plan(t.parts, t.wanted, t.max_parts) for t in tasks]
    todo = [plan[2] for plan in plans]
    if workers <= 1 or len(tasks) <= 1 or sum(map(len, todo)) < min_parallel:
        # One read and transform stream over every shard: reads run ahead and batches span
        # shard boundaries; each shard's writes (fsync-bound) run in a writer thread while
        # the next shard computes.
        keys = [(k, t.ids[k]) for t, ks in zip(tasks, todo, strict=True) for k in ks]
        stream = (_transformed(tasks[0].view, keys,
                               tasks[0].source.read_many([k for k, _ in keys]), tasks[0].batch)
                  if tasks else iter(()))
        pending: deque[tuple[ShardOutcome, Future[None]]] = deque()
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="ingest-write") as pool:
            try:
                for task, plan in zip(tasks, plans, strict=True):
                    outcome, commit = _build_shard(task, stream, plan)
                    pending.append((outcome, pool.submit(commit)))
                    # yield shards whose writes are done, in order; at most _WRITERS in flight
                    while pending and (pending[0][1].done() or len(pending) > _WRITERS):
                        yield _written(pending)
                while pending:
                    yield _written(pending)
            finally:  # an error leaves every shard whose writes started fully written
                wait([f for _, f in pending])
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads and locks
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures = [pool.submit(_process_shard, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


@dataclass
class ViewState:
    """A view's recorded shards measured against the manifest (see `survey_view`)."""

    view: str
    code_version: str
    base: str
    wanted: dict[str, tuple[dict[str, str], dict[str, str]]]  # shard -> (key->sha, key->id)
    parts: dict[str, list[Part]]  # each wanted shard's recorded, present parts
    files: dict[str, list[str]]  # every file under each shard folder, wanted or not
    old_index: dict
    manifest_rejects: list[dict]
    complete: bool = True  # False: limited to some shards (cannot finish the view)

    @property
    def shards(self) -> list[str]:
        return sorted(self.wanted)

    def is_current(self, shard: str) -> bool:
        """Whether the shard's parts cover exactly the manifest's files (and nothing else)."""
        return {k: s for p in self.parts[shard] for k, s in p.members.items()} \
            == self.wanted[shard][0]

    def stale(self) -> list[str]:
        """The shards an update has to touch, in order."""
        return [s for s in self.shards if not self.is_current(s)]

    def task(self, source: RawSource, storage: Storage, shard: str,
             max_parts: int = MAX_PARTS) -> ShardTask:
        hashes, ids = self.wanted[shard]
        return ShardTask(source, storage, self.view, self.code_version, shard, self.base,
                         hashes, ids, self.parts[shard], self.files.get(shard, []),
                         max_parts=max_parts)

    def todo(self, shard: str) -> int:
        """How many files of a shard an update decodes."""
        return len(_plan(self.parts[shard], self.wanted[shard][0])[2])

    def chunks(self, n: int, min_files: int = 512) -> list[list[str]]:
        """The stale shards in at most ``n`` contiguous groups of similar work, each with at
        least ``min_files`` files to decode where possible (a step costs seconds to start)."""
        stale = self.stale()
        work = [max(self.todo(s), 1) for s in stale]
        n = max(1, min(n, len(stale), sum(work) // max(min_files, 1)))
        groups: list[list[str]] = []
        total, done = sum(work), 0
        for shard, w in zip(stale, work, strict=True):
            # a new group where this shard's midpoint passes the next boundary
            if not groups or (done + w / 2 > total * len(groups) / n and len(groups) < n):
                groups.append([])
            groups[-1].append(shard)
            done += w
        return groups


@dataclass
class UpdateCounts:
    """What an update of some shards did (summed over steps by `finish_view`)."""

    shards_computed: int = 0
    ecgs_computed: int = 0
    rows_carried: int = 0

    def add(self, other: UpdateCounts) -> UpdateCounts:
        return UpdateCounts(*(a + b for a, b in zip(astuple(self), astuple(other),
                                                     strict=True)))


def survey_view(storage: Storage, manifest: pl.DataFrame, view: str, *, code_version: str,
                prefix: str = "tensors", shard_digits: int = 2,
                shards: Collection[str] | None = None) -> ViewState:
    """Read a view's index and shard states and group the manifest's ``ok`` files by shard.

    One listing of the view (not a HEAD per part) and one small read per shard; writes
    nothing. ``shard_digits`` (1 or 2) is how many hex digits of the id name a shard.
    ``shards`` limits the state to those shards (for a step that updates only them; such a
    state cannot finish the view).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}")
    if shard_digits not in (1, 2):
        raise ValueError(f"shard_digits must be 1 or 2, got {shard_digits!r}")
    base = f"{prefix}/{view}"
    index_path = f"{base}/_index.json"
    old: dict = {}
    if storage.exists(index_path):
        old = json.loads(storage.read_bytes(index_path))
    rejects = [{"ecg_id": r["ecg_id"], "key": r["key"], "stage": "manifest",
                "reason": r["status"], "detail": r["detail"]}
               for r in manifest.filter(pl.col("status") != "ok").iter_rows(named=True)]
    ok = manifest.filter(pl.col("status") == "ok")
    wanted: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for shard, key, ecg_id, sha in ok.select("shard", "key", "ecg_id", "sha256").iter_rows():
        hashes, ids = wanted.setdefault(shard[:shard_digits], ({}, {}))
        hashes[key] = sha
        ids[key] = ecg_id
    if shards is not None:
        wanted = {s: wanted[s] for s in shards if s in wanted}
    listing = storage.list(base + "/")
    present = set(listing)
    by_shard: dict[str, list[str]] = {}
    for rel in listing:
        folder = rel[len(base) + 1:].partition("/")[0]
        if folder.startswith("shard="):
            by_shard.setdefault(folder.removeprefix("shard="), []).append(rel)
    names = sorted(wanted)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = dict(zip(names, pool.map(
            lambda s: _read_shard_state(storage, base, s, view, code_version, present), names),
            strict=True))
    return ViewState(view, code_version, base, wanted, parts, by_shard, old, rejects,
                     complete=shards is None)


def update_shards(state: ViewState, source: RawSource, storage: Storage,
                  shards: Sequence[str], *, workers: int = 1, min_parallel: int = 512,
                  max_parts: int = MAX_PARTS,
                  on_shard: Callable[[str, bool], None] | None = None) -> UpdateCounts:
    """Bring ``shards`` up to date (current ones are left alone); ``state`` learns their new
    parts. Each shard records its state in ``shard=XX/_shard.json`` as soon as it is done, so
    an interrupted update keeps its progress.

    With ``workers`` > 1 the shards run in that many separate processes (when they hold at
    least ``min_parallel`` files to decode: starting a process costs about a second).
    """
    counts = UpdateCounts()
    tasks = []
    for shard in shards:
        if state.is_current(shard):
            if on_shard:
                on_shard(shard, True)
        else:
            tasks.append(state.task(source, storage, shard, max_parts))
    for out in _run_tasks(tasks, workers, min_parallel):
        state.parts[out.shard] = out.parts
        counts = counts.add(UpdateCounts(1, out.computed, out.carried))
        if on_shard:
            on_shard(out.shard, False)
    return counts


def finish_view(state: ViewState, storage: Storage, counts: UpdateCounts | None = None, *,
                workers: int = 1, started: float | None = None) -> IngestReport:
    """Write the view's ``_index.json`` (last, and only when it changed), remove shards the
    manifest no longer has, and report. Every shard must be current."""
    if not state.complete:
        raise ValueError("finish_view needs a survey of every shard (shards=None)")
    stale = state.stale()
    if stale:
        raise IngestError(f"{state.view}: shards {', '.join(stale[:8])} are not up to date "
                          f"({len(stale)} in all); update them before writing the index")
    counts = counts or UpdateCounts()
    index_path = f"{state.base}/_index.json"
    old = state.old_index
    report = IngestReport(view=state.view, index_path=storage.uri(index_path), workers=workers,
                          shards_computed=counts.shards_computed,
                          ecgs_computed=counts.ecgs_computed, rows_carried=counts.rows_carried,
                          rejects=list(state.manifest_rejects))
    if old and old.get("format") != INDEX_FORMAT:  # the one-file-per-shard layout of format 1
        for entry in old.get("shards", {}).values():
            storage.delete(entry["path"])
    old_shards = set(old.get("shards", {})) if old.get("format") == INDEX_FORMAT else set()
    for shard in sorted(old_shards - set(state.wanted)):
        for rel in state.files.get(shard, []):
            storage.delete(rel)
        report.shards_removed += 1
    shards = state.shards
    index = {"format": INDEX_FORMAT, "view": state.view, "code_version": state.code_version,
             "shards": {s: [{"path": p.path, "rows": p.rows, "bytes": p.bytes,
                             "sha256": p.sha256} for p in state.parts[s]] for s in shards}}
    if index != old:  # a no-change run leaves the index (and its timestamp) alone
        storage.write_bytes(index_path, json.dumps(index, indent=1).encode())
    for s in shards:
        for p in state.parts[s]:
            report.parts += 1
            report.rows += p.rows
            report.bytes += p.bytes
            report.rejects.extend(p.rejects)
    report.shards_total = len(shards)
    report.shards_reused = len(shards) - counts.shards_computed
    report.rejected = len(report.rejects)
    report.data_version = index_version(index)
    if started is not None:
        report.seconds = time.perf_counter() - started
    return report


def ingest_view(
    source: RawSource,
    storage: Storage,
    manifest: pl.DataFrame,
    view: str,
    *,
    code_version: str,
    prefix: str = "tensors",
    workers: int = 1,
    max_parts: int = MAX_PARTS,
    min_parallel: int = 512,
    shard_digits: int = 2,
    on_shard: Callable[[str, bool], None] | None = None,
) -> IngestReport:
    """Bring ``{prefix}/{view}/`` up to date with the manifest's ``ok`` files, in one call:
    `survey_view`, `update_shards` of the stale shards, `finish_view`.

    Shards are independent units of work (the Dagster asset runs groups of them as separate
    steps). Within a shard only files that no valid part covers are decoded (see
    `_build_shard`), so new files cost in proportion to their number plus one small write
    per touched shard. ``_index.json`` lists the parts of every shard and is written last.
    Files not ``ok`` in the manifest are reported as rejections of stage ``manifest``.

    ``shard_digits``: 2 gives Nightingale's 256 folders (about 440 ECGs each in the full
    dataset), 1 groups them into 16 (for a small cohort, where 256 shards would hold a
    handful of ECGs each). Changing it rebuilds the view.
    """
    t0 = time.perf_counter()
    state = survey_view(storage, manifest, view, code_version=code_version, prefix=prefix,
                        shard_digits=shard_digits)
    counts = update_shards(state, source, storage, state.shards, workers=workers,
                           min_parallel=min_parallel, max_parts=max_parts, on_shard=on_shard)
    return finish_view(state, storage, counts, workers=workers, started=t0)


def index_version(index: dict) -> str:
    """Content version of a view: a hash of every part's SHA-256, in shard order."""
    h = hashlib.sha256()
    for s in sorted(index["shards"]):
        for p in index["shards"][s]:
            h.update(f"{s}:{p['sha256']}\n".encode())
    return h.hexdigest()[:16]


def rejects_frame(rejects: Sequence[dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rejects), schema=REJECT_SCHEMA)


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


def _part_paths(storage: Storage, view: str, prefix: str) -> tuple[Any, list[str]]:
    fs, base = storage.pyarrow_fs()
    return fs, [f"{base.rstrip('/')}/{p}" if base else p
                for p in shard_paths(storage, view, prefix)]


def iter_view(storage: Storage, view: str, prefix: str = "tensors") -> Iterator[tensors.TensorSet]:
    """Each part of a view, in index order, one at a time: memory stays at one part's size
    (a check over the full 12-lead view would otherwise hold 13.5 GB)."""
    fs, paths = _part_paths(storage, view, prefix)
    for path in paths:
        yield tensors.read(path, filesystem=fs)


def view_rows(storage: Storage, view: str, prefix: str = "tensors") -> int:
    """A view's row count from its parts' Parquet footers (no samples are read)."""
    fs, paths = _part_paths(storage, view, prefix)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(lambda p: pq.read_metadata(p, filesystem=fs).num_rows, paths))


def load_view(storage: Storage, view: str, prefix: str = "tensors") -> tensors.TensorSet:
    """Read every part of a view into one (N, C, 5000) float16 tensor set, sorted by ecg_id.

    The rows are copied once, straight into their sorted place, whatever the part layout
    (a view grown incrementally reads back exactly like one ingested in one go).
    """
    fs, paths = _part_paths(storage, view, prefix)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda p: tensors.read(p, filesystem=fs), paths))
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
