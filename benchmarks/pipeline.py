"""The pipeline through the CLI, as a new user runs it, against the authors' recipe.

``dagster asset materialize -m acs_pipeline.definitions --select
ecg_manifest,clinical_tables,cohort,ecg_3by4`` in a fresh ``DAGSTER_HOME`` (``dagster.local.yaml``
copied in, as ``make demo`` does) on a synthetic cohort: a first run, then ``--reruns`` re-runs
with nothing changed (``rerun_s`` their median, ``reruns_s`` each); in the same process, the
authors' recipe (``benchmarks/ingest.py``'s ``naive_3by4``: one file at a time, per-lead mode,
per-row ``filtfilt``, float64 ``.npy``) on the same files.

Prints one JSON line per executor setting (``--executors``; ``default`` is the code location's
own, no config)::

    {"bench": "pipeline_cli", "executor": "default", "ecgs": 7531, "first_s": ..,
     "rerun_s": .., "reruns_s": [..], "recipe_s": .., "first_speedup": recipe_s / first_s,
     "rerun_fraction": rerun_s / first_s, ...}

    python benchmarks/pipeline.py --data DIR     # a cohort from `python -m acs_pipeline synth`
    python benchmarks/pipeline.py --patients 3000 --seed 7    # generated into a temp folder

Targets (2 cores, ~7.5k ECGs): ``first_speedup`` >= 3, ``rerun_fraction`` <= 0.15. The load
average before each run is reported: on a shared machine the figures move with it. The same
CLI on five empty assets (``dagster_floor_s``, median of ``--reruns``) is Dagster's own cost of
a run on this machine; ``rerun_above_floor_s`` is what the pipeline adds to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import naive_3by4  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SELECTION = "ecg_manifest,clinical_tables,cohort,ecg_3by4"
EXECUTORS = {
    "default": None,
    "in_process": {"in_process": {}},
    "spawn": {"multiprocess": {"start_method": {"spawn": {}}}},
}


# Dagster's own floor: the same CLI on a code location of five empty assets in a chain.
FLOOR_MODULE = """import dagster as dg

assets = []
for name in "abcde":
    @dg.asset(name=name, deps=assets[-1:])
    def _empty() -> dg.MaterializeResult:
        return dg.MaterializeResult()
    assets.append(_empty)
defs = dg.Definitions(assets=assets, executor=dg.in_process_executor)
"""


def materialize(env: dict[str, str], executor: dict | None,
                module: str = "acs_pipeline.definitions", select: str = SELECTION,
                cwd: Path = REPO) -> float:
    """One CLI run of ``select`` in ``module``; its wall seconds (fails loudly on a failed run)."""
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
           module, "--select", select]
    if executor is not None:
        cmd += ["--config-json", json.dumps({"execution": {"config": executor}})]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"dagster asset materialize failed ({done.returncode})")
    return seconds


def recipe(raw: Path, out: Path) -> float:
    """The authors' recipe on every waveform file, one at a time; its wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((raw / "ecg-waveforms-npz").rglob("*.npz"))
    t0 = time.perf_counter()
    for f in files:
        try:
            naive_3by4(f, out)
        except Exception:  # noqa: BLE001  the recipe skips what it cannot read
            continue
    return time.perf_counter() - t0


def dagster_floor(work: Path, reruns: int) -> float:
    """The median wall seconds of the CLI materializing five empty assets again (a fresh
    ``DAGSTER_HOME``, the same instance settings): what any no-change run through the CLI costs
    on this machine before a step does work."""
    home, code = work / "floor" / "dagster_home", work / "floor" / "code"
    home.mkdir(parents=True)
    code.mkdir()
    shutil.copy(REPO / "dagster.local.yaml", home / "dagster.yaml")
    (code / "floor_defs.py").write_text(FLOOR_MODULE)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(code)}
    materialize(env, None, "floor_defs", "*", code)
    return statistics.median(materialize(env, None, "floor_defs", "*", code)
                             for _ in range(reruns))


def run(data: Path, work: Path, name: str, executor: dict | None, reruns: int) -> dict:
    home, storage = work / name / "dagster_home", work / name / "storage"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.local.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update(DAGSTER_HOME=str(home), ACS_RAW_URI=str(data / "ed-bwh-ecg" / "v1"),
               ACS_STORAGE_URI=str(storage), ACS_PROFILE="smoke")
    load = os.getloadavg()[0]
    first = materialize(env, executor)
    rerun_load = os.getloadavg()[0]
    again = [materialize(env, executor) for _ in range(reruns)]
    return {"executor": name, "first_s": round(first, 1),
            "rerun_s": round(statistics.median(again), 2),
            "reruns_s": [round(s, 2) for s in again],
            "load_before_first": round(load, 1), "load_before_rerun": round(rerun_load, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="a synth output folder (holds ed-bwh-ecg/v1)")
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reruns", type=int, default=3,
                    help="no-change re-runs after the first; rerun_s is their median")
    ap.add_argument("--executors", default="default",
                    help=f"comma-separated, of {sorted(EXECUTORS)}")
    args = ap.parse_args()
    names = args.executors.split(",")
    if unknown := set(names) - set(EXECUTORS):
        raise SystemExit(f"unknown executor(s) {sorted(unknown)}; expected {sorted(EXECUTORS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "data"
            subprocess.run([sys.executable, "-m", "acs_pipeline", "synth", "--out", str(data),
                            "--patients", str(args.patients), "--seed", str(args.seed)],
                           check=True, cwd=REPO, capture_output=True)
        raw = data / "ed-bwh-ecg" / "v1"
        ecgs = sum(1 for _ in (raw / "ecg-waveforms-npz").rglob("*.npz"))
        recipe_load = os.getloadavg()[0]
        recipe_s = recipe(raw, work / "recipe")
        floor_s = dagster_floor(work, args.reruns)
        for name in names:
            row = run(data, work, name, EXECUTORS[name], args.reruns)
            print(json.dumps({
                "bench": "pipeline_cli", "ecgs": ecgs, "selection": SELECTION, **row,
                "recipe_s": round(recipe_s, 1), "load_before_recipe": round(recipe_load, 1),
                "first_speedup": round(recipe_s / row["first_s"], 2),
                "rerun_fraction": round(row["rerun_s"] / row["first_s"], 3),
                "dagster_floor_s": round(floor_s, 2),
                "rerun_above_floor_s": round(row["rerun_s"] - floor_s, 2),
                "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
