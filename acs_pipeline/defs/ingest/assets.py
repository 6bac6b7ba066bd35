"""Raw data -> manifest, clinical tables, cohort, tensors and quarantine (thin Dagster wiring)."""

import hashlib
import time
import warnings
from dataclasses import asdict

import dagster as dg
import polars as pl

from acs_pipeline.cohort import build as cohort_lib
from acs_pipeline.cohort import tables
from acs_pipeline.defs.resources import PipelineSettings, RawDataResource, StorageResource
from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.ingest.read import iter_view, view_rows
from acs_pipeline.ingest.stats import combine_stats, tensor_stats
from acs_pipeline.ingest.transform import REJECT_SCHEMA, VIEWS, rejects_frame
from acs_pipeline.ingest.views import (
    IngestReport,
    UpdateCounts,
    finish_view,
    survey_view,
    update_shards,
)
from acs_pipeline.io import frames
from acs_pipeline.io.rawsource import RawSource
from acs_pipeline.io.storage import Storage

MANIFEST = "tables/manifest.parquet"
HOLDOUT_MANIFEST = "tables/holdout_manifest.parquet"
CLINICAL = "tables/clinical/{name}.parquet"
COHORT = "tables/cohort.parquet"
COHORT_REJECTS = "tables/cohort_rejects.parquet"
QUARANTINE = "tables/quarantine.parquet"
HOLDOUT_PREFIX = "tensors/holdout"
INGEST_CODE_VERSION = "ingest-2"

RETRY_IO = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# Declarative automation (evaluated only while the `acs_automation` sensor is on): derived data
# refreshes as soon as its inputs change; training only when an input's content (data version)
# or the asset's code version changed.
EAGER = dg.AutomationCondition.eager()
WHEN_CHANGED = (
    (
        dg.AutomationCondition.missing()
        | dg.AutomationCondition.code_version_changed()
        | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("inputs or code changed")


def _meta(written: frames.Written, **extra) -> dict:
    return {
        "uri": dg.MetadataValue.path(written.uri),
        "dagster/row_count": written.rows,
        "bytes": written.bytes,
        "sha256": written.sha256,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(k, v) for k, v in written.columns.items()]
        ),
        **extra,
    }


def _md(df: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frames.to_markdown(df))


def _manifest_asset(context, source: RawSource, storage: Storage, rel: str) -> dg.MaterializeResult:
    source.check()
    previous = frames.read_parquet(storage, rel) if storage.exists(rel) else None
    manifest, counts = build_manifest(source, previous)
    written = frames.write_parquet(storage, rel, manifest)
    version = hashlib.sha256(
        "".join(f"{k}{h}{s}" for k, h, s in manifest.select("key", "sha256", "status")
                .iter_rows()).encode()
    ).hexdigest()[:16]
    context.log.info(f"listed {counts['listed']} files, hashed {counts['hashed']}, "
                     f"reused {counts['reused']} hashes, rejected {counts['rejected']}")
    return dg.MaterializeResult(
        metadata=_meta(written, source=source.root, **{f"files_{k}": v for k, v in
                                                       counts.items()},
                       total_bytes=int(manifest["size"].sum())),
        data_version=dg.DataVersion(version),
    )


@dg.asset(group_name="raw", kinds={"parquet"}, code_version="1", retry_policy=RETRY_IO,
          description="Every raw npz waveform file with its size, ETag and SHA-256.")
def ecg_manifest(context: dg.AssetExecutionContext, raw: RawDataResource,
                 storage: StorageResource) -> dg.MaterializeResult:
    return _manifest_asset(context, raw.source(), storage.get(), MANIFEST)


@dg.asset(group_name="raw", kinds={"parquet"}, code_version="1", retry_policy=RETRY_IO,
          description="The unlabelled holdout waveform files with size, ETag and SHA-256.")
def holdout_manifest(context: dg.AssetExecutionContext, raw: RawDataResource,
                     storage: StorageResource) -> dg.MaterializeResult:
    source = raw.holdout()
    if source is None:
        raise dg.Failure("no holdout root configured (ACS_HOLDOUT_URI)")
    return _manifest_asset(context, source, storage.get(), HOLDOUT_MANIFEST)


