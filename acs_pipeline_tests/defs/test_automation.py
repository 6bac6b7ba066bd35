"""Jobs, the weekly schedule and the raw-data sensor, evaluated without launching runs."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from acs_pipeline.definitions import defs
from acs_pipeline.defs.automation import DATA_GROUPS, NETWORK_GROUPS, raw_data_sensor, shard_digests
from acs_pipeline.defs.gpu import ECS_TAGS, K8S_TAG
from acs_pipeline.defs.models.assets import MODELS
from acs_pipeline.defs.resources import GPU_VARIABLES, MissingSettingError, RawDataResource
from acs_pipeline.ecg.leads import NPZ_DIR
from acs_pipeline.io.objects import StorageAccessError, StorageError, StoredObject
from acs_pipeline_tests.s3_fixtures import s3_client

INGEST_ASSETS = {
    "ecg_manifest", "holdout_manifest", "clinical_tables", "cohort", "quarantine",
    "ecg_3by4", "ecg_12lead", "holdout_ecg_3by4", "holdout_ecg_12lead",
}  # fmt: skip
CHECKPOINTS = {f"{m}_{stage}_checkpoint" for m in MODELS for stage in ("mace", "acs")}
GPU_JOBS = ("train", "evaluate", "full")  # they train or predict with a network
LAUNCHER_TAGS = (*ECS_TAGS, K8S_TAG)
ECS_ENV = {"ACS_GPU_LAUNCHER": "ecs", "ACS_GPU_CAPACITY_PROVIDER": "acs-pipeline-gpu",
           "ACS_GPU_TASK_DEFINITION": "arn:aws:ecs:eu-west-1:123456789012:task-definition/gpu:3"}


def defs_with(env: dict[str, str]) -> dg.Definitions:
    """The definitions loaded with ``env`` as the only GPU launcher settings."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in GPU_VARIABLES.values():
            patch.delenv(variable, raising=False)
        for variable, value in env.items():
            patch.setenv(variable, value)
        return defs()


@pytest.fixture(scope="module")
def d() -> dg.Definitions:
    return defs_with({})


def job_assets(d: dg.Definitions, job: str) -> set[str]:
    """The asset keys a job executes, as the UI writes them."""
    layer = d.resolve_job_def(job).asset_layer
    return {k.to_user_string() for k in layer.executable_asset_keys}


# ---------------------------------------------------------------------------------- jobs


def test_jobs_select_the_right_groups(d):
    specs = {s.key.to_user_string(): s for s in d.resolve_all_asset_specs()}
    groups = {k: s.group_name for k, s in specs.items()}

    ingest = job_assets(d, "ingest")
    assert ingest == INGEST_ASSETS
    assert {groups[k] for k in ingest} == set(DATA_GROUPS) == {"raw", "cohort", "tensors"}

    train = job_assets(d, "train")
    assert train == CHECKPOINTS
    assert {groups[k] for k in train} == {"models"}

    evaluate = job_assets(d, "evaluate")
    assert evaluate == {k for k, g in groups.items() if g in ("predictions", "evaluation")}
    assert not evaluate & (INGEST_ASSETS | CHECKPOINTS)
    assert {"evaluation_report", "leaderboard_submission"} <= evaluate

    assert job_assets(d, "full") == set(specs)


def test_jobs_that_run_networks_are_the_gpu_jobs(d):
    groups = {s.key.to_user_string(): s.group_name for s in d.resolve_all_asset_specs()}
    for job in d.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        networks = {groups[k] for k in job_assets(d, job.name)} & set(NETWORK_GROUPS)
        assert (job.name in GPU_JOBS) == bool(networks), job.name


