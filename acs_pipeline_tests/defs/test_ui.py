"""The Dagster UI end to end: ``dagster dev`` on loopback, its GraphQL API, a run, a screenshot.

Starts ``dagster dev -m acs_pipeline.definitions`` on the tiny synthetic cohort, checks through
GraphQL that every asset and asset check of the code location is there, materializes
``ecg_manifest`` and ``clinical_tables`` with the mutation the UI's "Materialize" button sends,
and takes a headless Chromium screenshot of the asset graph (skipped where no Chromium is
installed). The screenshot, the DOM and the server log are written to a pytest temp folder; the
screenshot is also copied to ``acs_pipeline_tests/artifacts/asset_graph.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acs_pipeline_tests.conftest import env_for

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 150
RUN_TIMEOUT_S = 120
STOP_GRACE_S = 10
CHEAP_SELECTION = (["ecg_manifest"], ["clinical_tables"])
REPO = Path(__file__).resolve().parents[2]
REPO_COPY = Path(__file__).parents[1] / "artifacts"
WINDOW = (1600, 1000)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--virtual-time-budget=15000",
]

LAUNCH_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status assetSelection { path } }
    ... on Error { message }
  }
}"""
RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events { __typename ... on MessageEvent { message level stepKey } }
    }
  }
}"""
WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name jobs { name } } }
          ... on PythonError { message }
        }
      }
    }
    ... on Error { message }
  }
}"""
ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name } }
      ... on Error { message }
    }
  }
}"""
CHECKS_QUERY = """
query Checks($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually } } }
  }
}"""

LATEST_MATERIALIZATIONS_QUERY = """
query Latest($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) { runId }
  }
}"""


class GraphQLError(RuntimeError):
    """The GraphQL endpoint answered with errors."""


@dataclass
class DagsterUI:
    """A running ``dagster dev``: its URL, its code location and where it writes."""

    url: str
    location: str
    storage: Path
    artifacts: Path
    log: Path
    expected_assets: set[str]
    expected_checks: set[str]

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise GraphQLError(f"GraphQL errors for {query.split()[0:2]}: {answer['errors']}")
        return answer["data"]

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """End a process group started with ``start_new_session``: SIGTERM, then SIGKILL."""
    pgid = proc.pid  # a session leader's pid is its process group id
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.poll()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without ACS_*/DAGSTER_* settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACS_", "DAGSTER_")) and k not in ("AWS_ENDPOINT_URL",)
    }
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return {**env, **extra}


def wait_for_server(ui: DagsterUI, proc: subprocess.Popen) -> None:
    """Until ``GET /server_info`` answers and the code location has loaded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited with {proc.returncode}:\n{ui.log_tail()}")
        try:
            with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as response:
                info = json.loads(response.read())
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no /server_info after {START_TIMEOUT_S} s:\n{ui.log_tail()}")
        time.sleep(1)
    assert info["dagster_version"] == info["dagster_webserver_version"]
    while True:
        entries = ui.gql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"code location not loaded: {entries}\n{ui.log_tail()}")
        time.sleep(1)
    (entry,) = entries
    loaded = entry["locationOrLoadError"]
    assert loaded["__typename"] == "RepositoryLocation", loaded
    ui.location = loaded["name"]
    (repo,) = loaded["repositories"]
    assert repo["name"] == "__repository__"
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"__ASSET_JOB", "ingest", "train", "evaluate", "full"} <= jobs, jobs


