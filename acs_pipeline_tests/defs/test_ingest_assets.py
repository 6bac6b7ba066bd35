"""The tensor assets' fan-out: plan -> parallel shard-update steps -> index."""

import dagster as dg
import pytest

from acs_pipeline.definitions import defs
from acs_pipeline.defs.common import MANIFEST
from acs_pipeline.defs.ingest import tensors
from acs_pipeline.defs.ingest.tensors import INGEST_CODE_VERSION
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.ingest import shards
from acs_pipeline.ingest.views import ViewState, ingest_view
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.conftest import env_for


def _materialize(env: dict[str, str], instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    d = defs()
    return dg.materialize([*d.assets, *d.asset_checks],
                          selection=dg.AssetSelection.assets("ecg_manifest", "ecg_3by4"),
                          resources=resources_from_env(env), instance=instance)


def _update_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted({e.step_key for e in result.all_events
                   if e.is_step_success and "ecg_3by4_update" in (e.step_key or "")})


def _plan_said(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id)
            if e.step_key == "ecg_3by4.ecg_3by4_plan" and not e.is_dagster_event]


def _data_version(instance: dg.DagsterInstance) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey("ecg_3by4"))
    return event.asset_materialization.tags["dagster/data_version"]


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    from acs_pipeline_tests.ingest.raw_tree import write_tree

    root = tmp_path_factory.mktemp("raw")
    write_tree(root / "ed-bwh-ecg" / "v1", n=24)
    return root


def test_stale_shards_update_in_parallel_steps_like_one_call(tiny_raw, tmp_path, monkeypatch):
    surveys: list[str] = []
    survey = tensors.survey_view
    monkeypatch.setattr(tensors, "survey_view",
                        lambda *a, **kw: surveys.append(a[2]) or survey(*a, **kw))
    env = env_for(tiny_raw, tmp_path / "storage", ACS_INGEST_WORKERS="3",
                  ACS_INGEST_STEP_FILES="1", ACS_INGEST_SHARD_DIGITS="2")
    with dg.instance_for_test() as instance:
        first = _materialize(env, instance)
        assert first.success
        steps = _update_steps(first)
        assert len(steps) == 3  # shards aa, ab, b0: one step each
        meta = first.asset_materializations_for_node("ecg_3by4")[-1].metadata
        assert meta["update_steps"].value == 3 and meta["shards_computed"].value == 3
        assert all(e.passed for e in first.get_asset_check_evaluations())

        # The same view built in one call has the same content version.
        st = Storage(str(tmp_path / "storage"))
        one = ingest_view(Storage(str(tiny_raw / "ed-bwh-ecg" / "v1")),
                          Storage(str(tmp_path / "one")),
                          frames.read_parquet(st, MANIFEST), "ecg_3by4",
                          code_version=INGEST_CODE_VERSION)
        version = _data_version(instance)
        assert version == one.data_version

        # Nothing changed: no update step runs, the index and the data version stay, and the
        # plan and index steps saw that from the index and one listing (no shard record read).
        surveys.clear()
        again = _materialize(env, instance)
        assert surveys == []
        assert _update_steps(again) == []
        assert _plan_said(instance, first) == ["ecg_3by4: 3 of 3 shards to update, in 3 step(s)"]
        assert _plan_said(instance, again) == [
            "ecg_3by4: no shard to update (the index was written from these manifest files and "
            "shard files)"]
        meta = again.asset_materializations_for_node("ecg_3by4")[-1].metadata
        assert meta["shards_computed"].value == 0 and meta["shards_reused"].value == 3
        assert _data_version(instance) == version


def test_small_updates_use_fewer_steps():
    state = ViewState("ecg_3by4", "v", "tensors/ecg_3by4",
                      {s: ({f"{s}/{i}": "h" for i in range(n)}, {}) for s, n in
                       [("00", 10), ("01", 30), ("02", 10), ("03", 10)]},
                      {s: [] for s in ("00", "01", "02", "03")}, {}, {}, [])
    assert state.chunks(8, min_files=1000) == [["00", "01", "02", "03"]]
    assert state.chunks(2, min_files=10) == [["00", "01"], ["02", "03"]]
    groups = state.chunks(8, min_files=1)
    assert [s for g in groups for s in g] == ["00", "01", "02", "03"] and len(groups) == 4


def ingest_job() -> dg.JobDefinition:
    """manifest + ecg_3by4 as a job (module level: re-execution needs a reconstructable job)."""
    d = defs()
    job = dg.define_asset_job("ingest_3by4", selection=["ecg_manifest", "ecg_3by4"],
                              executor_def=dg.in_process_executor)
    return dg.Definitions(assets=d.assets, asset_checks=d.asset_checks, jobs=[job],
                          resources=resources_from_env(_ENV)).resolve_job_def("ingest_3by4")


_ENV: dict[str, str] = {}


def test_a_failed_update_step_reexecutes_alone(tiny_raw, tmp_path, monkeypatch):
    """Re-executing a run from failure runs only the failed shard group and the index, with
    the plan's shard lists read back from the first run's step values."""
    _ENV.clear()
    _ENV.update(env_for(tiny_raw, tmp_path / "storage", ACS_INGEST_WORKERS="3",
                        ACS_INGEST_STEP_FILES="1", ACS_INGEST_SHARD_DIGITS="2"))
    real = shards.build_shard

    def fail_ab(task, *args, **kwargs):
        if task.shard == "ab":
            raise dg.Failure("disk full", allow_retries=False)
        return real(task, *args, **kwargs)

    with dg.instance_for_test() as instance:
        monkeypatch.setattr(shards, "build_shard", fail_ab)
        first = dg.execute_job(dg.reconstructable(ingest_job), instance)
        assert not first.success
        monkeypatch.setattr(shards, "build_shard", real)
        again = dg.execute_job(dg.reconstructable(ingest_job), instance,
                               reexecution_options=dg.ReexecutionOptions.from_failure(
                                   first.run_id, instance))
        assert again.success
        ran = {e.step_key for e in again.all_events if e.is_step_success}
        assert {k for k in ran if "." in k or k == "ecg_manifest"} == {
            "ecg_3by4.ecg_3by4_update[shards_ab_ab]", "ecg_3by4.ecg_3by4_index"}  # + checks
        meta = instance.get_latest_materialization_event(
            dg.AssetKey("ecg_3by4")).asset_materialization.metadata
        # the counts of aa and b0 come back from the first run's step values
        assert meta["update_steps"].value == 3 and meta["shards_computed"].value == 3
