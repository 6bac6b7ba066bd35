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


def test_decision_curve_references_can_be_told_apart():
    from matplotlib.colors import to_rgba

    from acs_pipeline.evaluation.figures import _decision, _styles
    from acs_pipeline.evaluation.inputs import display_order

    inp = synthetic_evaluation_input(n=300, seed=4)
    det = evaluate(inp, n_boot=20, seed=0).details
    prep = prepare(inp)
    names = display_order(prep, det["scores"])
    ax = _decision(prep, det, names, _styles(prep, det, names)).axes[0]
    looks = {
        line.get_label(): (to_rgba(line.get_color()), str(line.get_linestyle()))
        for line in ax.get_lines()
    }
    assert set(looks) == {*names, "treat all", "treat none"}
    assert looks["treat all"] != looks["treat none"]
    assert looks["treat all"][1] != looks["treat none"][1]  # different dashes, not just labels
    reference_colours = {looks["treat all"][0], looks["treat none"][0]}
    assert not reference_colours & {looks[n][0] for n in names}  # no predictor drawn like them
    assert {t.get_text() for t in ax.texts} == {"treat all", "treat none"}  # labelled in place
