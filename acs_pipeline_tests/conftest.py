"""Shared fixtures: a real S3 server on loopback and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from acs_pipeline_tests.faulty_s3 import faulty_s3  # noqa: F401
from acs_pipeline_tests.s3_fixtures import s3_bucket, s3_server  # noqa: F401

TINY_PATIENTS = 250
TINY_SEED = 3


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A small synthetic cohort (generated once per test session); returns the synth root.

    A larger tested fraction than the real 5 % gives both splits enough positives to train.
    """
    from acs_pipeline.synth import cohort as synth

    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, n_patients=TINY_PATIENTS, seed=TINY_SEED, tested_fraction=0.35)
    return root


def env_for(cohort_root: Path, storage: Path, **extra: str) -> dict[str, str]:
    """The ``ACS_*`` environment that points the pipeline at a synthetic cohort."""
    return {
        "ACS_RAW_URI": str(cohort_root / "ed-bwh-ecg" / "v1"),
        "ACS_HOLDOUT_URI": str(cohort_root / "ed-bwh-ecg" / "holdout"),
        "ACS_TRUTH_URI": str(cohort_root / "synthetic-truth.csv"),
        "ACS_STORAGE_URI": str(storage),
        "ACS_PROFILE": "smoke",
        **extra,
    }


@pytest.fixture(scope="module")
def single_thread_torch():
    """One intra-op torch thread for a test module: on a shared machine, one thread is far
    faster than two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
