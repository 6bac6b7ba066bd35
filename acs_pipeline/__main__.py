"""Command line: ``python -m acs_pipeline synth|report-path``."""

from __future__ import annotations

import argparse
import sys

from acs_pipeline.synth import cli as synth_cli


def _report_path(args: argparse.Namespace) -> int:
    from acs_pipeline.io.storage import Storage

    storage = Storage(args.storage)
    rel = "reports/evaluation_report.html"
    if not storage.exists(rel):
        print(f"no report at {storage.uri(rel)}: materialize evaluation_report first",
              file=sys.stderr)
        return 1
    print(storage.uri(rel))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acs-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth_cli.add_cli(sub)
    rp = sub.add_parser("report-path", help="print the evaluation report's path or URI")
    rp.add_argument("--storage", required=True, help="the storage root (ACS_STORAGE_URI)")
    rp.set_defaults(func=_report_path)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
