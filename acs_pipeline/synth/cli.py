"""Command line: ``python -m acs_pipeline synth --out DIR --patients N --seed S``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acs_pipeline.synth import SynthError
from acs_pipeline.synth.cohort import generate


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("synth", help="write a synthetic ed-bwh-ecg cohort")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--patients", type=int, default=800, help="number of patients (v1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=int, default=None, help="holdout ECGs (default 10 %%)")
    p.add_argument(
        "--tested-fraction",
        type=float,
        default=0.05,
        help="share of included ECGs from cath-tested visits",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; prints a one-line summary; returns 0 or 2."""
    try:
        s = generate(
            args.out,
            n_patients=args.patients,
            seed=args.seed,
            n_holdout=args.holdout,
            tested_fraction=args.tested_fraction,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except SynthError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {s.n_patients} patients, {s.n_ecgs} ECGs ({s.n_duplicates} duplicates) to "
        f"{s.dataset_dir}, {s.n_holdout} holdout ECGs to {s.holdout_dir}, truth {s.truth_path} "
        f"in {s.seconds:.1f} s"
    )
    return 0
