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
                "logistic_baseline_validation_predictions", "evaluation_report",
                "benchmark_table", "leaderboard_submission", "released_weights",
                *[f"{m}_released_predictions" for m in RELEASED_MODELS]}
    for m in MODELS:
        expected |= {f"{m}_{a}" for a in ("mace_checkpoint", "acs_checkpoint",
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
        assert pools[f"{m}_acs_checkpoint"] == {"gpu"}
        assert pools[f"{m}_mace_checkpoint"] == {"gpu"}
        deps = {d.asset_key.to_user_string() for d in specs[f"{m}_acs_checkpoint"].deps}
        assert f"{m}_mace_checkpoint" in deps


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
        label = specs[f"{m}_acs_checkpoint"].automation_condition.get_label()
        assert label == "inputs or code changed"
    # Nothing is requested while the raw inputs have never been materialized.
    result = dg.evaluate_automation_conditions(defs=d, instance=dg.DagsterInstance.ephemeral())
    assert result.total_requested == 0


def test_settings_that_change_what_is_trained_change_the_training_code_versions(monkeypatch):
    """ACS_SELECTION, ACS_PROFILE, ACS_SEED (and the paper HuBERT's pretrained start) are part of
    the trained assets' code versions, so changing one marks the checkpoints stale in the UI and
    for ``code_version_changed`` automation; other assets keep theirs."""

    def versions() -> dict[str, str | None]:
        return {s.key.to_user_string(): s.code_version for s in load().resolve_all_asset_specs()}

    for var in ("ACS_SELECTION", "ACS_PROFILE", "ACS_SEED", "ACS_HUBERT_PRETRAINED_URI"):
        monkeypatch.delenv(var, raising=False)
    base = versions()
    trained = {f"{m}_{a}" for m in MODELS for a in ("mace_checkpoint", "acs_checkpoint",
                                                    "seed_sweep")}
    for var, value in (("ACS_SELECTION", "authors_validation"), ("ACS_PROFILE", "paper"),
                       ("ACS_SEED", "7")):
        monkeypatch.setenv(var, value)
        changed = {k for k, v in versions().items() if v != base[k]}
        assert changed == trained, var
        monkeypatch.delenv(var)
    monkeypatch.setenv("ACS_PROFILE", "paper")
    paper = versions()
    monkeypatch.setenv("ACS_HUBERT_PRETRAINED_URI", "s3://weights/hubert_ecg_large.pt")
    changed = {k for k, v in versions().items() if v != paper[k]}
    assert changed == {"hubert_mace_checkpoint", "hubert_acs_checkpoint", "hubert_seed_sweep"}
