"""Seed sweeps: the settings, the summary, a skipped sweep, and a sweep on the tiny cohort."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from acs_pipeline.cohort.build import assign_splits
from acs_pipeline.defs import seeds
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.ingest.subset import view_ids
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.conftest import env_for
from acs_pipeline_tests.tiny_training import TinyNet

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_seed_settings_are_lists_of_integers_naming_a_bad_variable():
    s = resources_from_env({"ACS_SEEDS": "0, 1,2,1", "ACS_SPLIT_SEEDS": "5",
                            "ACS_SWEEP_MODELS": "resnet18, s4"})["settings"]
    assert (s.seeds, s.split_seeds, s.sweep_models) == ([0, 1, 2], [5], ["resnet18", "s4"])
    empty = resources_from_env({})["settings"]
    assert empty.seeds == empty.split_seeds == empty.sweep_models == []
    with pytest.raises(ValueError, match="ACS_SPLIT_SEEDS must be comma-separated integers"):
        resources_from_env({"ACS_SPLIT_SEEDS": "1,two"})


def test_the_summary_counts_the_default_run_in_each_kind():
    runs = pl.DataFrame({"kind": ["default", "training_seed", "training_seed", "split_seed",
                                  "split_seed"],
                         "validation_auroc": [0.7, 0.6, 0.65, 0.5, None]})
    got = {r["kind"]: r for r in seeds.summarize(runs).iter_rows(named=True)}
    train = np.array([0.7, 0.6, 0.65])
    assert got["training_seed"]["runs"] == 3
    assert got["training_seed"]["mean_auroc"] == pytest.approx(train.mean())
    assert got["training_seed"]["sd_auroc"] == pytest.approx(train.std(ddof=1))
    assert (got["training_seed"]["min_auroc"], got["training_seed"]["max_auroc"]) == (0.6, 0.7)
    assert (got["split_seed"]["runs"], got["split_seed"]["failed"]) == (2, 1)
    assert got["training_seed"]["failed"] == 0
    assert got["split_seed"]["mean_auroc"] == pytest.approx(0.6)
    assert seeds.summarize(runs.head(1)).is_empty()


def test_without_extra_seeds_the_sweep_is_skipped(tmp_path):
    env = env_for(tmp_path / "nowhere", tmp_path / "storage", ACS_SEEDS="0")
    result = dg.materialize([seeds.seed_sweep_asset("resnet18")],
                            resources=resources_from_env(env),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success and not result.get_asset_materialization_events()
    assert not (tmp_path / "storage").exists()
    bad = env_for(tmp_path / "nowhere", tmp_path / "storage", ACS_SEEDS="1",
                  ACS_SWEEP_MODELS="resnet18,resnet19")
    with pytest.raises(dg.Failure, match=r"unknown model\(s\) \['resnet19'\]"):
        dg.materialize([seeds.seed_sweep_asset("resnet18")], resources=resources_from_env(bad),
                       instance=dg.DagsterInstance.ephemeral())


def _trainable(co: pl.DataFrame, have: list[str]) -> bool:
    from acs_pipeline.training.data import InsufficientLabelsError, check_trainable, stage_rows

    try:
        for stage in ("mace", "acs"):
            r = stage_rows(co, have, stage)
            check_trainable(r.train_y, r.val_y)
    except InsufficientLabelsError:
        return False
    return True


@pytest.mark.slow
def test_a_sweep_trains_distinct_runs_and_writes_mean_and_spread(tiny_cohort, tmp_path,
                                                                 monkeypatch):
    from acs_pipeline.definitions import defs
    from acs_pipeline.training import stages

    monkeypatch.setattr(stages, "build_model", lambda model, profile: TinyNet())
    storage = tmp_path / "storage"
    d = defs()
    data = dg.materialize(d.assets, selection=dg.AssetSelection.groups("raw", "cohort", "tensors"),
                          resources=resources_from_env(env_for(tiny_cohort, storage)),
                          instance=dg.DagsterInstance.ephemeral())
    assert data.success
    co = pl.read_parquet(storage / "tables/cohort.parquet")
    have = list(view_ids(Storage(str(storage)), "ecg_3by4"))
    # the tiny cohort is small: some split seeds leave a split too few cases to train
    ok = {k: _trainable(assign_splits(co, k), have) for k in range(1, 20)}
    good, bad = min(k for k, v in ok.items() if v), min(k for k, v in ok.items() if not v)
    env = env_for(tiny_cohort, storage, ACS_SEEDS="0,1", ACS_SPLIT_SEEDS=f"{good},{bad}",
                  ACS_SWEEP_MODELS="resnet18")
    selection = dg.AssetSelection.assets(*[f"resnet18_{a}" for a in (
        "mace_checkpoint", "acs_checkpoint", "validation_predictions", "seed_sweep")],
        "s4_seed_sweep")
    result = dg.materialize(d.assets, selection=selection, resources=resources_from_env(env),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert not result.asset_materializations_for_node("s4_seed_sweep")  # not in the list
    runs = pl.read_csv(storage / seeds.RUNS.format(model="resnet18"))
    assert runs.select("kind", "training_seed", "split_seed").rows() == [
        ("default", 0, 0), ("training_seed", 1, 0), ("split_seed", 0, good),
        ("split_seed", 0, bad)]
    assert runs["error"][:3].is_null().all() and "positive(s)" in runs["error"][3]
    assert runs["weights_sha256"][:3].n_unique() == 3 and runs["checkpoint"][:3].n_unique() == 3
    assert runs["submission"].to_list() == [True, False, False, False]
    default = pl.read_csv(storage / "predictions/resnet18/validation.csv",
                          schema_overrides={"ecg_id": pl.String})
    assert runs["validation_ecgs"][0] == runs["validation_ecgs"][1] == len(default)
    other = assign_splits(co, good).filter((pl.col("cohort") == "tested")
                                           & (pl.col("split") == "validation")
                                           & pl.col("ecg_id").is_in(have))
    assert runs["validation_ecgs"][2] == len(other)  # the split seed's own validation split
    assert set(other["ecg_id"]) != set(default["ecg_id"])
    summary = pl.read_csv(storage / seeds.SUMMARY.format(model="resnet18"))
    by = {r["kind"]: r for r in summary.iter_rows(named=True)}
    a = runs["validation_auroc"].to_numpy()
    assert by["training_seed"]["mean_auroc"] == pytest.approx(a[:2].mean())
    assert by["training_seed"]["sd_auroc"] == pytest.approx(a[:2].std(ddof=1))
    assert (by["split_seed"]["runs"], by["split_seed"]["failed"]) == (2, 1)
    assert by["split_seed"]["mean_auroc"] == pytest.approx(a[[0, 2]].mean())
    (mat,) = result.asset_materializations_for_node("resnet18_seed_sweep")
    assert "training seed 0, split seed 0" in mat.metadata["submission"].value
