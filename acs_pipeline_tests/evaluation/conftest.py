"""The evaluation of the synthetic input, computed once for the evaluation tests."""

from __future__ import annotations

import pytest

from acs_pipeline.evaluation.evaluate import EvaluationResult, evaluate
from acs_pipeline.evaluation.inputs import EvaluationInput
from acs_pipeline_tests.evaluation.fixtures import synthetic_evaluation_input


@pytest.fixture(scope="package")
def inp() -> EvaluationInput:
    return synthetic_evaluation_input(n=600, seed=1)


@pytest.fixture(scope="package")
def result(inp) -> EvaluationResult:
    return evaluate(inp, n_boot=200, seed=0)