@pytest.fixture(scope="module")
def dagster_ui(tiny_cohort, tmp_path_factory) -> Iterator[DagsterUI]:
    root = tmp_path_factory.mktemp("ui")
    home, storage, artifacts = root / "dagster_home", root / "storage", root / "artifacts"
    for d in (home, storage, artifacts):
        d.mkdir()
    # the instance `make dev` sets up (its event log: acs_pipeline/deploy/sqlite_events.py)
    (home / "dagster.yaml").write_text((REPO / "dagster.local.yaml").read_text())
    port = free_port()
    env = clean_env({**env_for(tiny_cohort, storage), "DAGSTER_HOME": str(home)})
    log = artifacts / "dagster-dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "dev", "-m", "acs_pipeline.definitions", "-p", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # the code location, loaded here while the server starts
        from acs_pipeline.definitions import defs

        d = defs()
        ui = DagsterUI(
            url=f"http://127.0.0.1:{port}",
            location="",
            storage=storage,
            artifacts=artifacts,
            log=log,
            expected_assets={s.key.to_user_string() for s in d.resolve_all_asset_specs()},
            expected_checks={k.to_user_string() for k in d.resolve_asset_graph().asset_check_keys},
        )
        started = time.monotonic()
        wait_for_server(ui, proc)
        print(f"dagster dev ready in {time.monotonic() - started:.0f} s at {ui.url}")
        yield ui
    finally:
        stop_group(proc)


def test_ui_lists_every_asset_and_check(dagster_ui):
    nodes = dagster_ui.gql(ASSETS_QUERY)["assetNodes"]
    assets = {"/".join(n["assetKey"]["path"]) for n in nodes}
    checks = set()
    for n in nodes:
        found = n["assetChecksOrError"]
        assert found["__typename"] == "AssetChecks", found
        checks |= {f"{'/'.join(n['assetKey']['path'])}:{c['name']}" for c in found["checks"]}
    assert len(dagster_ui.expected_assets) >= 30 and len(dagster_ui.expected_checks) >= 10
    assert assets == dagster_ui.expected_assets
    assert checks == dagster_ui.expected_checks
    groups = {n["groupName"] for n in nodes}
    assert groups == {"raw", "cohort", "tensors", "models", "predictions", "evaluation",
                      "released"}


def run_errors(ui: DagsterUI, run_id: str) -> str:
    events = ui.gql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    return "\n".join(
        f"{e.get('stepKey')}: {e['message']}" for e in events if e.get("level") == "ERROR"
    )


