"""Sharded, incremental ingest of the raw npz waveforms into a view's Parquet tensor parts.

ECGs are grouped into shards by the two-hex-digit folder Nightingale already uses
(``{prefix}/{view}/shard=3d/``; see :mod:`acs_pipeline.ingest.shards`). A re-run leaves a shard
alone when its parts cover exactly the manifest's files, and otherwise decodes only the files no
part covers, so new files cost in proportion to their number. `survey_view` finds the stale
shards, `update_shards` updates any subset of them (in any process), `finish_view` writes the
index last; `ingest_view` runs the three in one call. Every listed file ends either as a tensor
row or as a rejection with its reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, astuple, dataclass, field

import polars as pl

from acs_pipeline.ingest.manifest import IngestError
from acs_pipeline.ingest.read import INDEX_FORMAT, index_version
from acs_pipeline.ingest.shards import (
    MAX_PARTS,
    Part,
    ShardTask,
    plan_shard,
    read_shard_state,
    run_tasks,
)
from acs_pipeline.ingest.transform import VIEWS
from acs_pipeline.io.objects import StoredObject
from acs_pipeline.io.storage import Storage


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
    # every file under the shard folders with its ETag, as listed; None once an update wrote
    etags: dict[str, str] | None = field(default_factory=dict)

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

    def task(self, source: Storage, storage: Storage, shard: str,
             max_parts: int = MAX_PARTS) -> ShardTask:
        hashes, ids = self.wanted[shard]
        return ShardTask(source, storage, self.view, self.code_version, shard, self.base,
                         hashes, ids, self.parts[shard], self.files.get(shard, []),
                         max_parts=max_parts)

    def todo(self, shard: str) -> int:
        """How many files of a shard an update decodes."""
        return len(plan_shard(self.parts[shard], self.wanted[shard][0])[2])

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
    old = _read_index(storage, base)
    rejects = _manifest_rejects(manifest)
    wanted = _wanted(manifest, shard_digits)
    if shards is not None:
        wanted = {s: wanted[s] for s in shards if s in wanted}
    listing = storage.list_objects(base + "/")
    present = {o.key for o in listing}
    by_shard: dict[str, list[str]] = {}
    for o in listing:
        folder = o.key[len(base) + 1:].partition("/")[0]
        if folder.startswith("shard="):
            by_shard.setdefault(folder.removeprefix("shard="), []).append(o.key)
    names = sorted(wanted)

    def state(shard: str) -> list[Part]:
        return read_shard_state(storage, base, shard, view, code_version, present)

    if storage.is_s3:  # a GET per shard: several in flight, on the storage's reader threads
        parts = dict(zip(names, storage.pool.map(state, names), strict=True))
    else:  # local reads are cheaper than handing them to threads (256 shards: 35 ms, not 66)
        parts = {shard: state(shard) for shard in names}
    return ViewState(view, code_version, base, wanted, parts, by_shard, old, rejects,
                     complete=shards is None, etags=_shard_etags(listing, base))


def _read_index(storage: Storage, base: str) -> dict:
    index_path = f"{base}/_index.json"
    return json.loads(storage.read_bytes(index_path)) if storage.exists(index_path) else {}


def _manifest_rejects(manifest: pl.DataFrame) -> list[dict]:
    return [{"ecg_id": r["ecg_id"], "key": r["key"], "stage": "manifest",
             "reason": r["status"], "detail": r["detail"]}
            for r in manifest.filter(pl.col("status") != "ok").iter_rows(named=True)]


def _wanted(manifest: pl.DataFrame, shard_digits: int) -> dict[str, tuple[dict, dict]]:
    """The manifest's ``ok`` files by shard: shard -> (key -> SHA-256, key -> ECG id)."""
    wanted: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    ok = manifest.filter(pl.col("status") == "ok")
    for shard, key, ecg_id, sha in ok.select("shard", "key", "ecg_id", "sha256").iter_rows():
        hashes, ids = wanted.setdefault(shard[:shard_digits], ({}, {}))
        hashes[key] = sha
        ids[key] = ecg_id
    return wanted


def _shard_etags(listing: Iterable[StoredObject], base: str) -> dict[str, str]:
    return {o.key: o.etag for o in listing if o.key.startswith(f"{base}/shard=")}


