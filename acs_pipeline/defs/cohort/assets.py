"""The clinical tables and their expectations, the cohort and its split check, the quarantine and
its reasons (each check run in its asset's step).

Row-level problems (a short row, an ECG without an encounter, a duplicated id, ...) become
quarantine rows with a reason and are counted by non-blocking checks; only structural faults (a
table missing or unreadable, a required column absent, a column that cannot be parsed at all, no
ECG that joins) fail a step, at once and without retries.
"""

import hashlib
from dataclasses import asdict

import dagster as dg
import polars as pl

from acs_pipeline.cohort import build as cohort_lib
from acs_pipeline.cohort import tables
from acs_pipeline.defs.common import (
    COHORT,
    EAGER,
    MANIFEST,
    RETRY_IO,
    md_table,
    table_metadata,
    transient_only,
)
from acs_pipeline.defs.resources import PipelineSettings, RawDataResource, StorageResource
from acs_pipeline.ingest.stats import remembered
from acs_pipeline.ingest.transform import REJECT_SCHEMA, VIEWS
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage

CLINICAL = "tables/clinical/{name}.parquet"
TABLE_REJECTS = "tables/clinical/_rejects.parquet"
COHORT_REJECTS = "tables/cohort_rejects.parquet"
QUARANTINE = "tables/quarantine.parquet"


def _structural(exc: Exception) -> dg.Failure:
    """A fault no retry can fix: fail the step now, with the message naming file and column."""
    return dg.Failure(description=str(exc), allow_retries=False)


# The checks below run in the step of the asset they check, on what it has just written (a step
# of their own each cost about 0.03 s of a 2.3 s run with nothing changed, and the split check
# read the cohort back).
EXPECTATIONS = dg.AssetCheckSpec(
    "clinical_tables_expectations", asset="clinical_tables", blocking=False,
    description="Great Expectations suites: columns, id patterns, unique keys, label values, age "
    "range, ACS implies cath, join coverage. Not blocking: `cohort` quarantines the rows these "
    "find (a WARN); a structural fault already failed `clinical_tables`. Tables validated "
    "before (same content) reuse that result (reused: true).")
SPLIT_LEAKS = dg.AssetCheckSpec(
    "cohort_split_leaks", asset="cohort", blocking=True,
    description="No patient in two of train / selection / validation of one cohort, no "
    "waveform copy in two splits of any cohorts; the ECGs per split, and any split a cohort "
    "lacks (training names it).")
REASONS = dg.AssetCheckSpec(
    "quarantine_reasons", asset="quarantine", blocking=False,
    description="Per-reason counts of the quarantined records (a WARN when any: look at them; "
    "never blocks what the quarantine exists for).")

TABLES_RECORD = "checks/tables/clinical_tables_source.json"  # what the last parse produced
TABLE_OUTPUTS = (*(CLINICAL.format(name=name) for name in tables.TABLES), TABLE_REJECTS)
TABLES_CODE_VERSION = "2"  # bump when parsing changes: it also keys TABLES_RECORD


def _parse_tables(context: dg.AssetExecutionContext, read, st: Storage) -> dict:
    """Parse the four tables through ``read``, write them and their rejects (``TABLE_OUTPUTS``);
    a JSON-ready record of what was written (metadata, data version)."""
    try:
        parsed, rejects = tables.read_tables(read)
    except tables.TableError as exc:
        raise _structural(exc) from exc
    meta: dict = {}
    digest = hashlib.sha256()
    for name, df in parsed.items():
        w = frames.write_parquet(st, CLINICAL.format(name=name), df)
        meta[f"{name}_rows"] = w.rows
        meta[f"{name}_uri"] = w.uri
        digest.update(w.sha256.encode())
    w = frames.write_parquet(st, TABLE_REJECTS, rejects)
    if len(rejects):  # a clean export keeps the version it had before rows were quarantined
        digest.update(w.sha256.encode())
    meta["rows_quarantined"] = len(rejects)
    if len(rejects):
        context.log.warning(f"{len(rejects)} table row(s) quarantined: " + ", ".join(
            f"{n} {r}" for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()))
    meta["duplicate_keys"] = tables.key_problems(parsed)
    meta["dagster/row_count"] = sum(len(df) for df in parsed.values())
    return {"metadata": meta, "data_version": digest.hexdigest()[:16]}


@dg.asset(group_name="raw", kinds={"polars", "parquet"}, code_version=TABLES_CODE_VERSION,
          retry_policy=RETRY_IO,
          check_specs=[EXPECTATIONS],
          description="patient, ecg-metadata, ecg-ed-enc and ed-encounter, typed, as Parquet; "
          "rows that cannot be used are quarantined (stage tables). Raw files whose bytes were "
          "parsed before are not parsed again (reused: true).")
