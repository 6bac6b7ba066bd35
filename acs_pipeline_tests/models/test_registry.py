import dataclasses
from collections.abc import Callable

import pytest
import torch
from sklearn.metrics import roc_auc_score

from acs_pipeline.models.ecg_omi import ECGOMI
from acs_pipeline.models.registry import build_model
from acs_pipeline.models.resnet1d import ResNet1D
from acs_pipeline.models.specs import (
    MODEL_NAMES,
    ModelSpec,
    UnknownModelError,
    hubert_size,
    model_spec,
)
from acs_pipeline_tests.models.reference import (
    REFERENCE_KEYS,
    reference_layout,
    reference_parameters,
    state_layout,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_names_and_specs():
    assert MODEL_NAMES == (
        "s4", "resnet18", "resnet50", "ecg_omi", "hubert", "hubert_small", "hubert_base",
        "hubert_large",
    )  # fmt: skip
    assert model_spec("s4") == ModelSpec("s4", "ecg_3by4", 32, 1e-4)
    assert set(REFERENCE_KEYS) == set(MODEL_NAMES) - {"hubert"}  # hubert: a size per profile
    for name in ("resnet18", "resnet50", "ecg_omi"):
        spec = model_spec(name)
        assert (spec.view, spec.batch_size, spec.lr) == ("ecg_3by4", 64, 1e-4)
    for name in ("hubert", "hubert_small", "hubert_base", "hubert_large"):
        spec = model_spec(name)
        assert (spec.view, spec.batch_size, spec.lr) == ("ecg_12lead", 64, 1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_spec("s4").lr = 1.0  # type: ignore[misc]


def test_unknown_name_or_profile():
    with pytest.raises(UnknownModelError, match="resnet34.*s4, resnet18"):
        model_spec("resnet34")
    with pytest.raises(UnknownModelError, match="resnet34"):
        build_model("resnet34")
    with pytest.raises(UnknownModelError, match="'fast'"):
        build_model("resnet18", "fast")


def test_reference_layouts_and_counts():
    expected_params = {
        "s4": 2_372_097,
        "resnet18": 2_254_273,
        "resnet50": 23_238_657,
        "ecg_omi": 210_783,
        "hubert_small": 30_736_514,
        "hubert_base": 93_587_586,
        "hubert_large": 188_629_890,
    }
    for name, count in expected_params.items():
        assert reference_parameters(name) == count
        layout = reference_layout(name)
        assert layout and all(isinstance(shape, list) for shape in layout.values())
    assert reference_layout("s4")["s4_layers.0.kernel.kernel.omega"] == [4097, 2]
    assert reference_layout("resnet18")["fc.4.weight"] == [1, 256]
    assert len(reference_layout("resnet50")) == 345


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "ecg_omi"])
def test_paper_profile_is_the_reference_architecture(name):
    model = build_model(name)
    assert state_layout(model) == reference_layout(name)


def test_smoke_profile_is_same_class_narrower():
    small, paper = build_model("resnet18", "smoke"), build_model("resnet18", "paper")
    assert type(small) is type(paper) is ResNet1D
    assert small.initial_conv.out_channels == 8 and small.fc[0].out_features == 32
    assert type(build_model("resnet50", "smoke")) is ResNet1D
    assert type(build_model("ecg_omi", "smoke")) is ECGOMI
    assert small.eval()(torch.randn(2, 3, 5000)).shape == (2,)


def test_builds_are_fresh_instances():
    a, b = build_model("ecg_omi"), build_model("ecg_omi")
    assert a is not b and a.fc1.weight is not b.fc1.weight


def test_s4_builders_when_available():
    s4 = pytest.importorskip("acs_pipeline.models.s4")
    assert isinstance(build_model("s4", "smoke"), s4.S4Model)
    paper = build_model("s4", "paper")
    assert sum(p.numel() for p in paper.parameters()) == reference_parameters("s4")


def test_hubert_builders_when_available():
    hubert = pytest.importorskip("acs_pipeline.models.hubert")
    model = build_model("hubert_small", "smoke")
    assert isinstance(model, hubert.HuBERTForECGClassification)
    assert sum(p.numel() for p in model.parameters()) < reference_parameters("hubert_small")


# ---------------------------------------------------------------- every model learns (smoke)

TRAINABLE = ["resnet18", "resnet50", "ecg_omi", "s4", "hubert_small"]


def _learner(name: str) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """(model, batch -> one logit per sample, input length) for a capacity check.

    Dropout is switched off; HuBERT runs in eval mode (no layer drop or time masking) on a
    fixed 5-s crop, the others in train mode (batch statistics). S4 gets 500 samples to keep
    the test short; every other model the full 5,000.
    """
    torch.manual_seed(0)
    model = build_model(name, "smoke")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout | torch.nn.Dropout1d):
            module.p = 0.0
    if name.startswith("hubert"):
        from acs_pipeline.models.hubert import hubert_input

        model.eval()

        def hubert_logit(x: torch.Tensor) -> torch.Tensor:
            logits = model(hubert_input(x, 0))
            return logits[:, 0] - logits[:, 1]

        return model, hubert_logit, 5000
    model.train()
    return model, model, 500 if name == "s4" else 5000


def _noise_batch(name: str, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    channels = 12 if name.startswith("hubert") else 3
    x = torch.randn(32, channels, length, generator=gen)
    y = torch.zeros(32)
    y[torch.randperm(32, generator=gen)[:16]] = 1.0
    return x, y


@pytest.mark.parametrize("name", TRAINABLE)
def test_one_step_lowers_the_loss_on_a_fixed_batch(name):
    model, logit, length = _learner(name)
    x, y = _noise_batch(name, length, seed=1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = loss_fn(logit(x), y)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(logit(x), y)
    assert after.item() < before.item()


@pytest.mark.parametrize("name", TRAINABLE)
def test_memorises_32_noise_samples_to_training_auroc_1(name):
    """Capacity: 32 noise ECGs with random labels are separated by Adam.

    S4 pools over time a state that averages white noise, so it needs larger steps (lr 1e-2,
    about 60 steps) than the convolutional and transformer models (lr 1e-3, under 40).
    """
    model, logit, length = _learner(name)
    x, y = _noise_batch(name, length, seed=2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    lr, steps = (1e-2, 120) if name == "s4" else (1e-3, 40)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    aucs = []
    for _ in range(steps):
        optimizer.zero_grad()
        logits = logit(x)
        loss_fn(logits, y).backward()
        optimizer.step()
        aucs.append(roc_auc_score(y.numpy(), logits.detach().numpy()))
        if aucs[-1] == 1.0:
            break
    assert aucs[0] < 0.9, aucs[0]
    assert aucs[-1] == 1.0, aucs


def test_hubert_takes_its_size_from_the_profile():
    assert [hubert_size("hubert", p) for p in ("paper", "smoke")] == ["large", "small"]
    assert hubert_size("hubert_base", "smoke") == "base"  # a sized name keeps its size
    with pytest.raises(UnknownModelError):
        hubert_size("resnet18", "paper")
    torch.manual_seed(0)
    a = build_model("hubert", "smoke").state_dict()
    torch.manual_seed(0)
    b = build_model("hubert_small", "smoke").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
