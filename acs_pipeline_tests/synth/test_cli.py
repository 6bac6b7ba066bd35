"""Tests of ``python -m acs_pipeline synth`` (`acs_pipeline.synth.cli`)."""

from __future__ import annotations

import argparse

from acs_pipeline.synth.cli import add_cli, run_cli


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--patients", "4", "--seed", "2"])
    assert run_cli(args) == 0
    assert "4 patients" in capsys.readouterr().out
    assert (tmp_path / "ed-bwh-ecg" / "v1" / "ecg-metadata.csv").exists()
    assert run_cli(args) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err
