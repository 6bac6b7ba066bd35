"""Memory at scale: peak RSS of ingest, one training stage and one prediction step, at two sizes.

Prints one JSON line per measurement::

    python benchmarks/scale.py                 # ~3k and ~30k ECGs (1,200 and 12,000 patients)
    python benchmarks/scale.py --small 300 --large 3000        # a quicker pair
    python benchmarks/scale.py --only predict  # the prediction step again on the kept stores
    python benchmarks/scale.py --calibrate     # MB per ECG of eval-mode prediction, per model

Each step runs in a fresh process (``--step``), which reports its own peak resident set
(``VmHWM``); the parent prints ``peak_rss_mb`` per step, method and size, then ``growth`` =
large / small per step and method. Synthetic cohorts (``synth.cohort.generate``, seed 0, 20 %
tested) are kept under ``--root`` and reused. Steps, on the 3by4 view:

* ``ingest``: manifest, ``ingest_view`` (256 shards, one process), the cohort table.
* ``train``: the MACE stage of ResNet-18 under the smoke profile (``train_stage``: 256
  training ECGs sampled from the untested cohort, the untested validation split).
  ``part_by_part``: ``load_stage_data`` (the stage's ids, read part by part into a
  memory-mapped local file); baseline ``whole_view``: ``load_view`` + ``stage_data`` (the
  former way).
* ``predict``: that stage's probabilities for every ECG of the tested cohort (what
  ``validation_predictions`` does for its split; the whole cohort so that both sizes fill
  batches of 256). ``part_by_part``: ``predict_view`` (one part at a time, batches from the
  memory budget); baseline ``whole_view``: ``load_view`` + ``predict`` in batches of 256 (the
  former way).

``--calibrate`` measures, per registry model at paper widths in a fresh process, the peak RSS
of ``predict`` on batches of 2 and 10 ECGs, each from a reset high-water mark after a warm-up
batch; the growth per ECG is ``training.predict``'s ``PREDICT_MB_PER_ECG``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEW = "ecg_3by4"
MODEL = "resnet18"
STAGE = "mace"
COHORT = "tables/cohort.parquet"
RESULT = "bench/acs_result.json"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ------------------------------------------------------------------------ steps (child side)


def step_ingest(raw: Path, store: Path) -> dict:
    from acs_pipeline.cohort import build, tables
    from acs_pipeline.ingest.manifest import build_manifest
    from acs_pipeline.ingest.views import ingest_view
    from acs_pipeline.io import frames
    from acs_pipeline.io.storage import Storage

    src, st = Storage(str(raw)), Storage(str(store))
    manifest, _ = build_manifest(src)
    rep = ingest_view(src, st, manifest, VIEW, code_version="bench")
    parsed = tables.read_tables(src.read_bytes)[0]
    ok = manifest.filter(manifest["status"] == "ok")
    cohort, _ = build.build_cohort(parsed, dict(ok.select("ecg_id", "sha256").iter_rows()))
    frames.write_parquet(st, COHORT, cohort)
    return {"ecgs": len(ok), "rows": rep.rows, "parts": rep.parts}


def _torch_setup() -> None:
    import torch

    torch.set_num_threads(2)


def step_train(store: Path, method: str) -> dict:
    _torch_setup()
    from acs_pipeline.io import frames
    from acs_pipeline.io.storage import Storage
    from acs_pipeline.training import stages
    from acs_pipeline.training.data import stage_data
    from acs_pipeline.training.recipes import plan

    st = Storage(str(store))
    cohort = frames.read_parquet(st, COHORT)
    p = plan(MODEL, STAGE, "smoke", logger="none")
    with tempfile.TemporaryDirectory() as tmp:
        if method == "part_by_part":
            data = stages.load_stage_data(st, VIEW, cohort, STAGE, Path(tmp),
                                          max_train=p.max_train)
        else:
            from acs_pipeline.ingest.read import load_view

            data = stage_data(cohort, load_view(st, VIEW), STAGE, max_train=p.max_train)
        res = stages.train_stage(st, p, data, work_key=f"bench-{method}", inputs={})
    if method == "part_by_part":
        st.write_bytes(RESULT, res.to_json().encode())
    return {**data.counts(), "best_val_auroc": round(res.best_val_auroc, 4)}


def step_predict(store: Path, method: str) -> dict:
    _torch_setup()
    import polars as pl

    from acs_pipeline.io import frames
    from acs_pipeline.io.storage import Storage
    from acs_pipeline.training import stages
    from acs_pipeline.training.predict import predict
    from acs_pipeline.training.recipes import adapt

    st = Storage(str(store))
    res = stages.StageResult.from_json(st.read_bytes(RESULT))
    wanted = frames.read_parquet(st, COHORT).filter(
        pl.col("cohort") == "tested")["ecg_id"].to_list()
    if method == "part_by_part":
        ids, _ = stages.predict_view(st, {"acs": res}, VIEW, wanted)
        return {"ecgs": len(ids)}
    from acs_pipeline.ingest.read import load_view

    tset = load_view(st, VIEW)
    have = set(tset.ecg_ids.tolist())
    sub = tset.select([e for e in wanted if e in have])
    predict(adapt(res.model, stages.stage_network(st, res)), sub.x, batch_size=256)
    return {"ecgs": len(sub)}


def step_calibrate(model: str, small: int, large: int) -> dict:
    """Peak RSS of ``predict`` on a batch of ``small`` and of ``large`` ECGs, each measured from
    a reset high-water mark after a warm-up batch (weights, kernels and caches built)."""
    _torch_setup()
    import numpy as np
    import torch

    from acs_pipeline.ingest.transform import VIEWS
    from acs_pipeline.models.registry import build_model
    from acs_pipeline.models.specs import model_spec
    from acs_pipeline.training.predict import predict
    from acs_pipeline.training.recipes import adapt

    torch.manual_seed(0)
    net = adapt(model, build_model(model, "paper"))
    rng = np.random.default_rng(0)
    channels = VIEWS[model_spec(model).view]
    peaks = []
    for batch in (1, small, large):
        x = rng.normal(size=(batch, channels, 5000)).astype(np.float16)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
        predict(net, x, batch_size=batch, device="cpu")
        peaks.append(peak_rss_mb())
    return {"batch_peaks_mb": peaks[1:]}


# ----------------------------------------------------------------------- driver (parent side)


def run_step(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--step", *args], capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"step {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cohort_root(root: Path, n_patients: int) -> Path:
    from acs_pipeline.synth.cohort import generate

    out = root / f"p{n_patients}"
    raw = out / "ed-bwh-ecg" / "v1"
    if not raw.exists():
        generate(out, n_patients=n_patients, seed=0, tested_fraction=0.2, workers=2)
    return raw


def scale(root: Path, sizes: dict[str, int], only: str | None = None) -> None:
    peaks: dict[tuple[str, str, str], float] = {}
    for size, n_patients in sizes.items():
        raw = cohort_root(root, n_patients)
        store = root / f"store-p{n_patients}"  # kept for --only predict; fresh otherwise
        plan = []
        if only != "predict":
            shutil.rmtree(store, ignore_errors=True)
            plan = [("ingest", "part_by_part", ("ingest", str(raw), str(store)))]
            for method in ("part_by_part", "whole_view"):
                plan.append(("train", method, ("train", str(store), method)))
        for method in ("part_by_part", "whole_view"):
            plan.append(("predict", method, ("predict", str(store), method)))
        for step, method, args in plan:
            r = run_step(*args)
            peaks[(step, method, size)] = r["peak_rss_mb"]
            emit(bench="scale", step=step, method=method, size=size,
                 n_patients=n_patients, **r)
    for step, method, _ in sorted({(s, m, "") for s, m, _ in peaks}):
        small, large = peaks[(step, method, "small")], peaks[(step, method, "large")]
        emit(bench="scale", step=step, method=method, growth=round(large / small, 3),
             small_mb=small, large_mb=large, target="< 1.25 (train, predict part_by_part)")


def calibrate(models: list[str], small: int = 2, large: int = 10) -> None:
    for model in models:
        lo, hi = run_step("calibrate", model, str(small), str(large))["batch_peaks_mb"]
        emit(bench="predict_memory", model=model, batches=[small, large], peak_rss_mb=[lo, hi],
             mb_per_ecg=round((hi - lo) / (large - small), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "acs-scale")
    ap.add_argument("--small", type=int, default=1200, help="patients of the small cohort")
    ap.add_argument("--large", type=int, default=12000, help="patients of the large cohort")
    ap.add_argument("--calibrate", nargs="*", metavar="MODEL",
                    help="measure prediction memory per ECG (all registry models by default)")
    ap.add_argument("--only", choices=["predict"],
                    help="re-measure the prediction step on the stores of an earlier run")
    ap.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        name, *rest = a.step
        fn = {"ingest": lambda r, s: step_ingest(Path(r), Path(s)),
              "train": lambda s, m: step_train(Path(s), m),
              "predict": lambda s, m: step_predict(Path(s), m),
              "calibrate": lambda m, b1, b2: step_calibrate(m, int(b1), int(b2))}[name]
        r = fn(*rest)
        print(json.dumps({**r, "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)
        return
    if a.calibrate is not None:
        from acs_pipeline.models.specs import MODEL_NAMES

        calibrate(a.calibrate or list(MODEL_NAMES))
        return
    a.root.mkdir(parents=True, exist_ok=True)
    scale(a.root, {"small": a.small, "large": a.large}, a.only)


if __name__ == "__main__":
    main()
