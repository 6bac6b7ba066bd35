"""The released-weights assets: skipped without a root, the import's metadata, the predictions
and the report rows."""

import hashlib

import dagster as dg
import polars as pl
import pytest
import torch

from acs_pipeline.defs.released import assets as released_assets
from acs_pipeline.defs.resources import PipelineSettings, resources_from_env
from acs_pipeline.io.storage import Storage
from acs_pipeline.models.released import MANIFEST, RELEASED_MODELS
from acs_pipeline_tests.conftest import env_for
from acs_pipeline_tests.released_fakes import lightning_checkpoint, paper_model

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return paper_model("resnet18", seed=1)


def released_defs() -> list:
    return [
        released_assets.released_weights,
        *[released_assets.released_predictions_asset(m) for m in RELEASED_MODELS],
    ]


def test_only_released_assets_depend_on_released_assets():
    """A skipped released asset skips the steps downstream of it in the same run: nothing
    outside the group may depend on one, so `materialize --select '*'` still runs the rest."""
    from acs_pipeline.definitions import defs

    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    group = {k for k, s in specs.items() if s.group_name == "released"}
    assert {k.to_user_string() for k in group} == {
        "released_weights",
        *[f"{m}_released_predictions" for m in RELEASED_MODELS],
    }
    for key, spec in specs.items():
        if any(d.asset_key in group for d in spec.deps):
            assert key in group, key.to_user_string()


def test_unconfigured_released_assets_are_skipped_and_the_run_succeeds(tmp_path):
    env = env_for(tmp_path / "nowhere", tmp_path / "storage")
    assert resources_from_env(env)["settings"].released_weights_uri is None
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(released_defs(), resources=resources_from_env(env), instance=instance)
    assert result.success
    assert not result.get_asset_materialization_events()
    skipped = {e.step_key for e in result.all_events if e.is_step_skipped}
    assert skipped == {f"{m}_released_predictions" for m in RELEASED_MODELS}
    logs = " ".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "no released-weights root configured (ACS_RELEASED_WEIGHTS_URI)" in logs
    assert not (tmp_path / "storage" / MANIFEST).exists()


def test_released_weights_asset_records_each_model(tmp_path, resnet18):
    root = tmp_path / "weights"
    root.mkdir()
    torch.save(lightning_checkpoint(resnet18.state_dict()), root / "resnet18.ckpt")
    env = env_for(tmp_path / "nowhere", tmp_path / "storage", ACS_RELEASED_WEIGHTS_URI=str(root))
    result = dg.materialize(
        released_defs(),
        selection="released_weights",
        resources=resources_from_env(env),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("released_weights")
    meta = {k: v.value for k, v in mat.metadata.items()}
    sha = hashlib.sha256((root / "resnet18.ckpt").read_bytes()).hexdigest()
    assert meta["resnet18_sha256"] == sha
    assert meta["resnet18_parameters"] == 2_254_273
    assert meta["resnet18_uri"] == str(root / "resnet18.ckpt")
    assert meta["resnet18_bytes"] == (root / "resnet18.ckpt").stat().st_size
    assert meta["resnet18_config"]["format"] == "lightning"
    assert meta["models"] == ["resnet18"]
    assert meta["missing"] == ["s4", "resnet50", "ecg_omi", "hubert"]
    assert (
        mat.tags["dagster/data_version"]
        == hashlib.sha256(f"resnet18:{sha}\n".encode()).hexdigest()[:16]
    )
    assert (tmp_path / "storage/models/released/resnet18/resnet18.ckpt").exists()

    # the report rows: only while a root is configured and a validation file exists
    st = Storage(str(tmp_path / "storage"))
    settings = resources_from_env(env)["settings"]
    assert released_assets.released_scores(st, settings) == []
    preds = pl.DataFrame({"ecg_id": ["b", "a"], "acs": [1, 0], "prediction": [0.7, 0.2]})
    st.write_bytes("predictions/resnet18/released_validation.csv", preds.write_csv().encode())
    (row,) = released_assets.released_scores(st, settings)
    assert row.name == "resnet18 (released, authors_prediction_py)" and row.kind == "model"
    assert "protocol authors_prediction_py" in row.lineage
    assert list(row.ecg_ids) == ["b", "a"] and row.validation.tolist() == [0.7, 0.2]
    assert sha[:12] in row.lineage and str(root) in row.lineage
    assert released_assets.released_scores(st, PipelineSettings()) == []


@pytest.mark.slow
def test_released_predictions_on_the_tiny_cohort(tiny_cohort, tmp_path, resnet18):
    """ResNet-18 only: the paper-size S4 and HuBERT-ECG take minutes per hundred ECGs on a CPU
    (their predictions are checked above); their assets must succeed without output."""
    from acs_pipeline.definitions import defs

    root = tmp_path / "weights"
    root.mkdir()
    torch.save(lightning_checkpoint(resnet18.state_dict()), root / "resnet18.ckpt")
    storage = tmp_path / "storage"
    env = env_for(tiny_cohort, storage, ACS_RELEASED_WEIGHTS_URI=str(root))
    d = defs()
    selection = dg.AssetSelection.groups("raw", "cohort", "tensors", "released")
    result = dg.materialize(
        [*d.assets, *d.asset_checks],
        selection=selection,
        resources=resources_from_env(env),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    for model in ("s4", "resnet50", "ecg_omi", "hubert"):
        assert not result.asset_materializations_for_node(f"{model}_released_predictions")

    cohort = pl.read_parquet(storage / "tables/cohort.parquet")
    val = cohort.filter((pl.col("cohort") == "tested") & (pl.col("split") == "validation"))
    holdout = len(list((tiny_cohort / "ed-bwh-ecg/holdout").rglob("*.npz")))
    for model in ("resnet18",):
        (mat,) = result.asset_materializations_for_node(f"{model}_released_predictions")
        meta = {k: v.value for k, v in mat.metadata.items()}
        v = pl.read_csv(
            storage / f"predictions/{model}/released_validation.csv",
            schema_overrides={"ecg_id": pl.String},
        )
        h = pl.read_csv(
            storage / f"predictions/{model}/released_holdout.csv",
            schema_overrides={"ecg_id": pl.String},
        )
        assert v.columns == ["ecg_id", "acs", "prediction"] and h.columns == ["ecg_id", "acs"]
        assert meta["dagster/row_count"] == len(v) == len(val) - meta["missing_tensors"]
        assert meta["holdout_rows"] == len(h) <= holdout and len(h) > 0
        assert set(v["ecg_id"]) <= set(val["ecg_id"])
        assert v["prediction"].is_between(0, 1).all() and h["acs"].is_between(0, 1).all()
        assert (
            meta["sha256"]
            == hashlib.sha256(
                (storage / f"predictions/{model}/released_validation.csv").read_bytes()
            ).hexdigest()
        )
        assert 0 <= meta["auroc"] <= 1
        assert meta["protocol"] == "authors_prediction_py"
    scores = released_assets.released_scores(
        Storage(str(storage)), resources_from_env(env)["settings"]
    )
    assert [s.name for s in scores] == ["resnet18 (released, authors_prediction_py)"]
