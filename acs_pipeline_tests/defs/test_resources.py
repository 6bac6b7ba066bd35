"""Settings never fall back silently: the definitions load without ACS_*, and a step that needs
an unset root fails at its start, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from acs_pipeline.definitions import defs
from acs_pipeline.defs.resources import MissingSettingError, resources_from_env
from acs_pipeline_tests.ingest.raw_tree import write_tree

REPO = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ACS_* (as a container or a shell outside make)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACS_", "DAGSTER_"))}
    return {**env, **extra}


def _manifest(env: dict[str, str]) -> dg.ExecuteInProcessResult:
    asset = next(a for a in defs().assets if dg.AssetKey("ecg_manifest") in a.keys)
    return dg.materialize([asset], resources=resources_from_env(env))


def test_nothing_defaults_to_the_demo_cohort() -> None:
    res = resources_from_env({})
    assert res["storage"].root is None and res["raw"].root is None
    assert res["raw"].holdout_root is None and res["settings"].truth_uri is None
    with pytest.raises(MissingSettingError, match="ACS_STORAGE_URI is not set"):
        res["storage"].get()
    with pytest.raises(MissingSettingError, match="ACS_RAW_URI is not set"):
        res["raw"].source()
    assert resources_from_env({"ACS_RAW_URI": ""})["raw"].root is None  # empty = unset


@pytest.mark.parametrize("unset", ["ACS_STORAGE_URI", "ACS_RAW_URI"])
def test_a_step_fails_at_start_naming_the_unset_variable(tmp_path, unset: str) -> None:
    write_tree(tmp_path / "raw")
    env = {"ACS_RAW_URI": str(tmp_path / "raw"), "ACS_STORAGE_URI": str(tmp_path / "storage")}
    del env[unset]
    with pytest.raises(dg.DagsterResourceFunctionError) as info:  # before the asset's code ran
        _manifest(env)
    assert isinstance(info.value.__cause__, MissingSettingError)
    assert f"{unset} is not set" in str(info.value.__cause__)
    assert not (tmp_path / "storage").exists()
    result = _manifest({"ACS_RAW_URI": str(tmp_path / "raw"),
                        "ACS_STORAGE_URI": str(tmp_path / "storage")})
    assert result.success and (tmp_path / "storage" / "tables" / "manifest.parquet").is_file()


def test_the_definitions_load_without_settings() -> None:
    """`dagster asset list` (what a code server does at start) needs no ACS_* variable."""
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster), "asset", "list", "-m", "acs_pipeline.definitions"],
                          cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ecg_manifest" in proc.stdout and "leaderboard_submission" in proc.stdout
