"""The pipeline through the CLI, as a new user runs it, against the authors' recipe.

``dagster asset materialize -m acs_pipeline.definitions --select
ecg_manifest,clinical_tables,cohort,ecg_3by4`` in a fresh ``DAGSTER_HOME`` (``dagster.local.yaml``
copied in, as ``make demo`` does) on a synthetic cohort: a first run, then ``--reruns`` re-runs
with nothing changed (their median); just before, the authors' recipe
(``benchmarks/ingest.py``'s ``naive_3by4``: one file at a time, per-lead mode, per-row
``filtfilt``, float64 ``.npy``) on the same files, and Dagster's floor: the same CLI on five
empty assets (``dagster_floor_s``, the median of as many re-runs), Dagster's own cost of a run on
this machine (``rerun_above_floor_s`` is what the pipeline adds to it).

All of that is one round; ``--rounds`` rounds are run, each with fresh folders, and every figure
is the median over rounds (a ratio's median is taken over the rounds' ratios, each from runs
minutes apart: the machine's speed, which drifts by half on a shared host, cancels within a
round). Prints one JSON line per executor setting (``--executors``; ``default`` is the code
location's own, no config)::

    {"bench": "pipeline_cli", "ecgs": 7512, "executor": "default", "rounds": 3,
     "first_s": .., "rerun_s": .., "recipe_s": .., "first_speedup": .., "rerun_fraction": ..,
     "dagster_floor_s": .., "rerun_above_floor_s": .., "firsts_s": [..], "reruns_s": [[..]],
     "first_speedups": [..], "rerun_fractions": [..], "bytecode_cached": true, ...}

    python benchmarks/pipeline.py --data DIR     # a cohort from `python -m acs_pipeline synth`
    python benchmarks/pipeline.py --patients 3000 --seed 7    # generated into a temp folder

Targets (2 cores, ~7.5k ECGs): ``first_speedup`` >= 3, ``rerun_fraction`` <= 0.15. The load
averages before the runs are reported: on a shared machine the figures move with it.
``bytecode_cached`` says whether the package's bytecode was compiled (``make bench`` does).
"""

from __future__ import annotations

import argparse
import importlib.util
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


def bytecode_cached(package: Path = REPO / "acs_pipeline") -> bool:
    """Whether every module of the package has cached bytecode matching its source (``make
    install`` compiles it; an editable install where PYTHONDONTWRITEBYTECODE is set has none,
    and each CLI run then compiles the package again)."""
    for source in package.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
        except FileNotFoundError:
            return False
        stat = source.stat()  # a timestamp pyc records its source's mtime and size
        if header[4:8] != bytes(4) or header[8:16] != (
                (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")):
            return False
    return True


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
    return {"first_s": first, "rerun_s": statistics.median(again), "reruns_s": again,
            "load_before_first": load, "load_before_rerun": rerun_load}


def one_round(data: Path, work: Path, names: list[str], reruns: int) -> dict[str, dict]:
    """The recipe, Dagster's floor and each executor's first run and re-runs, one after the
    other (minutes apart at most, so a change of the machine's speed hits all of them alike),
    with this round's ratios."""
    raw = data / "ed-bwh-ecg" / "v1"
    recipe_load = os.getloadavg()[0]
    recipe_s = recipe(raw, work / "recipe")
    floor_s = dagster_floor(work, reruns)
    rows = {}
    for name in names:
        row = run(data, work, name, EXECUTORS[name], reruns)
        rows[name] = {**row, "recipe_s": recipe_s, "load_before_recipe": recipe_load,
                      "dagster_floor_s": floor_s,
                      "first_speedup": recipe_s / row["first_s"],
                      "rerun_fraction": row["rerun_s"] / row["first_s"]}
    shutil.rmtree(work)  # the recipe's float64 files alone take about 1 GB a round
    return rows


def summary(rounds: list[dict]) -> dict:
    """The median over rounds of each figure (each ratio's median over rounds, not the ratio
    of medians), and every round's value under the plural key."""
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]
              if k != "reruns_s"}
    digits = {"first_speedup": 2, "rerun_fraction": 3, "rerun_s": 2, "dagster_floor_s": 2}
    out = {k: round(v, digits.get(k, 1)) for k, v in median.items()}
    out["rerun_above_floor_s"] = round(median["rerun_s"] - median["dagster_floor_s"], 2)
    for key, plural in (("first_s", "firsts_s"), ("recipe_s", "recipes_s"),
                        ("first_speedup", "first_speedups"),
                        ("rerun_fraction", "rerun_fractions")):
        out[plural] = [round(r[key], digits.get(key, 1)) for r in rounds]
    out["reruns_s"] = [[round(s, 2) for s in r["reruns_s"]] for r in rounds]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="a synth output folder (holds ed-bwh-ecg/v1)")
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of recipe, first run and re-runs; figures are their medians")
    ap.add_argument("--reruns", type=int, default=3,
                    help="no-change re-runs after each first run; rerun_s is their median")
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
        ecgs = sum(1 for _ in (data / "ed-bwh-ecg" / "v1" / "ecg-waveforms-npz").rglob("*.npz"))
        cached = bytecode_cached()
        rounds = [one_round(data, work / f"round{i}", names, args.reruns)
                  for i in range(args.rounds)]
        for name in names:
            print(json.dumps({
                "bench": "pipeline_cli", "ecgs": ecgs, "selection": SELECTION,
                "executor": name, "rounds": args.rounds,
                **summary([r[name] for r in rounds]),
                "bytecode_cached": cached, "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
