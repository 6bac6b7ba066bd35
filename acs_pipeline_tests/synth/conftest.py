"""Cohorts shared by the synth tests (each generated once per test run)."""

from __future__ import annotations

import pytest

from acs_pipeline.synth.cohort import SynthSummary, generate


@pytest.fixture(scope="package")
def tiny(tmp_path_factory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("tiny"), n_patients=40, seed=11)


@pytest.fixture(scope="package")
def medium(tmp_path_factory) -> SynthSummary:
    """A few hundred patients with a 30 % tested share, for rates and the planted signal."""
    return generate(tmp_path_factory.mktemp("medium"), n_patients=300, seed=5, tested_fraction=0.3)