@transient_only
def clinical_tables(context: dg.AssetExecutionContext, raw: RawDataResource,
                    storage: StorageResource) -> dg.MaterializeResult:
    source, st = raw.source(), storage.get()
    source.check()
    blobs: dict[str, bytes] = {}
    for spec in tables.TABLES.values():  # a missing table: read_tables names it below
        try:
            blobs[spec.file] = source.read_bytes(spec.file)
        except FileNotFoundError:
            pass

    def read(file: str) -> bytes:
        return blobs[file] if file in blobs else source.read_bytes(file)

    # The raw bytes decide: the same files parse to the same tables (the 112,900-row metadata
    # table takes 5 s to parse row by row; hashing it 0.1 s).
    source_version = hashlib.sha256(f"clinical_tables-{TABLES_CODE_VERSION}".encode())
    for file in sorted(blobs):
        source_version.update(f"{file}:{hashlib.sha256(blobs[file]).hexdigest()};".encode())
    version = source_version.hexdigest()
    if len(blobs) < len(tables.TABLES):  # a table is missing: read_tables fails naming it
        found, reused = _parse_tables(context, read, st), False
    else:  # outputs gone from storage: parsed again
        found, reused = remembered(st, TABLES_RECORD, version,
                                   lambda: _parse_tables(context, read, st), TABLE_OUTPUTS)
    meta = {k: dg.MetadataValue.path(v) if k.endswith("_uri") else v
            for k, v in found["metadata"].items()}
    meta["duplicate_keys"] = dg.MetadataValue.json(found["metadata"]["duplicate_keys"])
    return dg.MaterializeResult(metadata={**meta, "reused": reused},
                                data_version=dg.DataVersion(found["data_version"]),
                                check_results=[_expectations(st)])


def read_clinical(storage: Storage) -> dict[str, pl.DataFrame]:
    return {name: frames.read_parquet(storage, CLINICAL.format(name=name))
            for name in tables.TABLES}


def _validate(st: Storage) -> dict:
    from acs_pipeline.cohort.expectations import validate_tables

    report = validate_tables(read_clinical(st))
    return {"passed": report.success, "markdown": report.markdown(),
            "structural": any(o.expectation == "expect_column_to_exist"
                              for o in report.failures()),
            "result": report.as_metadata()}


def _expectations(st: Storage) -> dg.AssetCheckResult:
    """The expectations on the tables as stored, or the result recorded for the same bytes."""
    from acs_pipeline.cohort.expectations import tables_version

    version = tables_version({name: st.read_bytes(CLINICAL.format(name=name))
                              for name in tables.TABLES})
    found, reused = remembered(st, "checks/tables/clinical_tables_expectations.json", version,
                               lambda: _validate(st))
    return dg.AssetCheckResult(
        check_name=EXPECTATIONS.name, passed=found["passed"],
        description=found["markdown"][:2000],
        severity=dg.AssetCheckSeverity.ERROR if found["structural"]
        else dg.AssetCheckSeverity.WARN,
        metadata={"summary": dg.MetadataValue.md(found["markdown"]),
                  "result": dg.MetadataValue.json(found["result"]), "reused": reused,
                  "checked_version": version})


COHORT_CODE_VERSION = "3"  # bump when the cohort's build changes: it also keys COHORT_RECORD
COHORT_RECORD = "checks/tables/cohort_source.json"  # what the last build produced, from what


def _build_cohort(st: Storage, seed: int) -> dict:
    """Build and write the cohort and its rejects; a JSON-ready record of what was written."""
    manifest = frames.read_parquet(st, MANIFEST).filter(pl.col("status") == "ok")
    hashes = dict(manifest.select("ecg_id", "sha256").iter_rows())
    try:
        df, rejected = cohort_lib.build_cohort(read_clinical(st), hashes, seed=seed)
    except cohort_lib.CohortError as exc:
        raise _structural(exc) from exc
    w = frames.write_parquet(st, COHORT, df)
    frames.write_parquet(st, COHORT_REJECTS, rejected)
    return {"written": asdict(w), "summary": frames.to_markdown(cohort_lib.summary(df)),
            "rejected": len(rejected),
            "duplicate_copies": int(df["duplicate_of"].is_not_null().sum()),
            "tested_ecgs": int((df["cohort"] == "tested").sum()),
            "split_leaks": _split_leaks(df)}


@dg.asset(group_name="cohort", kinds={"polars", "parquet"}, code_version=COHORT_CODE_VERSION,
          deps=[clinical_tables, "ecg_manifest"], automation_condition=EAGER,
          check_specs=[SPLIT_LEAKS],
          description="One row per ECG: labels, tested/untested, duplicates, patient-level "
                      "70/30 train/validation split per cohort, and a seeded 'selection' split "
                      "(20 % of the training patients) that chooses the checkpoints. Inputs "
                      "whose bytes it built from before are not built again (reused: true).")
