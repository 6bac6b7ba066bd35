"""Seed sweeps: the settings, the summary, a sweep without seeds, the sweeps the report reads,
and a sweep on the tiny cohort shown in the report."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from acs_pipeline.cohort.build import assign_splits
from acs_pipeline.defs import seeds
from acs_pipeline.defs.models.assets import MODELS
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline.ingest.subset import view_ids
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.conftest import env_for
from acs_pipeline_tests.evaluation.fixtures import html_rows
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


def _runs_file(sha: str = "a" * 64, **changes) -> pl.DataFrame:
    """A runs file as ``seed_sweep`` writes it: the default run, a training seed, a failed
    split seed."""
    runs = pl.DataFrame({
        "kind": ["default", "training_seed", "split_seed"], "training_seed": [0, 1, 0],
        "split_seed": [0, 0, 4], "validation_ecgs": [60, 60, None],
        "validation_positives": [20, 20, None], "validation_auroc": [0.7, 0.6, None],
        "selecting_auroc": [0.72, 0.64, None], "selection": ["selection_split"] * 2 + [None],
        "weights_sha256": [sha, "b" * 64, None], "checkpoint": ["c0", "c1", None],
        "submission": [True, False, False],
        "error": [None, None, "cannot train: 2 positive(s) in validation"]})
    return runs.with_columns(**changes)


def test_without_extra_seeds_the_sweep_materializes_and_removes_the_old_sweep(tmp_path):
    storage = tmp_path / "storage"
    st = Storage(str(storage))
    old = {rel.format(model=m) for rel in (seeds.RUNS, seeds.SUMMARY) for m in ("resnet18", "s4")}
    for rel in old:
        frames.write_csv(st, rel, _runs_file())
    env = env_for(tmp_path / "nowhere", storage, ACS_SEEDS="0")
    result = dg.materialize([seeds.seed_sweep_asset("resnet18")],
                            resources=resources_from_env(env),
                            instance=dg.DagsterInstance.ephemeral())
    (mat,) = result.asset_materializations_for_node("resnet18_seed_sweep")
    assert mat.metadata["swept"].value is False
    assert "no seed other than ACS_SEED (0)" in mat.metadata["reason"].value
    assert sorted(mat.metadata["removed"].value) == sorted(
        st.uri(r) for r in old if "resnet18" in r)
    assert set(st.list("reports/seed_sweep/")) == {r for r in old if "s4" in r}  # not its own
    version = mat.tags["dagster/data_version"]
    outside = env_for(tmp_path / "nowhere", storage, ACS_SEEDS="0,1", ACS_SWEEP_MODELS="resnet18")
    again = dg.materialize([seeds.seed_sweep_asset("s4")], resources=resources_from_env(outside),
                           instance=dg.DagsterInstance.ephemeral())
    (mat,) = again.asset_materializations_for_node("s4_seed_sweep")
    assert "s4 is not in ACS_SWEEP_MODELS ['resnet18']" in mat.metadata["reason"].value
    assert mat.tags["dagster/data_version"] == version  # nothing swept: the same version
    assert not st.list("reports/seed_sweep/")
    bad = env_for(tmp_path / "nowhere", storage, ACS_SEEDS="1",
                  ACS_SWEEP_MODELS="resnet18,resnet19")
    with pytest.raises(dg.Failure, match=r"unknown model\(s\) \['resnet19'\]"):
        dg.materialize([seeds.seed_sweep_asset("resnet18")], resources=resources_from_env(bad),
                       instance=dg.DagsterInstance.ephemeral())


def test_the_report_reads_only_sweeps_of_the_current_checkpoints(tmp_path):
    st = Storage(str(tmp_path / "storage"))
    current = {m: f"{i}" * 64 for i, m in enumerate(MODELS)}
    frames.write_csv(st, seeds.RUNS.format(model="resnet18"), _runs_file(current["resnet18"]))
    frames.write_csv(st, seeds.RUNS.format(model="s4"), _runs_file("f" * 64))  # another's
    frames.write_csv(st, seeds.RUNS.format(model="resnet50"),
                     _runs_file(current["resnet50"]).drop("selecting_auroc"))
    frames.write_csv(st, seeds.RUNS.format(model="ecg_omi"), _runs_file(
        current["ecg_omi"], error=pl.lit(None, pl.String)))  # a failed run without its error
    shown, left_out = seeds.current_sweeps(st, current)
    (sweep,) = shown
    assert sweep.model == "resnet18" and sweep.source == st.uri(seeds.RUNS.format(
        model="resnet18"))
    assert [(r.kind, r.training_seed, r.split_seed, r.validation_auroc, r.selecting_auroc)
            for r in sweep.runs] == [("default", 0, 0, 0.7, 0.72), ("training_seed", 1, 0, 0.6,
                                                                    0.64),
                                     ("split_seed", 0, 4, None, None)]
    assert sweep.runs[2].error.startswith("cannot train")
    assert set(left_out) == {"s4", "resnet50", "ecg_omi"}  # hubert has no file: not mentioned
    assert "is not the current s4_acs_checkpoint (weights sha256 333333333333)" in left_out["s4"]
    assert "no column(s) ['selecting_auroc']" in left_out["resnet50"]
    assert "no validation_auroc and no error" in left_out["ecg_omi"]


def test_the_report_runs_after_every_sweep():
    from acs_pipeline.definitions import defs

    specs = {s.key.to_user_string(): s for s in defs().resolve_all_asset_specs()}
    deps = {d.asset_key.to_user_string() for d in specs["evaluation_report"].deps}
    assert {f"{m}_seed_sweep" for m in MODELS} <= deps


def _trainable(co: pl.DataFrame, have: list[str]) -> bool:
    from acs_pipeline.training.data import InsufficientLabelsError, check_trainable, stage_rows

    try:
        for stage in ("mace", "acs"):
            r = stage_rows(co, have, stage)
            check_trainable(r.train_y, r.val_y)
    except InsufficientLabelsError:
        return False
    return True


def _report(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [m for m in result.asset_materializations_for_node("evaluation_report")
            if m.asset_key == dg.AssetKey("evaluation_report")]


@pytest.mark.slow
def test_a_sweep_trains_distinct_runs_writes_mean_and_spread_and_the_report_shows_them(
        tiny_cohort, tmp_path, monkeypatch):
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
    (unswept,) = result.asset_materializations_for_node("s4_seed_sweep")  # not in the list
    assert unswept.metadata["swept"].value is False
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

    # The report shows the sweep. The other models' ACS checkpoints and validation scores are
    # resnet18's, copied (training them is not what this test is about); their sweeps, outside
    # ACS_SWEEP_MODELS, materialize without runs in the report's own run.
    st = Storage(str(storage))
    for m in MODELS:
        for rel in ("models/{m}/acs/current.json", "predictions/{m}/validation.csv"):
            if m != "resnet18":
                st.write_bytes(rel.format(m=m), st.read_bytes(rel.format(m="resnet18")))
    others = [f"{m}_seed_sweep" for m in MODELS if m != "resnet18"]
    report = dg.AssetSelection.assets("evaluation_report", "benchmark_table")
    shown = dg.materialize(d.assets, selection=report | dg.AssetSelection.assets(
        "logistic_baseline_validation_predictions", *others), resources=resources_from_env(env),
        instance=dg.DagsterInstance.ephemeral())
    assert shown.success
    (mat,) = _report(shown)
    assert mat.metadata["seed_sweeps"].value == ["resnet18"]
    assert mat.metadata["seed_sweeps_left_out"].value == {}
    html = (storage / "reports/evaluation_report.html").read_text()
    block = html[html.index('id="sweep-resnet18"'):]
    block = block[:block.index("</div>")]
    assert html.count('id="sweep-') == 1 and "other validation ECGs" in html

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    assert html_rows(block[:block.index("sweep-runs")]) == [
        [k.replace("_", " "), str(by[k]["runs"]), str(by[k]["failed"]),
         *[num(by[k][f"{s}_auroc"]) for s in ("mean", "sd", "min", "max")]]
        for k in ("training_seed", "split_seed")]
    assert html_rows(block[block.index("sweep-runs"):]) == [
        [r["kind"].replace("_", " ") + (" (submission)" if r["kind"] == "default" else ""),
         str(r["training_seed"]), str(r["split_seed"]), num(r["validation_auroc"]),
         num(r["selecting_auroc"]), r["error"] or ""] for r in runs.iter_rows(named=True)]

    # Without seeds the sweep removes its files: the next report shows no sweep.
    plain = dg.materialize(d.assets, selection=report | dg.AssetSelection.assets(
        "resnet18_seed_sweep", *others), resources=resources_from_env(env_for(tiny_cohort,
                                                                               storage)),
        instance=dg.DagsterInstance.ephemeral())
    assert plain.success
    assert not (storage / seeds.RUNS.format(model="resnet18")).exists()
    (mat,) = _report(plain)
    assert mat.metadata["seed_sweeps"].value == []
    assert "seed-sweeps" not in (storage / "reports/evaluation_report.html").read_text()