@dg.asset(group_name="raw", kinds={"polars", "parquet"}, code_version="1",
          retry_policy=RETRY_IO,
          description="patient, ecg-metadata, ecg-ed-enc and ed-encounter, typed, as Parquet.")
def clinical_tables(context: dg.AssetExecutionContext, raw: RawDataResource,
                    storage: StorageResource) -> dg.MaterializeResult:
    source, st = raw.source(), storage.get()
    source.check()
    parsed = tables.read_tables(source.read)
    meta: dict = {}
    digest = hashlib.sha256()
    for name, df in parsed.items():
        w = frames.write_parquet(st, CLINICAL.format(name=name), df)
        meta[f"{name}_rows"] = w.rows
        meta[f"{name}_uri"] = dg.MetadataValue.path(w.uri)
        digest.update(w.sha256.encode())
    problems = tables.key_problems(parsed)
    meta["duplicate_keys"] = dg.MetadataValue.json(problems)
    meta["dagster/row_count"] = sum(len(df) for df in parsed.values())
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(
        digest.hexdigest()[:16]))


def read_clinical(storage: Storage) -> dict[str, pl.DataFrame]:
    return {name: frames.read_parquet(storage, CLINICAL.format(name=name))
            for name in tables.TABLES}


@dg.asset_check(asset=clinical_tables, blocking=True,
                description="Great Expectations suites: columns, id patterns, unique keys, "
                            "label values, age range, ACS implies cath, join coverage.")
def clinical_tables_expectations(storage: StorageResource) -> dg.AssetCheckResult:
    from acs_pipeline.cohort.expectations import validate_tables

    report = validate_tables(read_clinical(storage.get()))
    return dg.AssetCheckResult(
        passed=report.success, description=report.markdown()[:2000],
        metadata={"summary": dg.MetadataValue.md(report.markdown()),
                  "result": dg.MetadataValue.json(report.as_metadata())})


@dg.asset(group_name="cohort", kinds={"polars", "parquet"}, code_version="1",
          deps=[clinical_tables, ecg_manifest], automation_condition=EAGER,
          description="One row per ECG: labels, tested/untested, duplicates, patient-level "
                      "70/30 split per cohort.")
def cohort(context: dg.AssetExecutionContext, storage: StorageResource,
           settings: PipelineSettings) -> dg.MaterializeResult:
    st = storage.get()
    manifest = frames.read_parquet(st, MANIFEST).filter(pl.col("status") == "ok")
    hashes = dict(manifest.select("ecg_id", "sha256").iter_rows())
    df, rejected = cohort_lib.build_cohort(read_clinical(st), hashes, seed=settings.seed)
    no_file = df.filter(~pl.col("ecg_id").is_in(list(hashes)))
    if len(no_file):
        rejected = pl.concat([rejected, no_file.select("ecg_id").with_columns(
            reason=pl.lit("no_waveform_file"), detail=pl.lit("no npz file in the manifest"))])
    w = frames.write_parquet(st, COHORT, df)
    frames.write_parquet(st, COHORT_REJECTS, rejected)
    summary = cohort_lib.summary(df)
    return dg.MaterializeResult(
        metadata=_meta(w, summary=_md(summary), rejected=len(rejected),
                       duplicate_copies=int(df["duplicate_of"].is_not_null().sum()),
                       tested_ecgs=int((df["cohort"] == "tested").sum())),
        data_version=dg.DataVersion(w.version),
    )


@dg.asset_check(asset=cohort, blocking=True, description="No patient and no waveform copy "
                "in two splits of one cohort.")
