"""One shard of a view: its parts, the plan that brings it up to date, and running shards.

A shard holds one or more Parquet parts; each part records the raw files it was made from (key
and content hash), and its name carries a fingerprint of those, the view and the processing
code version. An update keeps valid parts, carries the surviving rows of parts that lost a
member, and decodes only the files no part covers. Shards are independent and can run in
separate processes. Only a file's own fault (bad content, or gone since the listing) makes it a
rejection; a read that fails otherwise (the store throttling, failing or denying access after
the client's retries) raises, and the shard records nothing for that file: the next run reads
it again.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, fields

import numpy as np

from acs_pipeline.ingest.stats import tensor_stats
from acs_pipeline.ingest.transform import VIEWS, Row, collect_rows, transform_rows
from acs_pipeline.io import tensors
from acs_pipeline.io.storage import Storage

MAX_PARTS = 8  # parts a shard may hold before an update compacts it into one
_WRITERS = 4  # shards whose writes may be in flight at once (in-process ingest)


def shard_fingerprint(view: str, code_version: str, members: Iterable[tuple[str, str]]) -> str:
    """Hash of the view, the code version and the sorted (key, content hash) pairs of a shard."""
    h = hashlib.sha256(f"{view}\n{code_version}\n".encode())
    for key, sha in sorted(members):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


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
    stats: dict | None = None  # the rows' TensorStats, measured when the part was written

    def as_json(self) -> dict:
        """The part as a JSON-ready dict (shallow: ``asdict`` would deep-copy the members)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ShardTask:
    """Everything one shard's update needs; picklable, so it can run in another process."""

    source: Storage  # the raw dataset root
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


def _shard_dir(base: str, shard: str) -> str:
    return f"{base}/shard={shard}"


def _shard_file(base: str, shard: str) -> str:
    return f"{_shard_dir(base, shard)}/_shard.json"


def _valid(part: Part, wanted: dict[str, str]) -> bool:
    return all(wanted.get(k) == s for k, s in part.members.items())


Plan = tuple[list[Part], list[Part], list[str]]


def plan_shard(parts: list[Part], wanted: dict[str, str], max_parts: int = MAX_PARTS) -> Plan:
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
    """Bring one shard up to date (`build_shard`, then its writes)."""
    outcome, commit = build_shard(task)
    commit()
    return outcome


def build_shard(task: ShardTask, rows: Iterator[Row] | None = None, plan: Plan | None = None
                ) -> tuple[ShardOutcome, Callable[[], None]]:
    """Bring one shard up to date: keep valid parts, add one part for what they do not cover.

    Parts whose members all still match the manifest are kept as they are. Rows of a part that
    lost a member (file changed or removed) are carried into the new part without recomputing;
    only files no part covers are decoded and transformed (their ``rows``, from
    `transform_rows`, when the caller streams them across shards). With more than
    ``max_parts`` parts the shard is compacted into one. Returns the outcome and the shard's
    writes, to run in order: the new part, then ``_shard.json``, then deleting replaced parts,
    so a crash leaves the previous state readable. The new part's size and hash are known once
    the writes ran.
    """
    t0 = time.perf_counter()
    st = task.storage
    keep, rewrite, todo = plan or plan_shard(task.parts, task.wanted, task.max_parts)
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
            tset = tensors.load(st, p.path)
            sel = np.array([e in wanted_ids for e in tset.ecg_ids.tolist()], dtype=bool)
            carried_ids += tset.ecg_ids[sel].tolist()
            carried_x.append(tset.x[sel])
    if rows is None:
        rows = transform_rows(task.view, [(k, task.ids[k]) for k in todo],
                            task.source.read_files(todo), task.batch)
    ids, x, rejects = collect_rows(task.view, itertools.islice(rows, len(todo)))
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
            # the stored values' stats, which the view's check combines (no read-back)
            part.stats = tensor_stats(np.asarray(xs, dtype=tensors.STORAGE_DTYPE)).as_json()
            st.write_bytes(part.path, data)  # atomic
        st.write_bytes(_shard_file(task.base, task.shard), json.dumps({
            "view": task.view, "code_version": task.code_version, "shard": task.shard,
            "parts": [p.as_json() for p in new_parts]}).encode())
        for rel in task.files:
            if rel.endswith(".parquet") and rel not in live:
                st.delete(rel)  # replaced, stale (older code version) or left by a crash

    return ShardOutcome(task.shard, new_parts, len(todo), len(members) - len(todo),
                        time.perf_counter() - t0), commit


def read_shard_state(storage: Storage, base: str, shard: str, view: str,
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


def run_tasks(tasks: list[ShardTask], workers: int,
              min_parallel: int) -> Iterator[ShardOutcome]:
    """Run shard tasks, yielding each outcome once its writes are done: in this process (one
    read-and-transform stream across shards) or, with ``workers`` > 1 and at least
    ``min_parallel`` files to decode, in separate processes."""
    plans = [plan_shard(t.parts, t.wanted, t.max_parts) for t in tasks]
    todo = [plan[2] for plan in plans]
    if workers <= 1 or len(tasks) <= 1 or sum(map(len, todo)) < min_parallel:
        # One read and transform stream over every shard: reads run ahead and batches span
        # shard boundaries; each shard's writes (fsync-bound) run in a writer thread while
        # the next shard computes.
        keys = [(k, t.ids[k]) for t, ks in zip(tasks, todo, strict=True) for k in ks]
        stream = (transform_rows(tasks[0].view, keys,
                               tasks[0].source.read_files([k for k, _ in keys]), tasks[0].batch)
                  if tasks else iter(()))
        pending: deque[tuple[ShardOutcome, Future[None]]] = deque()
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="ingest-write") as pool:
            try:
                for task, plan in zip(tasks, plans, strict=True):
                    outcome, commit = build_shard(task, stream, plan)
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
