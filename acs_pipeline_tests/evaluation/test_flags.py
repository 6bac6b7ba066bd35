"""Tests for evaluation.flags: the any-flag OR, the flag labels and the top-k comparison."""

from __future__ import annotations

import numpy as np
import pytest

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS
from acs_pipeline.evaluation import flags as F
from acs_pipeline.evaluation.checks import MetricInputError


def test_any_flag_is_the_or_of_validated_flags():
    flags = {"st": np.array([1, 0, 0, 0]), "tw": np.array([True, False, True, False])}
    np.testing.assert_array_equal(F.any_flag(flags, 4), [True, False, True, False])
    np.testing.assert_array_equal(F.any_flag(list(flags.values()), 4), [True, False, True, False])
    with pytest.raises(MetricInputError, match="flag 'st' has 4 values, expected 5"):
        F.any_flag(flags, 5)
    with pytest.raises(MetricInputError, match="only 0/1"):
        F.any_flag({"st": np.array([0, 2])}, 2)
    with pytest.raises(MetricInputError, match="no classical flags"):
        F.any_flag({}, 4)


def test_flag_labels_cover_the_cohort_flags():
    assert list(F.FLAG_LABELS) == list(CLASSICAL_FLAGS)
    assert F.flag_label("has_st_eleva") == "ST elevation flag"
    assert F.flag_label(F.ANY_FLAG) == F.ANY_FLAG


def test_classical_comparison_counts():
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])  # top-3: idx 0, 1, 3
    flags = {"st": np.array([1, 0, 0, 0, 0, 0]), "tw": np.array([0, 0, 1, 1, 0, 0])}
    c = F.classical_comparison(y, s, flags)
    assert (c["n_model_only"], c["n_both"], c["n_classical_only"], c["n_neither"]) == (1, 2, 1, 2)
    assert c["share_flagged_no_classical"] == pytest.approx(1 / 3)
    assert c["n_tp"] == 2 and c["share_tp_no_classical"] == pytest.approx(1 / 2)


def test_chance_shares_hand_computed_and_equal_random_rankings():
    y = np.array([1, 1, 1, 0, 0, 0])
    flags = {"st": np.array([1, 0, 0, 0, 0, 0]), "tw": np.array([0, 0, 1, 1, 0, 0])}
    c = F.classical_comparison(y, np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3]), flags)
    assert c["chance_flagged_no_classical"] == pytest.approx(3 / 6)  # ECGs 1, 4, 5
    assert c["chance_tp_no_classical"] == pytest.approx(1 / 3)  # of positives 0, 1, 2: ECG 1
    # what random rankings give on average (the chance reference is an expectation)
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=300) < 0.4).astype(int)
    flags = {"a": rng.uniform(size=300) < 0.3, "b": (rng.uniform(size=300) < 0.2) & (y == 1)}
    runs = [F.classical_comparison(y, rng.permutation(300), flags) for _ in range(3000)]
    c = runs[0]
    for key in ("flagged_no_classical", "tp_no_classical"):
        mean = np.mean([r[f"share_{key}"] for r in runs])
        assert mean == pytest.approx(c[f"chance_{key}"], abs=0.005), key
    assert c["chance_flagged_no_classical"] != pytest.approx(c["chance_tp_no_classical"], abs=0.02)
