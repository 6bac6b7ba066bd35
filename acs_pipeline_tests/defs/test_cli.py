"""The `dg` CLI reads the project from `[tool.dg]` in pyproject.toml, as the README shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from acs_pipeline.definitions import defs
from acs_pipeline_tests.conftest import env_for

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


def dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    venv = str(Path(sys.executable).parents[1])
    full = {**os.environ, **env, "VIRTUAL_ENV": venv, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([str(DG), *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=300)


def test_dg_lists_and_checks_the_definitions(tiny_cohort, tmp_path) -> None:
    env = env_for(tiny_cohort, tmp_path / "storage")
    listed = dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    payload = json.loads(listed.stdout[listed.stdout.index("{"):])
    keys = {a["asset_key"] for a in payload["assets"]}
    assert keys == {k.to_user_string() for k in defs().resolve_all_asset_keys()}
    checked = dg("check", "defs", env=env)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_dg_launches_an_asset(tiny_cohort, tmp_path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**env_for(tiny_cohort, tmp_path / "storage"), "DAGSTER_HOME": str(home)}
    proc = dg("launch", "--assets", "ecg_manifest", env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "storage" / "tables" / "manifest.parquet").is_file()
