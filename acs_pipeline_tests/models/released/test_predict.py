"""Predicting with a loaded released model."""

import numpy as np
import pytest
import torch

from acs_pipeline.models.released.load import ReleasedWeightsError, load_released
from acs_pipeline.models.released.predict import predict_released
from acs_pipeline_tests.released_fakes import ecgs, lightning_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.mark.slow
def test_s4_benchmark_protocol_predicts_with_the_kernel_as_stored(tmp_path, s4_grown):
    torch.save(lightning_checkpoint(s4_grown.state_dict()), tmp_path / "s4.ckpt")
    loaded = load_released("s4", tmp_path / "s4.ckpt", protocol="benchmark")
    x = ecgs(2, 3, seed=5)
    got = predict_released(loaded, x)
    with torch.no_grad():
        want = torch.sigmoid(s4_grown(torch.from_numpy(x).float())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_predict_checks_the_view(tmp_path, resnet18):
    torch.save(lightning_checkpoint(resnet18.state_dict()), tmp_path / "resnet18.ckpt")
    loaded = load_released("resnet18", tmp_path / "resnet18.ckpt")
    with pytest.raises(
        ReleasedWeightsError,
        match=r"\(N, 3, L\) \(ecg_3by4\), got "
        r"\(2, 12, 5000\)",
    ):
        predict_released(loaded, ecgs(2, 12))
    assert predict_released(loaded, ecgs(0, 3)).shape == (0,)
