"""Tests for evaluation.checks: bad input raises MetricInputError with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from acs_pipeline.evaluation.calibration import calibration
from acs_pipeline.evaluation.checks import MetricInputError
from acs_pipeline.evaluation.ranking import (
    auprc,
    auroc,
    bootstrap_auroc_ci,
    delong_ci,
    topk_metrics,
    youden_threshold,
)


@pytest.mark.parametrize(
    "fn",
    [auroc, delong_ci, auprc, youden_threshold, topk_metrics, bootstrap_auroc_ci],
)
def test_single_class_raises_clear_error(fn):
    with pytest.raises(MetricInputError, match=r"needs both classes.*all 5 labels are negatives"):
        fn(np.zeros(5), np.arange(5.0))


def test_bad_inputs():
    with pytest.raises(MetricInputError, match="only 0/1"):
        auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match="2 non-finite"):
        auroc([0, 1, 1, 0], [0.1, np.nan, 0.3, np.inf])
    with pytest.raises(MetricInputError, match="has 3 values but y has 4"):
        auroc([0, 1, 1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match=r"probabilities in \[0, 1\]"):
        calibration([0, 1], [0.5, 1.5])
    with pytest.raises(MetricInputError, match="1-D"):
        auroc(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(MetricInputError, match="k must be"):
        topk_metrics([0, 1], [0.1, 0.2], k=3)
