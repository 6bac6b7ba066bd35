"""defs/cohort/assets.py: `clinical_tables` parses raw files, and `cohort` builds, only when
the bytes they read changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from acs_pipeline.cohort import build as cohort_lib
from acs_pipeline.cohort import tables
from acs_pipeline.defs.cohort.assets import CLINICAL, clinical_tables, cohort
from acs_pipeline.defs.common import COHORT
from acs_pipeline.defs.ingest.raw import ecg_manifest
from acs_pipeline.defs.resources import resources_from_env
from acs_pipeline_tests.conftest import env_for


def _materialize(env: dict[str, str], instance: dg.DagsterInstance) -> dict:
    result = dg.materialize([clinical_tables], resources=resources_from_env(env),
                            instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("clinical_tables")
    return {"reused": mat.metadata["reused"].value,
            "rows": mat.metadata["dagster/row_count"].value,
            "version": mat.tags["dagster/data_version"]}


def test_unchanged_raw_tables_are_not_parsed_again(tiny_cohort, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(Path(tiny_cohort) / "ed-bwh-ecg" / "v1", raw,
                    ignore=shutil.ignore_patterns("ecg-waveforms-npz"))
    env = env_for(tiny_cohort, tmp_path / "storage", ACS_RAW_URI=str(raw))
    parses = []
    real = tables.read_tables
    monkeypatch.setattr(tables, "read_tables", lambda read: parses.append(1) or real(read))
    with dg.instance_for_test() as instance:
        first = _materialize(env, instance)
        again = _materialize(env, instance)
        assert (first["reused"], again["reused"]) == (False, True) and len(parses) == 1
        assert again["version"] == first["version"] and again["rows"] == first["rows"]
        # an output gone from storage: parsed again, same tables
        (tmp_path / "storage" / CLINICAL.format(name="patient")).unlink()
        rebuilt = _materialize(env, instance)
        assert not rebuilt["reused"] and rebuilt["version"] == first["version"]
        # one raw table changed (a row fewer): parsed again, a new version
        path = raw / tables.TABLES["patient"].file
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-1]))
        changed = _materialize(env, instance)
        assert not changed["reused"] and changed["version"] != first["version"]
        assert changed["rows"] == first["rows"] - 1 and len(parses) == 3


def _cohort(env: dict[str, str], instance: dg.DagsterInstance) -> dict:
    result = dg.materialize([ecg_manifest, clinical_tables, cohort],
                            resources=resources_from_env(env), instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("cohort")
    (check,) = [c for c in result.get_asset_check_evaluations()
                if c.check_name == "cohort_split_leaks"]
    return {"reused": mat.metadata["reused"].value, "passed": check.passed,
            "check_reused": check.metadata["reused"].value,
            "split_ecgs": check.metadata["split_ecgs"].value,
            "rows": mat.metadata["dagster/row_count"].value,
            "version": mat.tags["dagster/data_version"]}


def test_a_cohort_is_not_built_again_from_the_same_inputs(tiny_cohort, tmp_path, monkeypatch):
    """The manifest's and the tables' bytes and the seed decide; the split check's result is
    recorded with the build and reported again (with ``reused``) when it is reused."""
    env = env_for(tiny_cohort, tmp_path / "storage")
    builds = []
    real = cohort_lib.build_cohort
    monkeypatch.setattr(cohort_lib, "build_cohort",
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    with dg.instance_for_test() as instance:
        first = _cohort(env, instance)
        again = _cohort(env, instance)
        assert (first["reused"], again["reused"]) == (False, True) and len(builds) == 1
        assert {k: v for k, v in again.items() if "reused" not in k} == {
            k: v for k, v in first.items() if "reused" not in k}
        assert first["passed"] and first["rows"] > 0 and again["check_reused"]
        (tmp_path / "storage" / COHORT).unlink()  # an output gone: built again, the same
        rebuilt = _cohort(env, instance)
        assert not rebuilt["reused"] and rebuilt["version"] == first["version"]
        reseeded = _cohort({**env, "ACS_SEED": "1"}, instance)  # another split draw
        assert not reseeded["reused"] and reseeded["version"] != first["version"]
        assert len(builds) == 3
