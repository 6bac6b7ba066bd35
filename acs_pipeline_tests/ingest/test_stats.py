"""Numeric tensor checks, whole or combined from parts."""

import numpy as np

from acs_pipeline.ingest.stats import MAX_ABS_MV, combine_stats, tensor_stats


def test_stats_count_non_finite_flat_and_out_of_range():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, (6, 3, 100)).astype(np.float16)
    x[1, 2] = 0.0  # a flat channel
    x[2, 0, 5] = np.nan
    x[4, 1, 7] = MAX_ABS_MV + 5
    s = tensor_stats(x, batch=4)
    assert (s.rows, s.channels, s.length) == (6, 3, 100)
    assert (s.non_finite, s.flat_channels, s.out_of_range) == (1, 1, 1) and not s.ok
    assert s.max_abs >= MAX_ABS_MV + 4


def test_combined_parts_equal_the_whole():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.5, (9, 3, 50)).astype(np.float32)
    x[7, 0, :] = 0.0
    x[3, 1, 4] = np.inf
    whole = tensor_stats(x)
    parts = [tensor_stats(x[a:b]) for a, b in ((0, 0), (0, 4), (4, 9))]
    assert combine_stats(parts) == whole
    assert combine_stats([]).rows == 0
    other = tensor_stats(np.zeros((2, 12, 50), np.float32))
    mixed = combine_stats([whole, other])
    assert (mixed.channels, mixed.length, mixed.rows) == (-1, -1, 11)
