"""Module-scoped source models: what the released files hold."""

import pytest
import torch

from acs_pipeline_tests.released_fakes import paper_model


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return paper_model("resnet18", seed=1)


@pytest.fixture(scope="module")
def s4_grown() -> torch.nn.Module:
    """The paper S4 after its kernels grew for 5000 samples (what the released file holds)."""
    model = paper_model("s4", seed=2)
    model.grow(5000)
    return model


@pytest.fixture(scope="module")
def hubert_small() -> torch.nn.Module:
    return paper_model("hubert_small", seed=3)
