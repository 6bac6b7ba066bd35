import pytest
import torch

from acs_pipeline.models.ecg_omi import ECGOMI
from acs_pipeline.models.registry import build_model
from acs_pipeline_tests.models.reference import (
    reference_layout,
    reference_parameters,
    state_layout,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_layout_and_parameter_count_equal_reference():
    model = ECGOMI()
    assert list(state_layout(model).items()) == list(reference_layout("ecg_omi").items())
    assert sum(p.numel() for p in model.parameters()) == reference_parameters("ecg_omi")
    assert reference_parameters("ecg_omi") == 210_783
    assert model.fc1.in_features == 48 * 100 and model.fc1.out_features == 31


def test_forward_shapes_and_feature_lengths():
    torch.manual_seed(0)
    for profile in ("paper", "smoke"):
        model = build_model("ecg_omi", profile)
        assert type(model) is ECGOMI
        lengths: dict[str, tuple[int, ...]] = {}

        def record(name: str, store: dict = lengths):
            return lambda _m, _i, output: store.__setitem__(name, tuple(output.shape))

        model.conv1.register_forward_hook(record("c1"))
        model.conv2.register_forward_hook(record("c2"))
        out = model.train()(torch.randn(2, 3, 5000))
        assert out.shape == (2,)
        assert lengths == {"c1": (2, 24, 2500), "c2": (2, 48, 100)}
        with torch.no_grad():
            assert torch.isfinite(model.eval()(torch.randn(2, 3, 5000))).all()


def test_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(B, 3, 5000\)"):
        ECGOMI()(torch.zeros(1, 3, 4000))
