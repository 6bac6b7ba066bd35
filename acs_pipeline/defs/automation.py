"""Jobs, the weekly schedule, the raw-data sensor and declarative automation.

The jobs that train or predict with a network are built at load time from the GPU launcher
settings (``ACS_GPU_*``, read by :func:`acs_pipeline.defs.resources.gpu_settings`)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import dagster as dg

from acs_pipeline.defs.gpu import describe, gpu_run_tags
from acs_pipeline.defs.resources import GpuLauncherSettings, RawDataResource, gpu_settings
from acs_pipeline.ecg.leads import NPZ_DIR
from acs_pipeline.io.objects import TransientStorageError

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

DATA_GROUPS = ("raw", "cohort", "tensors")
NETWORK_GROUPS = ("models", "predictions")  # steps that train or predict with a network
# Training runs: run monitoring stops them after a week (its default ceiling is 6 h).
TRAIN_MAX_RUNTIME = {"dagster/max_runtime": str(7 * 86400)}
log = dg.get_dagster_logger("acs_pipeline.automation")

ingest_job = dg.define_asset_job(
    "ingest", selection=dg.AssetSelection.groups(*DATA_GROUPS),
    description="Raw files -> manifest, clinical tables, cohort, validated tensors, quarantine "
                "(CPU run task).")


def gpu_jobs(gpu: GpuLauncherSettings) -> list[UnresolvedAssetJobDefinition]:
    """`train`, `evaluate` and `full`: they train or predict with a network, so they carry the
    GPU queue tag and the launcher's GPU tags (:mod:`acs_pipeline.defs.gpu`)."""
    tags, where = gpu_run_tags(gpu), describe(gpu)
    return [
        dg.define_asset_job(
            "train", selection=dg.AssetSelection.groups("models"),
            description=f"Every model's MACE and ACS checkpoints (GPU pool). {where}",
            tags=tags | TRAIN_MAX_RUNTIME),
        dg.define_asset_job(
            "evaluate", selection=dg.AssetSelection.groups("predictions", "evaluation"),
            description="Predictions (the networks on the validation split and the holdout), "
                        f"the evaluation report and the leaderboard submission. {where}",
            tags=tags),
        dg.define_asset_job(
            "full", selection=dg.AssetSelection.all(),
            description=f"The whole benchmark, raw data to report. {where}",
            tags=tags | TRAIN_MAX_RUNTIME),
    ]


def weekly_full(full_job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Every Monday 03:00 UTC, a `full` run (with the job's GPU tags); stopped by default."""
    return dg.ScheduleDefinition(
        name="weekly_full", job=full_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-runs the whole benchmark every Monday 03:00 UTC (turn on where "
                    "deployed); its runs carry the `full` job's GPU tags.")


def shard_digests(objects) -> dict[str, str]:
    """One digest per shard folder over its (key, ETag) pairs: small enough for a cursor."""
    per: dict[str, hashlib._Hash] = {}
    for obj in objects:
        parts = obj.key.split("/")
        shard = parts[1] if len(parts) > 2 else "_"
        per.setdefault(shard, hashlib.sha256()).update(f"{obj.key}\t{obj.etag}\n".encode())
    return {s: h.hexdigest()[:16] for s, h in sorted(per.items())}


@dg.sensor(job=ingest_job, minimum_interval_seconds=300,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Launches `ingest` when raw waveform files are added, changed or removed. "
                       "The cursor holds one digest per shard folder and a generation counter. "
                       "A listing that fails transiently skips the tick; an access fault or a "
                       "missing root fails it.")
def raw_data_sensor(context: dg.SensorEvaluationContext, raw: RawDataResource):
    source = raw.source()
    try:
        source.check()  # a missing root or bucket is an error, not an empty listing
        current = shard_digests(source.list_objects(NPZ_DIR + "/", suffix=".npz"))
    except TransientStorageError as exc:  # the next tick lists again; the cursor stays
        return dg.SkipReason(f"listing the raw root failed transiently, next tick retries: {exc}")
    state = json.loads(context.cursor) if context.cursor else {"generation": 0, "shards": {}}
    previous = state["shards"]
    changed = sorted(s for s in set(current) | set(previous)
                     if current.get(s) != previous.get(s))
    if not changed:
        return dg.SkipReason(f"no change in {len(current)} shard folders")
    generation = state["generation"] + 1
    # The generation makes every change a new run key, even when a listing returns to an
    # earlier state (a file added, then removed): Dagster skips run keys it has seen.
    digest = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
    context.update_cursor(json.dumps({"generation": generation, "shards": current},
                                     sort_keys=True))
    shown = ",".join(changed[:20]) + ("..." if len(changed) > 20 else "")
    return dg.RunRequest(run_key=f"{generation}-{digest}",
                         tags={"acs/changed_shards": shown,
                               "acs/changed_shard_count": str(len(changed))})


automation_sensor = dg.AutomationConditionSensorDefinition(
    "acs_automation", target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Evaluates the assets' automation conditions (off by default; turn on where "
                "deployed).")


def automation_defs(gpu: GpuLauncherSettings) -> dg.Definitions:
    """Jobs, schedule and sensors with ``gpu``'s launcher tags on the network jobs."""
    train, evaluate, full = gpu_jobs(gpu)
    return dg.Definitions(jobs=[ingest_job, train, evaluate, full],
                          schedules=[weekly_full(full)],
                          sensors=[raw_data_sensor, automation_sensor])


@dg.definitions
def automation() -> dg.Definitions:
    gpu = gpu_settings()
    log.info("acs_pipeline jobs train/evaluate/full: %s", describe(gpu))
    return automation_defs(gpu)
