"""The clinical tables and their expectations, the cohort and its split check, the quarantine."""

import hashlib

import dagster as dg
import polars as pl

from acs_pipeline.cohort import build as cohort_lib
from acs_pipeline.cohort import tables
from acs_pipeline.defs.common import (
    COHORT,
    EAGER,
    HOLDOUT_PREFIX,
    MANIFEST,
    RETRY_IO,
    md_table,
    table_metadata,
)
from acs_pipeline.defs.resources import PipelineSettings, RawDataResource, StorageResource
from acs_pipeline.ingest.transform import REJECT_SCHEMA, VIEWS
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage

CLINICAL = "tables/clinical/{name}.parquet"
COHORT_REJECTS = "tables/cohort_rejects.parquet"
QUARANTINE = "tables/quarantine.parquet"


@dg.asset(group_name="raw", kinds={"polars", "parquet"}, code_version="1",
          retry_policy=RETRY_IO,
          description="patient, ecg-metadata, ecg-ed-enc and ed-encounter, typed, as Parquet.")
def clinical_tables(context: dg.AssetExecutionContext, raw: RawDataResource,
                    storage: StorageResource) -> dg.MaterializeResult:
    source, st = raw.source(), storage.get()
    source.check()
    parsed = tables.read_tables(source.read_bytes)
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
          deps=[clinical_tables, "ecg_manifest"], automation_condition=EAGER,
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
        metadata=table_metadata(w, summary=md_table(summary), rejected=len(rejected),
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


@dg.asset(group_name="cohort", kinds={"polars", "parquet"}, code_version="1",
          deps=[cohort, "ecg_3by4", "ecg_12lead", "holdout_ecg_3by4", "holdout_ecg_12lead"],
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
        metadata=table_metadata(
            w, by_reason=md_table(by_reason) if len(df) else "nothing quarantined"),
        data_version=dg.DataVersion(w.version),
    )