def test_without_gpu_settings_jobs_carry_no_launcher_tags(d):
    for name in GPU_JOBS:
        job = d.resolve_job_def(name)
        tags = job.run_tags
        assert tags.get("acs/resource") == "gpu", name  # the GPU run-queue limit still applies
        assert not set(tags) & set(LAUNCHER_TAGS), name
        assert "No GPU launcher configured (ACS_GPU_LAUNCHER unset" in job.description, name
    for name in ("train", "full"):
        runtime = d.resolve_job_def(name).run_tags.get("dagster/max_runtime")
        assert isinstance(runtime, str), name
        assert float(runtime) >= 86400, f"{name}: max_runtime {runtime!r} s is under a day"
    assert "dagster/max_runtime" not in d.resolve_job_def("evaluate").run_tags
    assert d.resolve_job_def("ingest").run_tags == {}


@pytest.mark.parametrize(("env", "expected"), [
    (ECS_ENV, set(ECS_TAGS)),
    ({"ACS_GPU_LAUNCHER": "k8s"}, {K8S_TAG}),
])  # fmt: skip
def test_gpu_settings_put_launcher_tags_on_the_gpu_jobs_only(env, expected):
    loaded = defs_with(env)
    for name in GPU_JOBS:
        job = loaded.resolve_job_def(name)
        assert set(job.run_tags) & set(LAUNCHER_TAGS) == expected, name
        assert job.run_tags["acs/resource"] == "gpu", name
        assert "No GPU launcher" not in job.description, name
    assert loaded.resolve_job_def("ingest").run_tags == {}
    if env is ECS_ENV:
        kwargs = json.loads(loaded.resolve_job_def("full").run_tags["ecs/run_task_kwargs"])
        assert kwargs["taskDefinition"] == ECS_ENV["ACS_GPU_TASK_DEFINITION"]
        assert "acs-pipeline-gpu" in loaded.resolve_job_def("train").description


def test_ecs_without_its_names_fails_to_load_naming_them():
    with pytest.raises(Exception, match="automation.py") as failed:  # Dagster names the file
        defs_with({"ACS_GPU_LAUNCHER": "ecs"})
    cause = failed.value.__cause__
    assert isinstance(cause, MissingSettingError)
    assert "needs ACS_GPU_CAPACITY_PROVIDER and ACS_GPU_TASK_DEFINITION" in str(cause)


def test_training_assets_use_the_gpu_pool_and_retry(d):
    by_key = {k.to_user_string(): a for a in d.assets for k in a.keys}
    for key in CHECKPOINTS:
        node = by_key[key].node_def
        assert node.pools == {"gpu"}, key
        assert node.retry_policy is not None, key
        assert node.retry_policy.max_retries >= 1, key
    for key in INGEST_ASSETS:
        assert "gpu" not in by_key[key].node_def.pools, key


# ------------------------------------------------------------------------------ schedule


def test_weekly_schedule_requests_a_full_run(d):
    schedule = d.resolve_schedule_def("weekly_full")
    assert schedule.job_name == "full"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    when = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # a Monday, 03:00 UTC
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when))
    assert data.skip_message is None
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.job_name in (None, "full")
    assert request.tags.get("dagster/schedule_name") == "weekly_full"


def test_weekly_schedule_cron_is_weekly(d):
    weekly_full = d.resolve_schedule_def("weekly_full")
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    ticks = []
    for t in cron_string_iterator(start, weekly_full.cron_schedule, weekly_full.execution_timezone):
        ticks.append(t)
        if len(ticks) == 5:
            break
    assert all(b - a == timedelta(days=7) for a, b in zip(ticks, ticks[1:], strict=False))
    assert {(t.weekday(), t.hour, t.minute) for t in ticks} == {(0, 3, 0)}  # Monday 03:00
    assert weekly_full.execution_timezone == "UTC"


# -------------------------------------------------------------------------------- sensor


