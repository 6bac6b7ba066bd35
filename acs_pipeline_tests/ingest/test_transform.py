"""Decoding and transforming raw files into rows, in batches."""

import numpy as np
import pytest

from acs_pipeline.ingest.manifest import ecg_id_for_key
from acs_pipeline.ingest.transform import transform_rows
from acs_pipeline_tests.ingest.raw_tree import write_tree


@pytest.mark.parametrize("view", ["ecg_3by4", "ecg_12lead"])
def test_batches_across_shards_match_one_file_at_a_time(tmp_path, view):
    """Rows come out in key order whatever the batch size, rejections in their place, and each
    tensor equals the same file transformed alone."""
    files = write_tree(tmp_path / "raw")
    keys = sorted(k for k in files if ecg_id_for_key(k))
    pairs = [(k, ecg_id_for_key(k)) for k in keys]
    reads = [(k, files[k]) for k in keys]
    reads[4] = (keys[4], OSError("gone"))  # a read error mid-stream
    alone = list(transform_rows(view, pairs, iter(reads), batch=1))
    for batch in (2, 3, 64):
        rows = list(transform_rows(view, pairs, iter(reads), batch=batch))
        assert [r[0] for r in rows] == [p[1] for p in pairs]
        for (_, x, rej), (_, x1, rej1) in zip(rows, alone, strict=True):
            assert (rej is None) == (rej1 is None) and rej == rej1
            if x is not None:
                np.testing.assert_array_equal(x, x1)
    reasons = {r[2]["key"]: r[2]["reason"] for r in alone if r[2]}
    assert reasons[keys[4]] == "unreadable"
    assert reasons["ecg-waveforms-npz/aa/aa0000ffff.npz"] == "corrupt_npz"
    with pytest.raises(RuntimeError, match="expected"):
        list(transform_rows(view, pairs, iter(reads[1:] + reads[:1]), batch=2))
