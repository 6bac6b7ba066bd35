"""The code location's default executor (per run: in-process, or forked from a preloaded fork
server when the run trains or predicts with a network), through the CLI a user runs; checks of
unchanged data reuse their results; nothing is requested when nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.system_config.objects import ResolvedRunConfig

from acs_pipeline.definitions import defs
from acs_pipeline.defs.automation import DATA_GROUPS
from acs_pipeline.defs.executor import (
    PRELOAD_MODULES,
    RunExecutor,
    acs_executor,
    runs_a_network,
)
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline_tests.conftest import env_for

REPO = Path(__file__).resolve().parents[2]


def _engine_config(job: dg.JobDefinition, run_config: dict) -> dict:
    return ResolvedRunConfig.build(job, run_config).execution.execution_engine_config


def test_the_default_executor_chooses_per_run_and_config_still_chooses():
    d = defs()
    for job in (d.resolve_implicit_global_asset_job_def(), d.resolve_job_def("ingest")):
        assert job.executor_def is acs_executor
        assert set(_engine_config(job, {})) == {"auto"}
        # `make demo` passes in_process; an explicit start method wins over the default
        assert "in_process" in _engine_config(
            job, {"execution": {"config": {"in_process": {}}}})
        spawn = _engine_config(job, {"execution": {"config": {"multiprocess": {
            "max_concurrent": 3, "start_method": {"spawn": {}}}}}})["multiprocess"]
        assert spawn["start_method"] == {"spawn": {}} and spawn["max_concurrent"] == 3
    for module in PRELOAD_MODULES:  # a typo would only show as a forkserver warning
        __import__(module)
    # outside the fork server the warm-up module leaves the code location as it is
    import acs_pipeline.definitions as location
    assert callable(location.defs) and "acs_pipeline.defs._forkserver" in PRELOAD_MODULES


def test_a_run_is_forked_when_it_trains_or_predicts_with_a_network():
    from dagster._core.execution.api import create_execution_plan

    d = defs()
    asset_job = d.resolve_implicit_global_asset_job_def()

    def network(job: dg.JobDefinition) -> bool:
        return runs_a_network(job, create_execution_plan(job).step_keys_to_execute)

    assert {name: network(d.resolve_job_def(name)) for name in
            ("ingest", "train", "evaluate", "full")} == {
        "ingest": False, "train": True, "evaluate": True, "full": True}
    for keys, expected in ((["ecg_manifest", "clinical_tables", "cohort", "ecg_3by4"], False),
                           (["evaluation_report", "benchmark_table"], False),
                           (["resnet18_validation_predictions"], True),
                           (["s4_seed_sweep"], True)):
        subset = asset_job.get_subset(asset_selection={dg.AssetKey(k) for k in keys})
        assert network(subset) is expected, keys


def test_the_fork_server_builds_the_definitions_once_for_its_steps(tmp_path):
    """What a forked step finds: the definitions already built by the preload, and frozen for
    the collector with the rest of what the server held."""
    (tmp_path / "probe.py").write_text(
        "import multiprocessing as mp\n"
        "def probe(q):\n"
        "    import gc, acs_pipeline.definitions as loc\n"
        "    q.put(f'{type(loc.defs).__name__}:{gc.get_freeze_count() > 0}')\n"
        "if __name__ == '__main__':\n"
        "    import acs_pipeline.definitions as loc\n"
        "    ctx = mp.get_context('forkserver')\n"
        "    ctx.set_forkserver_preload(['acs_pipeline.defs._forkserver'])\n"
        "    q = ctx.Queue()\n"
        "    p = ctx.Process(target=probe, args=(q,))\n"
        "    p.start(); print(q.get(timeout=300)); p.join()\n"
        "    print(type(loc.defs).__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run([sys.executable, str(tmp_path / "probe.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["Definitions:True", "LazyDefinitions"]


def test_a_run_freezes_what_its_process_held_before_it():
    """``RunExecutor`` freezes the run process's objects for the collector before the plan
    runs (``freeze_long_lived_objects``); given one executor, it always runs that one. In a
    subprocess: frozen objects stay frozen."""
    code = textwrap.dedent("""
        import gc
        import dagster as dg
        from acs_pipeline.defs.executor import RunExecutor

        class Inner(dg.Executor):
            retries = None

            def __init__(self, name):
                self.name = name

            def execute(self, plan_context, execution_plan):
                yield (self.name, gc.get_freeze_count() > 0)

        print(gc.get_freeze_count() > 0, end=" ")
        for pair in (RunExecutor(Inner("in_process"), None), RunExecutor(None, Inner("multi"))):
            print(*next(pair.execute(None, None)), end=" ")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "in_process", "True", "multi", "True"]
    with pytest.raises(ValueError, match="needs an in-process or a multiprocess executor"):
        RunExecutor(None, None)


def _cli(env: dict[str, str], select: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
           "acs_pipeline.definitions", "--select", select, *extra]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)


def _check_metadata(instance: dg.DagsterInstance, asset: str, check: str) -> dict:
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(asset), check)])[dg.AssetCheckKey(dg.AssetKey(asset),
                                                                         check)]
    evaluation = record.event.dagster_event.event_specific_data
    return {k: v.value for k, v in evaluation.metadata.items()}


