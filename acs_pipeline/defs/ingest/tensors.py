"""The graph-backed tensor assets (plan -> parallel shard updates -> index) and their checks."""

import hashlib
import io
import time
import warnings
from dataclasses import asdict

import dagster as dg
import polars as pl

from acs_pipeline.defs.common import (
    EAGER,
    HOLDOUT_MANIFEST,
    HOLDOUT_PREFIX,
    MANIFEST,
    RETRY_IO,
    transient_only,
)
from acs_pipeline.defs.resources import RawDataResource, StorageResource
from acs_pipeline.ingest.read import view_rows
from acs_pipeline.ingest.stats import remembered, systemic_rejections, view_stats
from acs_pipeline.ingest.transform import VIEWS, rejects_frame
from acs_pipeline.ingest.views import (
    IngestReport,
    UpdateCounts,
    current_view,
    finish_view,
    survey_view,
    update_shards,
    view_is_current,
)
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage

INGEST_CODE_VERSION = "ingest-2"


def _tensor_metadata(storage: Storage, report: IngestReport, listed: int, view: str,
                     prefix: str, rejects_uri: str, steps: list[dict]) -> dict:
    busy = sum(step["seconds"] for step in steps)
    meta = report.metadata()
    return {
        "uri": dg.MetadataValue.path(storage.uri(f"{prefix}/{view}")),
        "index": dg.MetadataValue.path(report.index_path),
        "rejects_uri": dg.MetadataValue.path(rejects_uri),
        "dagster/row_count": report.rows,
        "listed": listed,
        "bytes_per_ecg": round(report.bytes / max(report.rows, 1)),
        "update_steps": len(steps),
        "update_step_seconds": round(busy, 2),
        "ecgs_per_step_second": round(report.ecgs_computed / busy, 1) if busy else 0.0,
        "shape": f"(N, {VIEWS[view]}, 5000) float16",
        **{k: v for k, v in meta.items() if k not in ("index_path", "view", "seconds",
                                                      "workers")},
    }


