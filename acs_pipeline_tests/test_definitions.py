"""acs_pipeline/definitions.py: groups in flow order, owners and stage/model/gpu tags on every
asset, set centrally without changing what the assets are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from acs_pipeline import definitions
from acs_pipeline.definitions import FLOW, OWNERS, SIDE, annotate, defs
from acs_pipeline.defs.models.assets import MODELS
from acs_pipeline.defs.released.assets import RELEASED_MODELS


@pytest.fixture(scope="module")
def annotated() -> dg.Definitions:
    return defs()


@pytest.fixture(scope="module")
def plain() -> dg.Definitions:
    """The defs folder as loaded, before definitions.py maps the specs."""
    return dg.load_from_defs_folder(path_within_project=Path(definitions.__file__).parent)


def specs(d: dg.Definitions) -> dict[str, dg.AssetSpec]:
    return {s.key.to_user_string(): s for s in d.resolve_all_asset_specs()}


def test_groups_follow_the_flow(annotated):
    by_key = specs(annotated)
    order = {g: i for i, g in enumerate(FLOW)}
    assert {s.group_name for s in by_key.values()} == set(FLOW) | set(SIDE)
    backwards = []
    for key, spec in by_key.items():
        for dep in spec.deps:
            source = by_key[dep.asset_key.to_user_string()].group_name
            target = spec.group_name
            if source in SIDE:
                assert target in SIDE, f"{key} ({target}) reads the side branch {source}"
            elif target in SIDE:
                assert order[source] < order["models"], f"{key} reads {source}"
            elif order[source] > order[target]:
                backwards.append(f"{dep.asset_key.to_user_string()} ({source}) -> {key} ({target})")
    assert backwards == []
    assert by_key["quarantine"].group_name == "tensors"  # it reads the tensors' rejections


def test_every_asset_has_an_owner_and_stage_model_gpu_tags(annotated):
    for key, spec in specs(annotated).items():
        assert spec.owners == [OWNERS[spec.group_name]], key
        assert spec.tags["stage"] == spec.group_name, key
        assert spec.tags["gpu"] in ("true", "false"), key
        model = spec.tags.get("model")
        # a model's assets are named after it, so the graph's labels tell the models apart
        assert model is None or key.startswith(f"{model}_"), key
        assert len(spec.key.path) == 1, key
    models = {s.tags.get("model") for s in specs(annotated).values()} - {None}
    assert models == set(MODELS) | set(RELEASED_MODELS) | {"logistic_baseline"}


def test_gpu_tag_marks_what_the_gpu_jobs_run(annotated):
    by_key = specs(annotated)
    gpu = {k for k, s in by_key.items() if s.tags["gpu"] == "true"}
    layer = annotated.resolve_job_def("train").asset_layer
    train = {k.to_user_string() for k in layer.executable_asset_keys}
    assert train <= gpu  # every checkpoint
    for name in ("ingest",):
        keys = annotated.resolve_job_def(name).asset_layer.executable_asset_keys
        assert not {k.to_user_string() for k in keys} & gpu, name
    assert by_key["logistic_baseline_validation_predictions"].tags["gpu"] == "false"
    assert {f"{m}_{a}" for m in MODELS for a in ("validation_predictions", "holdout_predictions")
            } <= gpu  # fmt: skip


def test_mapping_changes_only_groups_owners_and_tags(annotated, plain):
    before, after = specs(plain), specs(annotated)
    assert set(before) == set(after)
    for key, old in before.items():
        new = after[key]
        for attribute in ("deps", "kinds", "code_version", "description", "metadata",
                          "automation_condition", "partitions_def"):
            assert getattr(new, attribute) == getattr(old, attribute), (key, attribute)
        assert {k: v for k, v in old.tags.items() if k not in ("gpu", "stage", "model")} == {
            k: v for k, v in new.tags.items() if k not in ("gpu", "stage", "model")}, key
        if old.group_name != new.group_name:
            assert key == "quarantine", key
    checks = [d.resolve_asset_graph().asset_check_keys for d in (plain, annotated)]
    assert checks[0] == checks[1]
    nodes = [{k.to_user_string(): (a.node_def.pools, getattr(a.node_def, "retry_policy", None))
              for a in d.assets for k in a.keys} for d in (plain, annotated)]  # fmt: skip
    assert nodes[0] == nodes[1]


def test_an_asset_outside_the_flow_is_refused():
    with pytest.raises(ValueError, match="stray is in group None, which has no place in the flow"):
        annotate(dg.AssetSpec("stray"))


def test_our_defs_folder_walk_loads_what_dagsters_loader_loads(plain):
    """``load_defs_folder`` (no component catalogue) against ``dg.load_from_defs_folder``."""
    ours = definitions.load_defs_folder()
    assert specs(ours) == specs(plain)
    for d in (ours, plain):
        d.get_repository_def()  # both resolve
    repo, ref = ours.get_repository_def(), plain.get_repository_def()
    assert set(repo.asset_graph.asset_check_keys) == set(ref.asset_graph.asset_check_keys)
    assert {j.name for j in repo.get_all_jobs()} == {j.name for j in ref.get_all_jobs()}
    assert {s.name for s in repo.schedule_defs} == {s.name for s in ref.schedule_defs}
    assert {s.name for s in repo.sensor_defs} == {s.name for s in ref.sensor_defs}
    assert set(ours.resources or {}) == set(plain.resources or {}) != set()
    assert ours.executor is not None and ours.executor.name == plain.executor.name


def test_loading_the_definitions_imports_no_step_only_library(tmp_path):
    """Every process that loads the code location (the CLI, the code server, a run) pays what
    the definitions import: the libraries only some steps need are imported by those steps."""
    heavy = ["boto3", "botocore", "great_expectations", "scipy", "torch", "lightning",
             "sklearn", "wfdb", "pandas"]
    code = ("import gc, sys, acs_pipeline.definitions as d; d.defs().get_repository_def(); "
            f"print(gc.get_freeze_count() > 0, *(m for m in {heavy!r} if m in sys.modules))")
    env = {**os.environ, "ACS_STORAGE_URI": str(tmp_path), "ACS_RAW_URI": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    # and what the process held before the code location loaded is frozen for the collector
    assert out.stdout.split() == ["True"]
