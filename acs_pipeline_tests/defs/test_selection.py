"""Checkpoint selection through the graph: the cohort's selection split and its leak check, the
ACS_SELECTION setting, and which rows choose each stage's checkpoint."""

import json

import dagster as dg
import polars as pl
import pytest
from pydantic import ValidationError

from acs_pipeline.cohort import build
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.ingest.subset import view_ids
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.conftest import env_for
from acs_pipeline_tests.tiny_training import TinyNet

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_the_selection_setting_defaults_to_the_selection_split():
    assert resources_from_env({})["settings"].selection == "selection_split"
    env = {"ACS_SELECTION": "authors_validation"}
    assert resources_from_env(env)["settings"].selection == "authors_validation"
    with pytest.raises(ValidationError, match="selection_split"):
        resources_from_env({"ACS_SELECTION": "validation"})


@pytest.fixture(scope="module")
def graph(tiny_cohort, tmp_path_factory):
    """The raw, cohort and tensor groups of the tiny cohort, materialized once, with checks."""
    from acs_pipeline.definitions import defs

    storage = tmp_path_factory.mktemp("selection") / "storage"
    d = defs()
    result = dg.materialize([*d.assets, *d.asset_checks],
                            selection=dg.AssetSelection.groups("raw", "cohort", "tensors"),
                            resources=resources_from_env(env_for(tiny_cohort, storage)),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return d, storage, result


@pytest.mark.slow
def test_the_cohort_carves_selection_from_train_and_its_check_sees_every_split(graph):
    d, storage, result = graph
    co = pl.read_parquet(storage / "tables/cohort.parquet")
    (check,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "cohort_split_leaks"]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and meta["patient_ngsci_id"] == meta["waveform_sha256"] == 0
    sizes = dict(co.filter(pl.col("split").is_not_null()).group_by("cohort", "split").len()
                 .select(pl.format("{}/{}", "cohort", "split"), "len").iter_rows())
    assert meta["split_ecgs"] == sizes and meta["missing_splits"] == []
    assert {k.split("/")[1] for k in sizes} == set(build.SPLITS)
    # the report's ECGs are today's: a draw without the selection split has the same ones
    today = build.assign_splits(co, seed=0, selection_fraction=0.0)
    assert (co["split"] == "validation").equals(today["split"] == "validation")
    assert set(co.filter(pl.col("split") == "selection").join(
        today, on="ecg_id")["split_right"]) == {"train"}


@pytest.mark.slow
@pytest.mark.parametrize("selection, split", [("selection_split", "selection"),
                                              ("authors_validation", "validation")])
def test_each_stage_selects_its_checkpoint_on_the_named_split(graph, tiny_cohort, monkeypatch,
                                                              selection, split):
    from acs_pipeline.training import stages

    d, storage, _ = graph
    monkeypatch.setattr(stages, "build_model", lambda model, profile: TinyNet())
    env = env_for(tiny_cohort, storage, ACS_SELECTION=selection)
    keys = [dg.AssetKey("resnet18_mace_checkpoint"), dg.AssetKey("resnet18_acs_checkpoint")]
    result = dg.materialize(d.assets, selection=keys, resources=resources_from_env(env),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    co = pl.read_parquet(storage / "tables/cohort.parquet")
    have = list(view_ids(Storage(str(storage)), "ecg_3by4"))
    for stage, which in (("mace", "untested"), ("acs", "tested")):
        res = json.loads((storage / f"models/resnet18/{stage}/current.json").read_text())
        rows = co.filter((pl.col("cohort") == which) & (pl.col("split") == split)
                         & pl.col(stage).is_not_null() & pl.col("ecg_id").is_in(have))
        assert res["selection"] == selection and len(rows) > 0
        assert res["counts"]["selecting_ecgs"] == len(rows)
        assert res["counts"]["selecting_positives"] == int(rows[stage].sum())
        (mat,) = result.asset_materializations_for_node(f"resnet18_{stage}_checkpoint")
        assert mat.metadata["selection"].value == selection