def cohort_split_leaks(storage: StorageResource) -> dg.AssetCheckResult:
    df = frames.read_parquet(storage.get(), COHORT)
    leaks = cohort_lib.split_leaks(df)
    return dg.AssetCheckResult(passed=not any(leaks.values()), metadata=leaks)


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
    a per-step executor such as ECS's) -> write the index and report."""

    def inputs(raw: RawDataResource, storage: StorageResource):
        source = raw.holdout() if holdout else raw.source()
        if source is None:
            raise dg.Failure("no holdout root configured (ACS_HOLDOUT_URI)")
        st = storage.get()
        return source, st, frames.read_parquet(st, manifest_rel)

    def survey(st: Storage, manifest: pl.DataFrame, raw: RawDataResource, **kwargs):
        return survey_view(st, manifest, view, code_version=INGEST_CODE_VERSION,
                           prefix=prefix, shard_digits=raw.shard_digits, **kwargs)

    @dg.op(name=f"{name}_plan", ins={"manifest": dg.In(dg.Nothing)},
           out=dg.DynamicOut(list, io_manager_key="step_values"), retry_policy=RETRY_IO)
    def plan(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource):
        _, st, manifest = inputs(raw, storage)
        state = survey(st, manifest, raw)
        groups = state.chunks(raw.workers(), raw.ingest_step_files)
        context.log.info(f"{view}: {sum(map(len, groups))} of {len(state.shards)} shards to "
                         f"update, in {len(groups)} step(s)")
        for group in groups:
            yield dg.DynamicOutput(group, mapping_key=f"shards_{group[0]}_{group[-1]}")

    @dg.op(name=f"{name}_update", out=dg.Out(dict, io_manager_key="step_values"),
           retry_policy=RETRY_IO)
    def update(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource,
               shards: list) -> dict:
        t0 = time.perf_counter()
        source, st, manifest = inputs(raw, storage)
        state = survey(st, manifest, raw, shards=shards)
        counts = update_shards(state, source, st, shards)
        seconds = time.perf_counter() - t0
        context.log.info(f"{view}: shards {shards[0]}..{shards[-1]}: {counts.shards_computed} "
                         f"updated, {counts.ecgs_computed} ECGs computed in {seconds:.1f} s")
        return {**asdict(counts), "seconds": seconds}

    @dg.op(name=f"{name}_index", out=dg.Out(dg.Nothing), retry_policy=RETRY_IO)
    def index(context: dg.OpExecutionContext, raw: RawDataResource, storage: StorageResource,
              steps: list):
        _, st, manifest = inputs(raw, storage)
        counts = UpdateCounts()
        for step in steps:
            counts = counts.add(UpdateCounts(step["shards_computed"],
                                             step["ecgs_computed"],
                                             step["rows_carried"]))
        report = finish_view(survey(st, manifest, raw), st, counts, workers=len(steps))
        rej = frames.write_parquet(st, f"{prefix}/{view}/_rejects.parquet",
                                   rejects_frame(report.rejects))
        context.log.info(f"{view}: {report.shards_computed} shards updated "
                         f"({report.ecgs_computed} ECGs computed, {report.rows_carried} "
                         f"carried), {report.shards_reused} reused, {report.rows} ECGs, "
                         f"{report.rejected} rejected")
        with warnings.catch_warnings():  # Output(data_version=...) is marked beta
            warnings.simplefilter("ignore", dg.BetaWarning)
            out = dg.Output(None, metadata=_tensor_metadata(st, report, len(manifest), view,
                                                            prefix, rej.uri, steps),
                            data_version=dg.DataVersion(report.data_version))
        yield out

    return plan, update, index


def _tensor_check(storage: Storage, view: str, prefix: str) -> dg.AssetCheckResult:
    stats = combine_stats(tensor_stats(part.x) for part in iter_view(storage, view, prefix))
    return dg.AssetCheckResult(
        passed=stats.ok and stats.channels == VIEWS[view] and stats.length == 5000,
        description=stats.describe(),
        metadata={"rows": stats.rows, "non_finite": stats.non_finite,
                  "flat_channels": stats.flat_channels, "out_of_range": stats.out_of_range,
                  "max_abs_mv": stats.max_abs},
    )


