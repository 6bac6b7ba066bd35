"""End to end: a tiny synthetic cohort through every asset, in process and from the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from acs_pipeline.definitions import defs
from acs_pipeline.defs.models.assets import MODELS
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline_tests.conftest import env_for

pytestmark = pytest.mark.slow


def all_assets_and_checks():
    d = defs()
    return [*d.assets, *(d.asset_checks or [])]


def materialize_all(env: dict[str, str], selection: dg.AssetSelection | None = None
                    ) -> dg.ExecuteInProcessResult:
    return dg.materialize(all_assets_and_checks(), selection=selection,
                          resources=resources_from_env(env),
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)


def meta(result: dg.ExecuteInProcessResult, key: str) -> dict:
    mats = result.asset_materializations_for_node(key.replace("/", "__"))
    assert mats, f"no materialization of {key}"
    return {k: v.value for k, v in mats[-1].metadata.items()}


def test_materialize_everything_in_process(tiny_cohort, tmp_path):
    storage = tmp_path / "storage"
    result = materialize_all(env_for(tiny_cohort, storage))
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert evals and all(e.passed for e in evals), [e for e in evals if not e.passed]

    listed = len(list((tiny_cohort / "ed-bwh-ecg/v1/ecg-waveforms-npz").rglob("*.npz")))
    m3 = meta(result, "ecg_3by4")
    assert m3["dagster/row_count"] + m3["rejected"] == listed
    html = (storage / "reports/evaluation_report.html").read_text()
    for m in MODELS:
        assert m in html
        assert meta(result, f"{m}_seed_sweep")["swept"] is False  # no seeds: no runs, no skip
        for task in ("acs", "mace"):
            sub = pl.read_csv(storage / f"submission/{task}/{m}.csv")
            assert sub.columns == ["ecg_id", "prediction"]
            assert sub["prediction"].is_between(0, 1).all()
    holdout = len(list((tiny_cohort / "ed-bwh-ecg/holdout").rglob("*.npz")))
    assert len(sub) == holdout
    table = pl.read_parquet(storage / "reports/benchmark_table.parquet")
    assert {"resnet18", "logistic_baseline"} <= set(table["model"])
    report = next(m for m in result.asset_materializations_for_node("evaluation_report")
                  if m.asset_key == dg.AssetKey("evaluation_report"))
    assert report.metadata["seed_sweeps"].value == []
    assert "seed-sweeps" not in html

    # A second run reuses every tensor shard; forced to materialize again, training retrains
    # (one model is enough to show it).
    again = materialize_all(env_for(tiny_cohort, storage),
                            selection=dg.AssetSelection.assets(
                                "ecg_3by4", "resnet18_mace_checkpoint",
                                "resnet18_acs_checkpoint"))
    assert meta(again, "ecg_3by4")["shards_computed"] == 0
    first, second = (meta(r, "resnet18_acs_checkpoint") for r in (result, again))
    assert second["work_key"] != first["work_key"] and second["resumed"] is False


def test_cli_materializes_the_graph(tiny_cohort, tmp_path):
    storage = tmp_path / "storage"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The default (multiprocess) executor; tensor shards updated in two parallel steps.
    env = {**os.environ, **env_for(tiny_cohort, storage, ACS_INGEST_WORKERS="2",
                                   ACS_INGEST_STEP_FILES="1"), "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "acs_pipeline.definitions",
         "--select", "*"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (storage / "reports/evaluation_report.html").stat().st_size > 10_000
    updates = [p.name for p in (storage / "dagster/step-values").glob("*/*")
               if p.name.startswith("ecg_3by4.ecg_3by4_update[")]
    assert len(updates) == 2, updates
    for m in MODELS:
        assert (storage / f"predictions/{m}/holdout.csv").exists()
    out = subprocess.run([sys.executable, "-m", "acs_pipeline", "report-path", "--storage",
                          str(storage)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(storage / "reports/evaluation_report.html")


def test_data_assets_with_raw_data_and_storage_on_s3(tiny_cohort, s3_server, s3_bucket):
    from acs_pipeline_tests.s3_fixtures import upload_tree

    upload_tree(s3_server, s3_bucket, "ed-bwh-ecg", tiny_cohort / "ed-bwh-ecg")
    env = {
        "ACS_RAW_URI": f"s3://{s3_bucket}/ed-bwh-ecg/v1",
        "ACS_HOLDOUT_URI": f"s3://{s3_bucket}/ed-bwh-ecg/holdout",
        "ACS_STORAGE_URI": f"s3://{s3_bucket}/storage",
        "AWS_ENDPOINT_URL": s3_server,
    }
    d = defs()
    result = dg.materialize(
        [*d.assets, *d.asset_checks], selection=dg.AssetSelection.groups("raw", "cohort",
                                                                        "tensors"),
        resources=resources_from_env(env), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    m = meta(result, "ecg_3by4")
    assert str(m["uri"]).startswith(f"s3://{s3_bucket}/storage/tensors/ecg_3by4")
    listed = len(list((tiny_cohort / "ed-bwh-ecg/v1/ecg-waveforms-npz").rglob("*.npz")))
    assert m["dagster/row_count"] + m["rejected"] == listed


def test_missing_raw_root_is_a_clear_error(tmp_path):
    env = env_for(tmp_path / "nowhere", tmp_path / "storage")
    d = defs()
    result = dg.materialize([*d.assets], selection="ecg_manifest",
                            resources=resources_from_env(env),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.event_specific_data.error.to_string()
    assert str(tmp_path / "nowhere") in message