class LocalTree:
    """A raw dataset root on local disk."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def resource(self) -> RawDataResource:
        return RawDataResource(root=str(self.root))

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, key: str) -> None:
        (self.root / key).unlink()


class S3Tree:
    """A raw dataset root under a prefix of a bucket on the loopback S3 server."""

    kind = "s3"

    def __init__(self, endpoint: str, bucket: str, prefix: str = "ed-bwh-ecg/v1"):
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix
        self.client = s3_client(endpoint)

    def resource(self) -> RawDataResource:
        return RawDataResource(root=f"s3://{self.bucket}/{self.prefix}", endpoint_url=self.endpoint)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")


@pytest.fixture(params=["local", "s3"])
def tree(request, tmp_path):
    if request.param == "local":
        return LocalTree(tmp_path / "ed-bwh-ecg" / "v1")
    return S3Tree(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


def npz(shard: str, stem: str) -> str:
    """A waveform key in the dataset layout: ``ecg-waveforms-npz/<2hex>/<10hex>.npz``."""
    assert re.fullmatch(r"[0-9a-f]{2}", shard) and re.fullmatch(r"[0-9a-f]{10}", stem)
    return f"{NPZ_DIR}/{shard}/{stem}.npz"


def tick(resource: RawDataResource, cursor: str | None):
    """One sensor evaluation; returns (RunRequest or SkipReason, the cursor after the tick)."""
    context = dg.build_sensor_context(cursor=cursor, resources={"raw": resource})
    result = raw_data_sensor(context)
    assert isinstance(result, dg.RunRequest | dg.SkipReason), result
    return result, context.cursor


def changed(request: dg.RunRequest) -> tuple[list[str], int]:
    return request.tags["acs/changed_shards"].split(","), int(
        request.tags["acs/changed_shard_count"]
    )


A1, A2, B1 = npz("a1", "a1b2c3d4e5"), npz("a1", "a1ffff0001"), npz("b2", "b20000abcd")
NEW = npz("a1", "a1000000ee")


def test_sensor_sees_additions_changes_and_deletions(tree):
    resource = tree.resource()
    for key in (A1, A2, B1):
        tree.put(key, b"waveform " + key.encode())
    tree.put("ecg-metadata.csv", b"ecg_id\n")  # not a waveform: ignored
    run_keys = []

    # first tick: everything is new
    first, cursor = tick(resource, None)
    assert isinstance(first, dg.RunRequest)
    assert first.run_key
    assert changed(first) == (["a1", "b2"], 2)
    state = json.loads(cursor)["shards"]
    assert json.loads(cursor)["generation"] == 1
    assert set(state) == {"a1", "b2"}
    assert all(re.fullmatch(r"[0-9a-f]{16}", v) for v in state.values())
    run_keys.append(first.run_key)

    # nothing changed: skip, same cursor
    skip, again = tick(resource, cursor)
    assert isinstance(skip, dg.SkipReason)
    assert "2 shard folders" in skip.skip_message
    assert again == cursor

    # a file that is not a waveform: still nothing to do
    tree.put(f"{NPZ_DIR}/a1/notes.txt", b"not an npz")
    skip, again = tick(resource, cursor)
    assert isinstance(skip, dg.SkipReason)
    assert again == cursor

    # one new file: exactly one request, naming its shard only
    tree.put(NEW, b"new waveform")
    added, after_add = tick(resource, cursor)
    assert isinstance(added, dg.RunRequest)
    assert changed(added) == (["a1"], 1)
    assert json.loads(after_add)["shards"]["b2"] == state["b2"]
    assert json.loads(after_add)["shards"]["a1"] != state["a1"]
    run_keys.append(added.run_key)
    skip, _ = tick(resource, after_add)
    assert isinstance(skip, dg.SkipReason)

    if tree.kind == "s3":
        # same bytes again: same ETag, nothing to ingest
        tree.put(NEW, b"new waveform")
        skip, _ = tick(resource, after_add)
        assert isinstance(skip, dg.SkipReason)

    # the file is rewritten with other bytes (other size too: a local ETag is size + mtime)
    tree.put(NEW, b"another new waveform")
    modified, after_modify = tick(resource, after_add)
    assert isinstance(modified, dg.RunRequest)
    assert changed(modified) == (["a1"], 1)
    run_keys.append(modified.run_key)

    # a file is deleted; its shard folder disappears from the cursor
    tree.delete(B1)
    deleted, after_delete = tick(resource, after_modify)
    assert isinstance(deleted, dg.RunRequest)
    assert changed(deleted) == (["b2"], 1)
    assert set(json.loads(after_delete)["shards"]) == {"a1"}
    run_keys.append(deleted.run_key)
    skip, again = tick(resource, after_delete)
    assert isinstance(skip, dg.SkipReason)
    assert again == after_delete

    # distinct states, distinct run keys: the daemon never drops one as already launched
    assert len(set(run_keys)) == len(run_keys) == 4


def test_sensor_run_key_is_new_when_a_listing_returns_to_an_earlier_state(tmp_path):
    tree = LocalTree(tmp_path / "v1")
    tree.put(A1, b"one")
    first, cursor = tick(tree.resource(), None)
    tree.put(NEW, b"an accidental upload")
    added, cursor = tick(tree.resource(), cursor)
    tree.delete(NEW)
    removed, cursor = tick(tree.resource(), cursor)
    assert isinstance(removed, dg.RunRequest)
    assert changed(removed) == (["a1"], 1)
    assert removed.run_key not in {first.run_key, added.run_key}


def test_sensor_with_no_waveforms_skips(tmp_path):
    tree = LocalTree(tmp_path / "v1")
    tree.put("ecg-metadata.csv", b"ecg_id\n")
    skip, cursor = tick(tree.resource(), None)
    assert isinstance(skip, dg.SkipReason)
    assert "0 shard folders" in skip.skip_message
    assert cursor is None


def test_sensor_wrong_bucket_names_it(s3_server):
    missing = f"acs-missing-{uuid.uuid4().hex[:12]}"
    resource = RawDataResource(root=f"s3://{missing}/ed-bwh-ecg/v1", endpoint_url=s3_server)
    with pytest.raises(StorageError, match=rf"bucket '{missing}' does not exist"):
        tick(resource, None)


def test_sensor_missing_local_root_names_it(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(StorageError, match=re.escape(str(root))):
        tick(RawDataResource(root=str(root)), None)


def test_shard_digests_depend_on_key_and_etag_per_shard():
    objs = [StoredObject(A1, 10, "e1"), StoredObject(A2, 10, "e2"), StoredObject(B1, 10, "e3")]
    base = shard_digests(objs)
    assert list(base) == ["a1", "b2"]
    etag = shard_digests([StoredObject(A1, 10, "e1*"), *objs[1:]])
    assert etag["a1"] != base["a1"] and etag["b2"] == base["b2"]
    renamed = shard_digests([StoredObject(A1.replace("e5.", "e6."), 10, "e1"), *objs[1:]])
    assert renamed["a1"] != base["a1"] and renamed["b2"] == base["b2"]


def test_sensor_skips_a_transient_listing_fault_and_fails_on_access(s3_server, s3_bucket,
                                                                     faulty_s3):
    tree = S3Tree(s3_server, s3_bucket)
    tree.put(A1, b"1")
    resource = RawDataResource(root=f"s3://{s3_bucket}/{tree.prefix}",
                               endpoint_url=faulty_s3.endpoint)
    faulty_s3.inject("error500", f"/{s3_bucket}?list-type=2", times=100)
    skip, cursor = tick(resource, None)
    assert isinstance(skip, dg.SkipReason) and cursor is None
    assert "failed transiently" in skip.skip_message and "InternalError" in skip.skip_message
    faulty_s3.clear()
    faulty_s3.inject("denied", f"/{s3_bucket}?list-type=2", times=100)
    with pytest.raises(StorageAccessError, match=f"bucket '{s3_bucket}'"):
        tick(resource, None)
    faulty_s3.clear()
    request, cursor = tick(resource, None)
    assert isinstance(request, dg.RunRequest) and changed(request)[0] == ["a1"]