def _accounting_check(storage: Storage, manifest_rel: str, view: str,
                      prefix: str) -> dg.AssetCheckResult:
    listed = frames.read_parquet(storage, manifest_rel).height
    rows = view_rows(storage, view, prefix)
    rejected = frames.read_parquet(storage, f"{prefix}/{view}/_rejects.parquet").height
    return dg.AssetCheckResult(
        passed=rows + rejected == listed,
        description=f"{rows} accepted + {rejected} quarantined vs {listed} listed",
        metadata={"listed": listed, "accepted": rows, "quarantined": rejected},
    )


def _view_assets(view: str, *, holdout: bool):
    name = f"holdout_{view}" if holdout else view
    manifest_asset = holdout_manifest if holdout else ecg_manifest
    manifest_rel = HOLDOUT_MANIFEST if holdout else MANIFEST
    prefix = HOLDOUT_PREFIX if holdout else "tensors"
    what = "the holdout waveforms" if holdout else "the dataset's waveforms"
    shape = "3 rows (3by4 page, band-passed)" if view == "ecg_3by4" else \
        "12 leads reconstructed over 10 s"

    plan, update, index = _view_graph(name, view, manifest_rel, prefix, holdout)

    @dg.graph_asset(name=name, group_name="tensors", kinds={"numpy", "parquet"},
                    code_version=INGEST_CODE_VERSION, automation_condition=EAGER,
                    ins={"manifest": dg.AssetIn(manifest_asset.key, dagster_type=dg.Nothing)},
                    description=f"Parquet tensor shards of {what}: {shape}, float16. Stale "
                    "shards are updated in parallel steps (ACS_INGEST_WORKERS groups).")
    def _asset(manifest):
        return index(plan(manifest).map(update).collect())

    @dg.asset_check(asset=name, name="tensor_values", blocking=True,
                    description="Shape, finite values, amplitude range, flat channels.")
    def _values(storage: StorageResource) -> dg.AssetCheckResult:
        return _tensor_check(storage.get(), view, prefix)

    @dg.asset_check(asset=name, name="every_file_accounted_for", blocking=True,
                    description="Accepted + quarantined = listed.")
    def _accounted(storage: StorageResource) -> dg.AssetCheckResult:
        return _accounting_check(storage.get(), manifest_rel, view, prefix)

    return _asset, _values, _accounted


ecg_3by4, ecg_3by4_values, ecg_3by4_accounted = _view_assets("ecg_3by4", holdout=False)
ecg_12lead, ecg_12lead_values, ecg_12lead_accounted = _view_assets("ecg_12lead", holdout=False)
holdout_ecg_3by4, holdout_3by4_values, holdout_3by4_accounted = _view_assets(
    "ecg_3by4", holdout=True)
holdout_ecg_12lead, holdout_12lead_values, holdout_12lead_accounted = _view_assets(
    "ecg_12lead", holdout=True)


@dg.asset(group_name="cohort", kinds={"polars", "parquet"}, code_version="1",
          deps=[cohort, ecg_3by4, ecg_12lead, holdout_ecg_3by4, holdout_ecg_12lead],
          automation_condition=EAGER,
          description="One row per rejected record with its source key, stage and reason.")
def quarantine(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    st = storage.get()
    parts = [frames.read_parquet(st, COHORT_REJECTS).with_columns(
        key=pl.lit(None, pl.String), stage=pl.lit("cohort"))]
    for prefix, dataset in (("tensors", "v1"), (HOLDOUT_PREFIX, "holdout")):
        for view in VIEWS:
            rel = f"{prefix}/{view}/_rejects.parquet"
            if st.exists(rel):
                parts.append(frames.read_parquet(st, rel).with_columns(
                    stage=pl.lit(f"{dataset}:") + pl.col("stage")))
    df = pl.concat([p.select(list(REJECT_SCHEMA)) for p in parts]).sort("stage", "ecg_id")
    w = frames.write_parquet(st, QUARANTINE, df)
    by_reason = df.group_by("stage", "reason").len().sort("stage", "reason")
    return dg.MaterializeResult(
        metadata=_meta(w, by_reason=_md(by_reason) if len(df) else "nothing quarantined"),
        data_version=dg.DataVersion(w.version),
    )