def test_ui_materializes_a_cheap_selection(dagster_ui):
    ui = dagster_ui
    # as the UI's Materialize button does: the checks run in their asset's step
    # (REQUIRES_MATERIALIZATION) are launched with it
    nodes = ui.gql(CHECKS_QUERY, {"keys": [{"path": p} for p in CHEAP_SELECTION]})["assetNodes"]
    checks = [{"assetKey": {"path": n["assetKey"]["path"]}, "name": c["name"]} for n in nodes
              for c in n["assetChecksOrError"]["checks"]
              if c["canExecuteIndividually"] == "REQUIRES_MATERIALIZATION"]
    assert [c["name"] for c in checks] == ["clinical_tables_expectations"]
    params = {
        "selector": {
            "repositoryLocationName": ui.location,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": p} for p in CHEAP_SELECTION],
            "assetCheckSelection": checks,
        },
        # one process: the default multiprocess executor imports the code once more per step
        "runConfigData": {"execution": {"config": {"in_process": {}}}},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "acs/test", "value": "test_ui"}]},
    }
    launched = ui.gql(LAUNCH_MUTATION, {"executionParams": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    started, status = time.monotonic(), None
    while time.monotonic() - started < RUN_TIMEOUT_S:
        run = ui.gql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        status = run["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    seconds = time.monotonic() - started
    assert status == "SUCCESS", (
        f"run {run_id} is {status} after {seconds:.0f} s:\n"
        f"{run_errors(ui, run_id)}\n{ui.log_tail()}"
    )
    print(f"run {run_id} succeeded in {seconds:.0f} s")
    assert sorted(run["assetSelection"], key=str) == sorted(
        ({"path": p} for p in CHEAP_SELECTION), key=str
    )
    latest = ui.gql(LATEST_MATERIALIZATIONS_QUERY, {"keys": [{"path": p} for p in CHEAP_SELECTION]})
    assert {
        "/".join(n["assetKey"]["path"]): n["assetMaterializations"][0]["runId"]
        for n in latest["assetNodes"]
    } == {"ecg_manifest": run_id, "clinical_tables": run_id}
    # the run used the ACS_* environment the server was started with
    assert (ui.storage / "tables" / "manifest.parquet").stat().st_size > 0
    assert list((ui.storage / "tables" / "clinical").glob("*.parquet"))


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def run_browser(cmd: list[str], timeout_s: float = 90) -> str:
    """Run one headless Chromium command in its own process group; returns its stdout."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        stop_group(proc, grace_s=2)
    assert proc.returncode == 0, f"{cmd[0]} exited {proc.returncode}: {err.decode()[-2000:]}"
    return out.decode(errors="replace")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_ui_asset_graph_screenshot(dagster_ui):
    ui = dagster_ui
    # A fresh instance covers the page with "Join the Dagster community"; its "Skip" button
    # sends this mutation (it writes $DAGSTER_HOME/.nux/nux.yaml), so the dialog stays away.
    assert ui.gql("{ shouldShowNux }")["shouldShowNux"] is True
    assert ui.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
    assert ui.gql("{ shouldShowNux }")["shouldShowNux"] is False

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    # The global lineage with the `raw` group expanded: ecg_manifest and clinical_tables
    # (materialized above) next to holdout_manifest, the other groups collapsed.
    page = f"{ui.url}/asset-groups?expanded=global@global:raw"
    shot = ui.artifacts / "asset_graph.png"
    flags = [browser, *CHROMIUM_FLAGS]
    dom = ""
    for attempt in range(2):  # a loaded machine can need a second pass
        profile = ui.artifacts / f"chromium-profile-{attempt}"
        dom = run_browser([*flags, f"--user-data-dir={profile}", "--dump-dom", page])
        if "holdout_manifest" in dom:
            break
    (ui.artifacts / "asset_graph.html").write_text(dom)
    for name in ("ecg_manifest", "clinical_tables", "holdout_manifest", "Global asset lineage"):
        assert name in dom, f"{name!r} not rendered at {page} (DOM: {ui.artifacts})"
    for group in ("cohort", "tensors", "models", "predictions", "evaluation"):
        assert f">{group}<" in dom, group
    assert "Join the Dagster community" not in dom

    profile = ui.artifacts / "chromium-profile-shot"
    run_browser([*flags, f"--user-data-dir={profile}", f"--screenshot={shot}", page])
    assert png_size(shot) == WINDOW
    assert shot.stat().st_size > 50_000, "a blank page compresses to a few kB"
    REPO_COPY.mkdir(exist_ok=True)
    shutil.copyfile(shot, REPO_COPY / shot.name)
    print(f"screenshot: {shot} (copy: {REPO_COPY / shot.name})")



def test_ui_graph_labels_tell_the_models_apart(dagster_ui):
    """Issue 14: the `models` group's graph, rendered in the browser, labels every checkpoint
    node with its model's name (``resnet18_acs_checkpoint``), none with a bare
    ``acs_checkpoint``. A tall window keeps all ten nodes in view at full size (the graph
    renders only the nodes in view, and zoomed out it shortens long labels in the middle)."""
    from acs_pipeline.defs.models.assets import MODELS

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    ui = dagster_ui
    ui.gql("mutation { setNuxSeen }")
    page = f"{ui.url}/locations/{ui.location}/asset-groups/models"
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--window-size")]
    wanted = {f"{m}_{stage}_checkpoint" for m in MODELS for stage in ("mace", "acs")}
    labels: list[str] = []
    for attempt in range(2):
        profile = ui.artifacts / f"chromium-profile-models-{attempt}"
        dom = run_browser([browser, *flags, "--window-size=1600,2400",
                           f"--user-data-dir={profile}", "--dump-dom", page])
        (ui.artifacts / "models_graph.html").write_text(dom)
        # the text of each node's name element
        labels = re.findall(r'class="AssetNode_assetName[^"]*"[^>]*>(?:<[^>]*>)*([^<]+)<', dom)
        if wanted <= set(labels):
            break
    assert sorted(labels) == sorted(wanted), f"{page} (DOM: {ui.artifacts})"