def inputs_digest(code_version: str, wanted: dict[str, tuple[dict, dict]],
                  etags: dict[str, str]) -> str:
    """What a view's index was written from: the code version, the manifest's files (keys,
    hashes, ids, shards) and every file under the shard folders with its ETag."""
    h = hashlib.sha256(f"{INDEX_FORMAT}\n{code_version}\n".encode())
    for shard in sorted(wanted):
        hashes, ids = wanted[shard]
        for key in sorted(hashes):
            h.update(f"{shard}\0{key}\0{hashes[key]}\0{ids[key]}\n".encode())
    for key in sorted(etags):
        h.update(f"{key}\0{etags[key]}\n".encode())
    return h.hexdigest()


def view_is_current(storage: Storage, manifest: pl.DataFrame, view: str, *,
                    code_version: str, prefix: str = "tensors", shard_digits: int = 2) -> bool:
    """Whether the view's index was written from exactly these inputs (``inputs_digest``: the
    same manifest files, code version and shard files, ETags included), so that no shard is
    stale: one read and one listing, where `survey_view` reads every shard's record too (on S3
    a GET each). False whenever anything differs, or the index records no digest."""
    base = f"{prefix}/{view}"
    return _written_from(storage, _read_index(storage, base), manifest, base, code_version,
                         shard_digits)


def _written_from(storage: Storage, index: dict, manifest: pl.DataFrame, base: str,
                  code_version: str, shard_digits: int) -> bool:
    recorded = index.get("inputs")
    if not recorded:
        return False
    etags = _shard_etags(storage.list_objects(f"{base}/shard="), base)
    return recorded == inputs_digest(code_version, _wanted(manifest, shard_digits), etags)


def current_view(storage: Storage, manifest: pl.DataFrame, view: str, *, code_version: str,
                 prefix: str = "tensors", shard_digits: int = 2,
                 workers: int = 1) -> IngestReport | None:
    """`finish_view`'s report for a view whose index was written from exactly these inputs
    (`view_is_current`), made from the index and the manifest alone (no shard record read, the
    index left as it is); None when the inputs differ (then survey, update and finish)."""
    base = f"{prefix}/{view}"
    index = _read_index(storage, base)
    if not _written_from(storage, index, manifest, base, code_version, shard_digits):
        return None
    if any("rejects" not in p for parts in index["shards"].values() for p in parts):
        return None  # written before the index listed each part's rejections
    report = IngestReport(view=view, index_path=storage.uri(f"{base}/_index.json"),
                          workers=workers, rejects=_manifest_rejects(manifest))
    return _tally(report, index)


def _tally(report: IngestReport, index: dict) -> IngestReport:
    """``report`` with the totals of the ``index`` it describes (parts, rows, bytes, rejects,
    shards reused, the data version)."""
    for shard in sorted(index["shards"]):
        for part in index["shards"][shard]:
            report.parts += 1
            report.rows += part["rows"]
            report.bytes += part["bytes"]
            report.rejects.extend(part["rejects"])
    report.shards_total = len(index["shards"])
    report.shards_reused = report.shards_total - report.shards_computed
    report.rejected = len(report.rejects)
    report.data_version = index_version(index)
    return report


def update_shards(state: ViewState, source: Storage, storage: Storage,
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
    for out in run_tasks(tasks, workers, min_parallel):
        state.parts[out.shard] = out.parts
        state.etags = None  # the listing no longer shows what is there
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
    deleted = False  # then the survey's listing is out of date
    if old and old.get("format") != INDEX_FORMAT:  # the one-file-per-shard layout of format 1
        for entry in old.get("shards", {}).values():
            storage.delete(entry["path"])
            deleted = True
    old_shards = set(old.get("shards", {})) if old.get("format") == INDEX_FORMAT else set()
    for shard in sorted(old_shards - set(state.wanted)):
        for rel in state.files.get(shard, []):
            storage.delete(rel)
            deleted = True
        report.shards_removed += 1
    shards = state.shards
    index = {"format": INDEX_FORMAT, "view": state.view, "code_version": state.code_version,
             "shards": {s: [{"path": p.path, "rows": p.rows, "bytes": p.bytes,
                             "sha256": p.sha256, "stats": p.stats,  # not in the version
                             "rejects": p.rejects}
                            for p in state.parts[s]] for s in shards}}
    etags = state.etags
    if deleted or etags is None:  # the survey's listing is out of date: list again
        etags = _shard_etags(storage.list_objects(f"{state.base}/shard="), state.base)
    index["inputs"] = inputs_digest(state.code_version, state.wanted, etags)
    if index != old:  # a no-change run leaves the index (and its timestamp) alone
        storage.write_bytes(index_path, json.dumps(index, indent=1).encode())
    _tally(report, index)
    if started is not None:
        report.seconds = time.perf_counter() - started
    return report


def ingest_view(
    source: Storage,
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
    `build_shard`), so new files cost in proportion to their number plus one small write
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
