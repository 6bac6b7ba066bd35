import io

import numpy as np
import pytest

from acs_pipeline.io import tensors


def test_round_trip_is_float16_view():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 5000)).astype(np.float32)
    ids = [f"ecg{i:010x}" for i in range(7)]
    buf = io.BytesIO()
    tensors.write(buf, ids, x)
    back = tensors.read(io.BytesIO(buf.getvalue()))
    assert back.x.shape == (7, 3, 5000)
    assert back.x.dtype == np.float16
    assert not back.x.flags.owndata  # a view of Arrow's buffer, no copy
    assert back.ecg_ids.tolist() == ids
    np.testing.assert_allclose(back.x, x, rtol=1e-3, atol=1e-3)
    # float16 storage: a quarter of float64's bytes (before compression).
    assert back.x.nbytes * 4 == x.astype(np.float64).nbytes


def test_select_and_concat():
    a = tensors.TensorSet(np.array(["ecg1", "ecg2"], dtype=object), np.zeros((2, 1, 4)))
    b = tensors.TensorSet(np.array(["ecg3"], dtype=object), np.ones((1, 1, 4)))
    both = tensors.concat([a, b])
    assert both.select(["ecg3", "ecg1"]).x[:, 0, 0].tolist() == [1.0, 0.0]
    with pytest.raises(tensors.TensorFileError, match="ecg9"):
        both.select(["ecg9"])


def test_bad_shapes_are_named():
    with pytest.raises(tensors.TensorFileError, match="expected an \\(N, C, L\\)"):
        tensors.to_table(["a"], np.zeros((3, 5000)))
    with pytest.raises(tensors.TensorFileError, match="2 ids for 1 tensors"):
        tensors.to_table(["a", "b"], np.zeros((1, 3, 10)))


def test_empty_file_reads_back():
    buf = io.BytesIO()
    tensors.write(buf, [], np.zeros((0, 12, 5000), dtype=np.float32))
    back = tensors.read(io.BytesIO(buf.getvalue()))
    assert back.x.shape == (0, 12, 5000)