def _view_graph(name: str, view: str, manifest_rel: str, prefix: str, holdout: bool):
    """The ops of a tensor view: plan (which shards are stale, in groups) -> one update step
    per group (separate processes under the multiprocess executor, separate containers under
    a per-step executor such as ECS's) -> write the index and report, and run the view's checks."""

    def inputs(raw: RawDataResource, storage: StorageResource):
        source = raw.holdout() if holdout else raw.source()
        if source is None:
            raise dg.Failure("no holdout root configured (ACS_HOLDOUT_URI)",
                             allow_retries=False)
        st = storage.get()
        data = st.read_bytes(manifest_rel)  # once: the index step also hashes it
        return source, st, pl.read_parquet(io.BytesIO(data)), hashlib.sha256(data).digest()

    def survey(st: Storage, manifest: pl.DataFrame, raw: RawDataResource, **kwargs):
        return survey_view(st, manifest, view, code_version=INGEST_CODE_VERSION,
                           prefix=prefix, shard_digits=raw.shard_digits, **kwargs)

    @dg.op(name=f"{name}_plan", ins={"manifest": dg.In(dg.Nothing)},
           out=dg.DynamicOut(list, io_manager_key="step_values"), retry_policy=RETRY_IO)
    @transient_only
    def plan(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource):
        _, st, manifest, _ = inputs(raw, storage)
        if view_is_current(st, manifest, view, code_version=INGEST_CODE_VERSION, prefix=prefix,
                           shard_digits=raw.shard_digits):
            context.log.info(f"{view}: no shard to update (the index was written from these "
                             "manifest files and shard files)")
            return
        state = survey(st, manifest, raw)
        groups = state.chunks(raw.workers(), raw.ingest_step_files)
        context.log.info(f"{view}: {sum(map(len, groups))} of {len(state.shards)} shards to "
                         f"update, in {len(groups)} step(s)")
        for group in groups:
            yield dg.DynamicOutput(group, mapping_key=f"shards_{group[0]}_{group[-1]}")

    @dg.op(name=f"{name}_update", out=dg.Out(dict, io_manager_key="step_values"),
           retry_policy=RETRY_IO)
    @transient_only
    def update(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource,
               shards: list) -> dict:
        t0 = time.perf_counter()
        source, st, manifest, _ = inputs(raw, storage)
        state = survey(st, manifest, raw, shards=shards)
        counts = update_shards(state, source, st, shards)
        seconds = time.perf_counter() - t0
        context.log.info(f"{view}: shards {shards[0]}..{shards[-1]}: {counts.shards_computed} "
                         f"updated, {counts.ecgs_computed} ECGs computed in {seconds:.1f} s")
        return {**asdict(counts), "seconds": seconds}

    @dg.op(name=f"{name}_index", retry_policy=RETRY_IO,
           out={"result": dg.Out(dg.Nothing), "tensor_values": dg.Out(dg.Nothing),
                "every_file_accounted_for": dg.Out(dg.Nothing)})
    @transient_only
    def index(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource,
              steps: list):
        _, st, manifest, manifest_sha256 = inputs(raw, storage)
        counts = UpdateCounts()
        for step in steps:
            counts = counts.add(UpdateCounts(step["shards_computed"],
                                             step["ecgs_computed"],
                                             step["rows_carried"]))
        report = None
        if not steps:  # nothing updated: the index alone may show the view is as it was
            report = current_view(st, manifest, view, code_version=INGEST_CODE_VERSION,
                                  prefix=prefix, shard_digits=raw.shard_digits, workers=0)
        if report is None:
            report = finish_view(survey(st, manifest, raw), st, counts, workers=len(steps))
        rej = frames.write_parquet(st, f"{prefix}/{view}/_rejects.parquet",
                                   rejects_frame(report.rejects))
        context.log.info(f"{view}: {report.shards_computed} shards updated "
                         f"({report.ecgs_computed} ECGs computed, {report.rows_carried} "
                         f"carried), {report.shards_reused} reused, {report.rows} ECGs, "
                         f"{report.rejected} rejected")
        with warnings.catch_warnings():  # Output(data_version=...) is marked beta
            warnings.simplefilter("ignore", dg.BetaWarning)
            yield dg.Output(None, metadata=_tensor_metadata(st, report, len(manifest), view,
                                                            prefix, rej.uri, steps),
                            data_version=dg.DataVersion(report.data_version))
        # the view's checks, in this step (what they read is what was just written)
        version = _checked_version(report.data_version, rej.sha256, manifest_sha256)
        yield _tensor_check(st, view, prefix, manifest_rel, version)
        yield _accounting_check(st, manifest_rel, view, prefix, version)

    return plan, update, index


TENSOR_CHECK_VERSION = "1"  # bump when what the view's checks check changes: results recomputed


def _checked_version(view_version: str, rejects_sha256: str, manifest_sha256: bytes) -> str:
    """What the view's checks' results depend on: the view's content (its index's version), its
    rejections (the SHA-256 of the file just written), the manifest (its SHA-256: for systemic
    rejections and the count listed) and the checks."""
    h = hashlib.sha256(f"{TENSOR_CHECK_VERSION}\n{view_version}\n".encode())
    h.update(bytes.fromhex(rejects_sha256))
    h.update(manifest_sha256)
    return h.hexdigest()[:16]


def _tensor_values(storage: Storage, view: str, prefix: str, manifest_rel: str) -> dict:
    stats, parts_read = view_stats(storage, view, prefix)
    rejects = frames.read_parquet(storage, f"{prefix}/{view}/_rejects.parquet")
    systemic = systemic_rejections(rejects, frames.read_parquet(storage, manifest_rel))
    description = stats.describe()
    if len(systemic):
        description += "; systemic rejections: " + ", ".join(
            f"shard {s}: {n} of {m} {r}" for s, r, n, m in systemic.head(8).iter_rows())
    return {
        "passed": stats.ok and stats.channels == VIEWS[view] and stats.length == 5000
        and not len(systemic),
        "description": description,
        "metadata": {"rows": stats.rows, "non_finite": stats.non_finite,
                     "flat_channels": stats.flat_channels, "out_of_range": stats.out_of_range,
                     "max_abs_mv": stats.max_abs, "rejected": len(rejects),
                     "rejected_by_reason": dict(
                         rejects.group_by("reason").len().sort("reason").iter_rows()),
                     "systemic": systemic.to_dicts(), "parts_read": parts_read},
    }


