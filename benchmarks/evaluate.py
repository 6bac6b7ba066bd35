"""Benchmark of the evaluation: prints ONE JSON line.

- ``seconds``: ``evaluate`` (compute only) on the synthetic input -- six predictors (five
  networks and the logistic regression) plus the oracle and the four flags, 1,295 ECGs, 2,000
  bootstrap replicates per predictor; median of ``--repeats`` runs after one warm-up.
- ``seconds_with_html``: the same plus ``render_html`` (matplotlib figures, Jinja2).
- ``bootstrap_seconds``: the vectorised stratified bootstrap alone for the six predictors.
- ``baseline_seconds``: the same bootstrap written the usual way, a Python loop over replicates
  calling ``sklearn.metrics.roc_auc_score`` once per replicate; ``ratio`` =
  baseline_seconds / bootstrap_seconds.
- ``table_keys_unique``: every benchmark-table row has its own (model, metric, kind).
- ``ci_max_abs_diff``: the largest difference between the loop's and the vectorised percentile
  CI endpoints (different random draws, so small but not zero).

Run: ``.venv/bin/python benchmarks/evaluate.py [--n 1295] [--n-boot 2000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acs_pipeline.evaluation.evaluate import TABLE_KEY, evaluate  # noqa: E402
from acs_pipeline.evaluation.ranking import bootstrap_auroc_ci  # noqa: E402
from acs_pipeline.evaluation.report import render_html  # noqa: E402
from acs_pipeline_tests.evaluation.fixtures import synthetic_evaluation_input  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _loop_bootstrap_ci(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        aucs[b] = roc_auc_score(y[idx], s[idx])
    lo, hi = np.quantile(aucs, [0.025, 0.975])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1295)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    inp = synthetic_evaluation_input(n=args.n, seed=args.seed)
    y = np.asarray(inp.y)
    six = [ms for ms in inp.scores if ms.kind in ("model", "baseline")]

    result = evaluate(inp, n_boot=args.n_boot, seed=args.seed)  # warm-up
    seconds = _median_time(lambda: evaluate(inp, n_boot=args.n_boot, seed=args.seed), args.repeats)
    seconds_html = _median_time(
        lambda: render_html(inp, evaluate(inp, n_boot=args.n_boot, seed=args.seed)),
        args.repeats,
    )
    html_bytes = len(render_html(inp, result).encode())

    vec_cis = {}

    def vectorised():
        for ms in six:
            vec_cis[ms.name] = bootstrap_auroc_ci(y, ms.validation, args.n_boot, args.seed)

    bootstrap_seconds = _median_time(vectorised, args.repeats)

    loop_cis = {}
    t0 = time.perf_counter()
    for ms in six:
        loop_cis[ms.name] = _loop_bootstrap_ci(y, ms.validation, args.n_boot, args.seed)
    baseline_seconds = time.perf_counter() - t0

    diff = max(
        abs(a - b) for name in vec_cis for a, b in zip(vec_cis[name], loop_cis[name], strict=True)
    )
    print(
        json.dumps(
            {
                "benchmark": "evaluate",
                "n_ecgs": int(y.size),
                "positives": int(y.sum()),
                "predictors": len(six),
                "oracle": any(ms.kind == "oracle" for ms in inp.scores),
                "flags": len(inp.flags),
                "n_boot": args.n_boot,
                "repeats": args.repeats,
                "seconds": round(seconds, 4),
                "seconds_with_html": round(seconds_html, 4),
                "html_bytes": html_bytes,
                "table_rows": result.table.height,
                "table_keys_unique": not result.table.select(TABLE_KEY).is_duplicated().any(),
                "bootstrap_seconds": round(bootstrap_seconds, 4),
                "baseline_seconds": round(baseline_seconds, 4),
                "ratio": round(baseline_seconds / bootstrap_seconds, 1),
                "ci_max_abs_diff": round(diff, 4),
                "target_seconds": 2.0,
                "meets_target": seconds < 2.0,
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