def test_the_cli_runs_ingest_in_process_or_forked_and_unchanged_checks_reuse(tiny_cohort,
                                                                            tmp_path,
                                                                            monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.local.yaml").read_text())
    env = {**env_for(tiny_cohort, tmp_path / "storage"), "DAGSTER_HOME": str(home)}
    select = "ecg_manifest,clinical_tables,ecg_3by4"
    first = _cli(env, select)  # the default: no network in the run, so in-process
    assert first.returncode == 0, first.stderr[-3000:]
    assert "multiprocess executor" not in first.stdout + first.stderr
    forked = {"execution": {"config": {"multiprocess": {}}}}
    again = _cli(env, select, "--config-json", json.dumps(forked))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "multiprocess executor" in again.stdout + again.stderr
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance as the CLI opened it
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()  # newest first
        assert len(runs) == 2 and all(r.is_success for r in runs)
        for run, own_process in zip(runs, (True, False), strict=True):
            events = [r.event_log_entry for r in instance.get_records_for_run(run.run_id).records]
            run_pid = next(e.dagster_event.pid for e in events if e.dagster_event_type
                           == dg.DagsterEventType.RUN_START)
            step_pids = {e.step_key: e.dagster_event.pid for e in events
                         if e.dagster_event_type == dg.DagsterEventType.STEP_START}
            assert "ecg_manifest" in step_pids
            # each check ran in the step of the asset it checks, on what that step wrote
            checked_in = {e.dagster_event.event_specific_data.check_name: e.step_key
                          for e in events if e.dagster_event_type
                          == dg.DagsterEventType.ASSET_CHECK_EVALUATION}
            assert checked_in == {"clinical_tables_expectations": "clinical_tables",
                                  "tensor_values": "ecg_3by4.ecg_3by4_index",
                                  "every_file_accounted_for": "ecg_3by4.ecg_3by4_index"}
            if own_process:  # forked: each step in a process of its own, not the run's
                assert run_pid not in step_pids.values()
                assert len(set(step_pids.values())) == len(step_pids)
            else:
                assert set(step_pids.values()) == {run_pid}
        gx = _check_metadata(instance, "clinical_tables", "clinical_tables_expectations")
        values = _check_metadata(instance, "ecg_3by4", "tensor_values")
    assert gx["reused"] is True and gx["result"]["expectations"] > 0
    assert values["reused"] is True and values["rows"] > 0 and values["parts_read"] == 0
    accounted = _check_metadata(instance, "ecg_3by4", "every_file_accounted_for")
    assert accounted["reused"] is True and accounted["accepted"] == values["rows"]
    # the first run computed them, and recorded what it found for this version
    st = tmp_path / "storage" / "checks"
    recorded = json.loads((st / "tensors/ecg_3by4/tensor_values.json").read_text())
    assert recorded["version"] == values["checked_version"]
    assert recorded["result"]["metadata"]["rows"] == values["rows"]


@pytest.fixture
def ingested(tiny_cohort, tmp_path):
    env = env_for(tiny_cohort, tmp_path / "storage")
    env.pop("ACS_HOLDOUT_URI")
    d = defs()
    data = dg.AssetSelection.groups(*DATA_GROUPS)
    with dg.instance_for_test() as instance:
        result = dg.materialize([*d.assets, *d.asset_checks], selection=data,
                                resources=resources_from_env(env), instance=instance)
        assert result.success
        yield d, data, instance, env


def _stale(d: dg.Definitions, instance: dg.DagsterInstance, data: dg.AssetSelection) -> dict:
    """What the UI's "Materialize changed and missing" would launch: each asset's stale status."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    graph = d.resolve_asset_graph()
    resolver = get_stale_status_resolver(instance, [*d.assets])
    return {k.to_user_string(): resolver.get_status(k)
            for k in data.resolve(graph)
            if resolver.get_status(k) != StaleStatus.FRESH}


def test_nothing_is_requested_after_a_full_materialization_or_a_no_change_run(ingested):
    d, data, instance, env = ingested
    holdout = dg.AssetSelection.assets("holdout_manifest").downstream()  # no holdout root
    data = data - holdout
    assert _stale(d, instance, data) == {}
    tick = dg.evaluate_automation_conditions(defs=d, instance=instance, asset_selection=data)
    assert tick.total_requested == 0
    tick = dg.evaluate_automation_conditions(defs=d, instance=instance, asset_selection=data,
                                             cursor=tick.cursor)
    assert tick.total_requested == 0
    # The listings again with nothing changed: their data versions stay, nothing is stale, so
    # "Materialize changed and missing" launches nothing. (The raw-data sensor launches no run
    # without a change; EAGER itself would follow any new materialization of a dependency.)
    again = dg.materialize([*d.assets, *d.asset_checks],
                           selection=dg.AssetSelection.assets("ecg_manifest", "clinical_tables"),
                           resources=resources_from_env(env), instance=instance)
    assert again.success
    assert _stale(d, instance, data) == {}


def test_forked_steps_share_the_cores_unless_torch_threads_are_set(monkeypatch):
    from acs_pipeline.defs import executor

    seen = []

    class Inner(dg.Executor):
        retries = None

        def execute(self, plan_context, execution_plan):
            seen.append(os.environ.get("ACS_TORCH_THREADS"))
            yield from ()

    monkeypatch.setattr(executor.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("ACS_TORCH_THREADS", raising=False)
    assert list(executor.ForkedExecutor(Inner(), 4).execute(None, None)) == []
    monkeypatch.delenv("ACS_TORCH_THREADS")
    list(executor.ForkedExecutor(Inner(), 16).execute(None, None))  # never below one
    monkeypatch.setenv("ACS_TORCH_THREADS", "3")  # the user's setting wins
    list(executor.ForkedExecutor(Inner(), 4).execute(None, None))
    assert seen == ["2", "1", "3"]