def cohort(context: dg.AssetExecutionContext, storage: StorageResource,
           settings: PipelineSettings) -> dg.MaterializeResult:
    st = storage.get()
    # The inputs' bytes and the seed decide, as for clinical_tables: the same manifest and
    # tables build the same cohort (hashing them: milliseconds; building it: 0.1 s on 7.5k ECGs)
    source = hashlib.sha256(f"cohort-{COHORT_CODE_VERSION}-seed-{settings.seed}".encode())
    for rel in (MANIFEST, *(CLINICAL.format(name=name) for name in tables.TABLES)):
        source.update(hashlib.sha256(st.read_bytes(rel)).digest())
    found, reused = remembered(st, COHORT_RECORD, source.hexdigest(),  # outputs gone: built
                               lambda: _build_cohort(st, settings.seed), (COHORT, COHORT_REJECTS))
    w = frames.Written(**found["written"])
    leaks = found["split_leaks"]
    return dg.MaterializeResult(
        metadata=table_metadata(w, summary=dg.MetadataValue.md(found["summary"]),
                                rejected=found["rejected"],
                                duplicate_copies=found["duplicate_copies"],
                                tested_ecgs=found["tested_ecgs"], reused=reused),
        data_version=dg.DataVersion(w.version),
        check_results=[dg.AssetCheckResult(
            check_name=SPLIT_LEAKS.name, passed=leaks["passed"],
            description=leaks["description"],
            metadata={**leaks["leaks"], "split_ecgs": dg.MetadataValue.json(leaks["sizes"]),
                      "missing_splits": dg.MetadataValue.json(leaks["missing"]),
                      "reused": reused})],
    )


def _split_leaks(df: pl.DataFrame) -> dict:
    """What ``cohort_split_leaks`` finds in a cohort, JSON-ready."""
    leaks = cohort_lib.split_leaks(df)
    sizes = {f"{c}/{s}": n for c, s, n in df.filter(pl.col("split").is_not_null())
             .group_by("cohort", "split").len().sort("cohort", "split").iter_rows()}
    missing = [f"{c}/{s}" for c in cohort_lib.SPLIT_COHORTS if f"{c}/train" in sizes
               for s in cohort_lib.SPLITS if f"{c}/{s}" not in sizes]
    return {"passed": not any(leaks.values()),
            "description": "; ".join([*(f"{n} {k} in two splits" for k, n in leaks.items() if n),
                                      *(f"no ECG in {m}" for m in missing)]) or None,
            "leaks": leaks, "sizes": sizes, "missing": missing}


@dg.asset(group_name="cohort", kinds={"polars", "parquet"}, code_version="2",
          deps=[clinical_tables, cohort, "ecg_3by4", "ecg_12lead"], automation_condition=EAGER,
          check_specs=[REASONS],
          description="One row per rejected record of the dataset with its source key, stage "
                      "(tables, cohort, v1:<view>) and reason. The holdout's rejections stay "
                      "with its views (tensors/holdout/<view>/_rejects.parquet): the holdout is "
                      "optional, and this table must not wait for it.")
def quarantine(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    st = storage.get()
    parts = [frames.read_parquet(st, COHORT_REJECTS).with_columns(
        key=pl.lit(None, pl.String), stage=pl.lit("cohort"))]
    if st.exists(TABLE_REJECTS):  # written by clinical_tables since code version 2
        parts.append(frames.read_parquet(st, TABLE_REJECTS).with_columns(stage=pl.lit("tables")))
    for view in VIEWS:
        rel = f"tensors/{view}/_rejects.parquet"
        if st.exists(rel):
            parts.append(frames.read_parquet(st, rel).with_columns(
                stage=pl.lit("v1:") + pl.col("stage")))
    df = pl.concat([p.select(list(REJECT_SCHEMA)) for p in parts]).sort(
        "stage", "ecg_id", "key", nulls_last=True)
    w = frames.write_parquet(st, QUARANTINE, df)
    by_reason = df.group_by("stage", "reason").len().sort("stage", "reason")
    return dg.MaterializeResult(
        metadata=table_metadata(
            w, by_reason=md_table(by_reason) if len(df) else "nothing quarantined"),
        data_version=dg.DataVersion(w.version),
        check_results=[_reasons(df)],
    )


def _reasons(df: pl.DataFrame) -> dg.AssetCheckResult:
    counts = {f"{stage}/{reason}": n for stage, reason, n in
              df.group_by("stage", "reason").len().sort("stage", "reason").iter_rows()}
    return dg.AssetCheckResult(
        check_name=REASONS.name, passed=not len(df), severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(df)} record(s) quarantined"
        + (": " + ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else ""),
        metadata={"quarantined": len(df), "by_reason": dg.MetadataValue.json(counts),
                  "ecgs": df["ecg_id"].drop_nulls().n_unique()},
    )