def _tensor_check(storage: Storage, view: str, prefix: str, manifest_rel: str,
                  version: str) -> dg.AssetCheckResult:
    """Fails for a fault of the view, not of single files (those are quarantined at ingest):
    wrong shape, no rows, a stored sample non-finite or out of range, or a systemic rejection
    (one reason for more than 1 % of a shard's files, see ``stats.systemic_rejections``).

    Costs O(parts): the statistics recorded per part at ingest are combined (``view_stats``);
    for a version of the view it has checked before, the recorded result is reused
    (``reused: true`` in the metadata)."""
    result, reused = remembered(storage, f"checks/{prefix}/{view}/tensor_values.json", version,
                                lambda: _tensor_values(storage, view, prefix, manifest_rel))
    meta = {k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
            for k, v in result["metadata"].items()}
    return dg.AssetCheckResult(check_name="tensor_values", passed=result["passed"],
                               description=result["description"],
                               metadata={**meta, "reused": reused, "checked_version": version})


def _accounting(storage: Storage, manifest_rel: str, view: str, prefix: str) -> dict:
    listed = frames.read_parquet(storage, manifest_rel).height
    rows = view_rows(storage, view, prefix)  # from the stored parts' footers
    rejected = frames.read_parquet(storage, f"{prefix}/{view}/_rejects.parquet").height
    return {"passed": rows + rejected == listed,
            "description": f"{rows} accepted + {rejected} quarantined vs {listed} listed",
            "metadata": {"listed": listed, "accepted": rows, "quarantined": rejected}}


def _accounting_check(storage: Storage, manifest_rel: str, view: str, prefix: str,
                      version: str) -> dg.AssetCheckResult:
    """Accepted (the rows in the stored parts) + quarantined = listed; reused like
    ``tensor_values`` for a version checked before."""
    result, reused = remembered(storage, f"checks/{prefix}/{view}/accounting.json", version,
                                lambda: _accounting(storage, manifest_rel, view, prefix))
    return dg.AssetCheckResult(check_name="every_file_accounted_for", passed=result["passed"],
                               description=result["description"],
                               metadata={**result["metadata"], "reused": reused})


def _view_assets(view: str, *, holdout: bool) -> dg.AssetsDefinition:
    name = f"holdout_{view}" if holdout else view
    manifest_asset = "holdout_manifest" if holdout else "ecg_manifest"
    manifest_rel = HOLDOUT_MANIFEST if holdout else MANIFEST
    prefix = HOLDOUT_PREFIX if holdout else "tensors"
    what = "the holdout waveforms" if holdout else "the dataset's waveforms"
    shape = "3 rows (3by4 page, band-passed)" if view == "ecg_3by4" else \
        "12 leads reconstructed over 10 s"

    plan, update, index = _view_graph(name, view, manifest_rel, prefix, holdout)
    # Run by the index step, on what it has just written (a step of their own each cost
    # about 0.1 s of a 2.3 s run with nothing changed, see benchmarks/pipeline.py).
    values = dg.AssetCheckSpec(
        "tensor_values", asset=name, blocking=True,
        description="Shape, finite values, amplitude range, flat channels; no reason rejecting "
        "more than 1 % of a shard's files (a single bad file is quarantined at ingest, not a "
        "failure of the view).")
    accounted = dg.AssetCheckSpec("every_file_accounted_for", asset=name, blocking=True,
                                  description="Accepted + quarantined = listed.")

    @dg.graph_asset(name=name, group_name="tensors", kinds={"numpy", "parquet"},
                    code_version=INGEST_CODE_VERSION, automation_condition=EAGER,
                    ins={"manifest": dg.AssetIn(manifest_asset, dagster_type=dg.Nothing)},
                    check_specs=[values, accounted],
                    description=f"Parquet tensor shards of {what}: {shape}, float16. Stale "
                    "shards are updated in parallel steps (ACS_INGEST_WORKERS groups).")
    def _asset(manifest):
        result, values_out, accounted_out = index(plan(manifest).map(update).collect())
        return {"result": result, values.get_python_identifier(): values_out,
                accounted.get_python_identifier(): accounted_out}

    return _asset


ecg_3by4 = _view_assets("ecg_3by4", holdout=False)
ecg_12lead = _view_assets("ecg_12lead", holdout=False)
holdout_ecg_3by4 = _view_assets("ecg_3by4", holdout=True)
holdout_ecg_12lead = _view_assets("ecg_12lead", holdout=True)
