"""The S4 model: the released layout (before and after its kernels grow), blocks, training."""

import copy

import pytest
import torch

from acs_pipeline.models.s4 import S4_SMOKE_KWARGS, S4Block, S4Model
from acs_pipeline.models.s4_kernel import S4InputError
from acs_pipeline_tests.models.reference import reference_entry as reference


def layout(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def paper_model() -> S4Model:
    torch.manual_seed(0)
    return S4Model()


def test_paper_layout_before_forward_equals_reference(paper_model):
    ref = reference("S4Model_before_forward")
    assert layout(paper_model) == list(ref["state_dict"].items())
    n_params = sum(p.numel() for p in paper_model.parameters())
    assert n_params == ref["parameters"] == 2_372_097


def test_grown_layout_and_reload_into_fresh_model(paper_model):
    grown = copy.deepcopy(paper_model)
    grown.grow(5000)  # what the first 5000-sample forward does, without computing kernels
    assert layout(grown) == list(reference("S4Model_after_forward")["state_dict"].items())
    kernel = grown.s4_layers[0].kernel.kernel
    assert kernel.l_kernel == 8192 and kernel.omega.shape == (4097, 2)

    fresh = S4Model()  # 513-node buffers
    fresh.load_state_dict(grown.state_dict())  # a released checkpoint holds the grown ones
    for name, value in grown.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert fresh.s4_layers[3].kernel.kernel.l_kernel == 8192
    # and back: a before-forward state dict shrinks the buffers again
    fresh.load_state_dict(paper_model.state_dict())
    assert fresh.s4_layers[0].kernel.kernel.omega.shape == (513, 2)


@pytest.mark.slow
def test_paper_forward_with_5000_samples_grows_buffers_like_reference():
    torch.manual_seed(1)
    model = S4Model().eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 5000))
    assert y.shape == (1,) and torch.isfinite(y).all()
    assert layout(model) == list(reference("S4Model_after_forward")["state_dict"].items())


def test_bidirectional_block_is_the_two_sided_convolution():
    torch.manual_seed(0)
    block = S4Block(d_model=3, d_state=8, l_max=16, dropout=0.0)
    u = torch.randn(2, 3, 20)
    with torch.no_grad():
        k0, k1 = block.kernel(20)
        y = torch.zeros_like(u)
        for t in range(20):
            for j in range(t + 1):
                y[..., t] += k0[:, j] * u[..., t - j]
            for m in range(1, 20 - t):
                y[..., t] += k1[:, m - 1] * u[..., t + m]
        y = y + u * block.D[0, :, None]
        expected = block.output_linear(torch.nn.functional.gelu(y))
        torch.testing.assert_close(block(u), expected, rtol=1e-4, atol=1e-5)


def test_smoke_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = S4Model(**S4_SMOKE_KWARGS, l_max=64)
    x = torch.randn(3, 3, 300)
    y = model(x)
    assert y.shape == (3,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(y, torch.tensor([0.0, 1.0, 1.0]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(b.grad is None for b in model.buffers())
    multi = S4Model(d_output=4, pooling=False, bidirectional=False, **S4_SMOKE_KWARGS)
    assert multi(x).shape == (3, 300, 4)


def test_eval_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = S4Model(**S4_SMOKE_KWARGS).eval()
    x = torch.randn(4, 3, 500)
    with torch.no_grad():
        both = model(x)
        single = model(x[1:2])
    torch.testing.assert_close(both[1:2], single, rtol=1e-4, atol=1e-5)


def test_bad_input_raises():
    model = S4Model(**S4_SMOKE_KWARGS)
    with pytest.raises(S4InputError, match=r"\(B, 3, L\)"):
        model(torch.randn(2, 12, 100))
