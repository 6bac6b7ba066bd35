import pytest
import torch
from torch import nn

from acs_pipeline.models.registry import build_model
from acs_pipeline.models.resnet1d import ResNet1D, resnet18_1d, resnet50_1d
from acs_pipeline_tests.models.reference import (
    reference_layout,
    reference_parameters,
    state_layout,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stage_lengths(model: ResNet1D, x: torch.Tensor) -> dict[str, int]:
    lengths: dict[str, int] = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: lengths.__setitem__(name, out.shape[-1])
        )
        for name in ("maxpool1", "res_block1", "res_block2", "res_block3", "res_block4")
    ]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return lengths


def test_resnet18_layout_equals_reference_exactly():
    model = resnet18_1d(input_channels=3, input_length=5000, block_kernel=7, num_classes=1)
    assert list(state_layout(model).items()) == list(reference_layout("resnet18").items())
    assert n_params(model) == reference_parameters("resnet18") == 2_254_273


def test_resnet50_layout_equals_reference_exactly():
    model = resnet50_1d()
    assert list(state_layout(model).items()) == list(reference_layout("resnet50").items())
    assert n_params(model) == reference_parameters("resnet50") == 23_238_657


def test_stage_lengths_follow_the_benchmark_strides():
    x = torch.zeros(1, 3, 5000)
    assert stage_lengths(resnet18_1d(channels=4, hidden_dim=8), x) == {
        "maxpool1": 1250, "res_block1": 1250, "res_block2": 625, "res_block3": 313,
        "res_block4": 313,
    }  # fmt: skip
    assert stage_lengths(resnet50_1d(channels=4, hidden_dim=8), x) == {
        "maxpool1": 1250, "res_block1": 1250, "res_block2": 1250, "res_block3": 1250,
        "res_block4": 625,
    }  # fmt: skip


def test_resnet18_paper_and_smoke_forward_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5000)
    counts = {}
    for profile in ("paper", "smoke"):
        model = build_model("resnet18", profile)
        assert type(model) is ResNet1D
        counts[profile] = n_params(model)
        model.eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2,) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert model.train()(x).shape == (2,)  # smoke, training mode (batch statistics)
    assert counts["smoke"] < counts["paper"] / 10


def test_resnet50_paper_forward_batch_one_and_smoke():
    torch.manual_seed(0)
    model = build_model("resnet50", "paper").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 5000)).shape == (1,)
    smoke = build_model("resnet50", "smoke")
    assert smoke(torch.randn(2, 3, 5000)).shape == (2,)


def test_multiclass_head_and_bad_input():
    model = resnet18_1d(channels=4, hidden_dim=8, num_classes=3).eval()
    assert model(torch.zeros(2, 3, 1000)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(B, 3, L\)"):
        model(torch.zeros(2, 12, 1000))
    with pytest.raises(ValueError, match="4 stages"):
        ResNet1D(blocks=(1, 1, 1))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_one_adam_step_lowers_the_loss(name):
    torch.manual_seed(0)
    model = build_model(name, "smoke").train()
    x = torch.randn(4, 3, 1500)  # the network is length-agnostic; short keeps CPU time low
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))

    def loss_with_fixed_dropout() -> torch.Tensor:
        torch.manual_seed(123)  # the same dropout masks before and after the step
        return loss_fn(model(x), y)

    before = loss_with_fixed_dropout()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_with_fixed_dropout()
    assert after.item() < before.item()
