"""The code location loads, and its assets carry what the UI shows."""

import dagster as dg

from acs_pipeline.definitions import defs
from acs_pipeline.defs.models.assets import MODELS
from acs_pipeline.defs.released.assets import RELEASED_MODELS


def load() -> dg.Definitions:
    return defs()


def test_definitions_validate_loadable():
    dg.Definitions.validate_loadable(load())


def test_expected_assets_and_metadata_conventions():
    d = load()
    specs = {s.key.to_user_string(): s for s in d.resolve_all_asset_specs()}
    expected = {"ecg_manifest", "holdout_manifest", "clinical_tables", "cohort", "quarantine",
                "ecg_3by4", "ecg_12lead", "holdout_ecg_3by4", "holdout_ecg_12lead",
                "logistic_baseline/validation_predictions", "evaluation_report",
                "benchmark_table", "leaderboard_submission", "released_weights",
                *[f"{m}/released_predictions" for m in RELEASED_MODELS]}
    for m in MODELS:
        expected |= {f"{m}/{a}" for a in ("mace_checkpoint", "acs_checkpoint",
                                          "validation_predictions", "holdout_predictions",
                                          "seed_sweep")}
    assert expected == set(specs)
    for key, spec in specs.items():
        assert spec.code_version, f"{key} has no code_version"
        assert spec.group_name and spec.group_name != "default", f"{key} has no group"
        assert spec.kinds, f"{key} has no kinds"
        assert spec.description, f"{key} has no description"
    pools = {k.to_user_string(): a.node_def.pools for a in d.assets for k in a.keys}
    for m in MODELS:
        assert pools[f"{m}/acs_checkpoint"] == {"gpu"}
        assert pools[f"{m}/mace_checkpoint"] == {"gpu"}
        deps = {d.asset_key.to_user_string() for d in specs[f"{m}/acs_checkpoint"].deps}
        assert f"{m}/mace_checkpoint" in deps


def test_jobs_schedule_and_sensors_exist():
    d = load()
    for job in ("ingest", "train", "evaluate", "full"):
        assert d.resolve_job_def(job) is not None
    assert d.resolve_schedule_def("weekly_full").cron_schedule == "0 3 * * 1"
    assert d.resolve_sensor_def("raw_data_sensor") is not None


def test_blocking_checks_exist():
    d = load()
    checks = {k.to_user_string() for k in d.resolve_asset_graph().asset_check_keys}
    for want in ("clinical_tables:clinical_tables_expectations", "cohort:cohort_split_leaks",
                 "ecg_3by4:tensor_values",
                 "ecg_3by4:every_file_accounted_for", "leaderboard_submission:"
                 "submission_files_valid"):
        assert want in checks


def test_automation_conditions():
    d = load()
    specs = {s.key.to_user_string(): s for s in d.resolve_all_asset_specs()}
    roots = {"ecg_manifest", "holdout_manifest", "clinical_tables", "released_weights"}
    for key, spec in specs.items():
        if key in roots:
            assert spec.automation_condition is None, key
        else:
            assert spec.automation_condition is not None, key
    for m in MODELS:
        label = specs[f"{m}/acs_checkpoint"].automation_condition.get_label()
        assert label == "inputs or code changed"
    # Nothing is requested while the raw inputs have never been materialized.
    result = dg.evaluate_automation_conditions(defs=d, instance=dg.DagsterInstance.ephemeral())
    assert result.total_requested == 0
