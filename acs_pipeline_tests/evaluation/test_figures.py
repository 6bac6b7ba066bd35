"""The report's figures: one PNG per panel."""

import base64

import pytest

from acs_pipeline.evaluation.evaluate import evaluate
from acs_pipeline.evaluation.figures import figures
from acs_pipeline.evaluation.inputs import prepare
from acs_pipeline_tests.evaluation.fixtures import synthetic_evaluation_input


@pytest.fixture(scope="module")
def figs() -> dict[str, str]:
    inp = synthetic_evaluation_input(n=400, seed=3)
    result = evaluate(inp, n_boot=50, seed=0)
    return figures(prepare(inp), result.details)


def test_every_panel_is_a_png(figs):
    assert set(figs) == {"roc", "pr", "calibration", "cumulative", "decision", "venn"}
    for name, b64 in figs.items():
        data = base64.b64decode(b64)
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 5_000, name  # a drawn figure, not an empty canvas
