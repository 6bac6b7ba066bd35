import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal
from torch import nn

import acs_pipeline
from acs_pipeline.models.hubert import (
    INPUT_SAMPLES,
    HubertBinary,
    HuBERTForECGClassification,
    HubertInputError,
    convert_weight_norm_keys,
    decimate,
    hubert_config,
    hubert_input,
    hubert_inputs,
)

REFERENCE = (Path(acs_pipeline.__file__).parent / "models" / "reference"
             / "acs_benchwork_state_dicts.json")
POS_CONV = "hubert_ecg.encoder.pos_conv_embed.conv."


@pytest.fixture(scope="module")
def smoke_model() -> HuBERTForECGClassification:
    torch.manual_seed(0)
    return HuBERTForECGClassification(hubert_config("small", smoke=True))


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_layout_equals_released_weights(size):
    ref = json.loads(REFERENCE.read_text())["models"][f"HuBERTForECGClassification_{size}"]
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        model = HuBERTForECGClassification(hubert_config(size))
    layout = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert layout == list(ref["state_dict"].items())
    assert sum(p.numel() for p in model.parameters()) == ref["parameters"]
    assert not hasattr(model.hubert_ecg, "masked_spec_embed")


def test_config_sizes_and_errors():
    cfg = hubert_config("large")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (960, 16, 12)
    assert tuple(cfg.conv_stride) == (4, 2, 2, 2, 2) and tuple(cfg.conv_kernel) == (10, 3, 3, 2, 2)
    with pytest.raises(HubertInputError, match="huge"):
        hubert_config("huge")


def test_smoke_forward_shapes_and_frames(smoke_model):
    x = torch.randn(3, INPUT_SAMPLES)
    logits = smoke_model(x)
    assert logits.shape == (3, 2)
    frames = smoke_model.hubert_ecg(x).last_hidden_state.shape[1]
    assert frames == 93  # 6000 samples through strides 4,2,2,2,2
    # the loss training uses (HubertBinary): BCE on the logit of ACS
    loss = F.binary_cross_entropy_with_logits(logits[:, 0] - logits[:, 1],
                                              torch.tensor([1.0, 0.0, 1.0]))
    loss.backward()
    assert smoke_model.classifier[0].weight.grad.abs().sum() > 0
    assert smoke_model.hubert_ecg.feature_extractor.conv_layers[0].conv.weight.grad is not None
    smoke_model.zero_grad()


def test_padding_mask_pools_only_valid_frames(smoke_model):
    smoke_model.eval()
    x = torch.randn(1, INPUT_SAMPLES)
    mask = torch.ones(1, INPUT_SAMPLES, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(smoke_model(x, attention_mask=mask), smoke_model(x))


def test_hubert_input_crops_orders_and_decimates():
    b, length = 2, 5000
    t = torch.arange(length, dtype=torch.float32)
    leads = torch.arange(1, 13, dtype=torch.float32)[:, None]
    x = (leads * 100 + 0 * t).expand(b, 12, length).clone()
    out = hubert_input(x, 0)
    assert out.shape == (b, INPUT_SAMPLES) and out.dtype == torch.float32
    assert hubert_input(x.half(), 0).dtype == torch.float32
    segments = out.view(b, 12, 500)
    # lead j occupies samples [500 j, 500 (j+1)); away from the joins it is the constant (up to
    # the Chebyshev filter's 0.05 dB passband ripple, applied twice)
    torch.testing.assert_close(
        segments[..., 100:400], (leads * 100).expand(b, 12, 300), rtol=0.015, atol=0
    )

    slow = torch.sin(2 * np.pi * 1.0 * t / 500)  # 1 Hz: passes the anti-alias filter
    x = slow.expand(b, 12, length).clone()
    start = 1234
    out = hubert_input(x, start).view(b, 12, 500)
    expected = slow[start : start + 2500 : 5]
    torch.testing.assert_close(out[0, 5, 50:450], expected[50:450], atol=0.015, rtol=0)
    torch.testing.assert_close(out[1], out[0])

    fast = torch.sin(2 * np.pi * 120.0 * t / 500)  # above the new 50-Hz Nyquist: removed
    out = hubert_input(fast.expand(1, 12, length).clone(), 0).view(12, 500)
    assert out[:, 50:450].abs().max() < 1e-2


def test_hubert_input_rejects_bad_input():
    with pytest.raises(HubertInputError, match=r"\(B, 12, L\)"):
        hubert_input(torch.zeros(2, 3, 5000), 0)
    with pytest.raises(HubertInputError, match="crop_start"):
        hubert_input(torch.zeros(1, 12, 5000), 2501)
    x = torch.zeros(2, 12, 5000)
    x[1, 4, 10] = float("nan")
    with pytest.raises(HubertInputError, match=r"rows \[1\]"):
        hubert_input(x, 0)


class CropProbe(nn.Module):
    """Logits [m, 0] with m the mean of the input: P(ACS) = sigmoid(m) depends on the crop."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.seen_training: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        m = x.mean(dim=1) + self.anchor
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def test_binary_adapter_takes_the_max_over_evenly_spaced_crops():
    t = torch.arange(5000, dtype=torch.float32)
    # row 0 rises over time (last crop best), row 1 falls (first crop best)
    x = torch.stack([(t / 5000 - 0.5).expand(12, 5000), (0.5 - t / 5000).expand(12, 5000)])
    probe = CropProbe()
    net = HubertBinary(probe).eval()
    with torch.no_grad():
        logit = net(x)
        per_crop = torch.stack([probe(hubert_input(x, s)) for s in (0, 1250, 2500)])
    assert logit.shape == (2,)
    # the logit of ACS is the difference of the two logits: its sigmoid is softmax(...)[:, 0]
    diffs = per_crop[..., 0] - per_crop[..., 1]
    torch.testing.assert_close(logit, diffs.max(dim=0).values)
    assert logit[0] == diffs[2, 0] and logit[1] == diffs[0, 1]
    torch.testing.assert_close(torch.sigmoid(logit),
                               torch.softmax(per_crop, dim=-1)[..., 0].max(dim=0).values)


def test_binary_adapter_trains_on_one_random_crop(smoke_model):
    probe = CropProbe()
    net = HubertBinary(probe).train()
    x = torch.randn(2, 12, 5000)
    torch.manual_seed(3)
    out = net(x)
    torch.manual_seed(3)
    start = int(torch.randint(0, 2501, (1,)).item())
    logits = probe(hubert_input(x, start))
    torch.testing.assert_close(out, logits[:, 0] - logits[:, 1])
    assert probe.seen_training[0] and len(probe.seen_training) == 2
    smoke = HubertBinary(smoke_model).eval()
    with torch.no_grad():
        assert smoke(torch.randn(2, 12, 5000)).shape == (2,)


def test_both_weight_norm_spellings_load(smoke_model):
    state = smoke_model.state_dict()
    assert POS_CONV + "parametrizations.weight.original0" in state
    legacy = convert_weight_norm_keys(dict(state), parametrized=False)
    assert POS_CONV + "weight_g" in legacy and POS_CONV + "weight_v" in legacy
    assert not any("parametrizations" in k for k in legacy)
    back = convert_weight_norm_keys(dict(legacy), parametrized=True)
    assert list(back) != [] and set(back) == set(state)

    x = torch.randn(2, INPUT_SAMPLES)
    smoke_model.eval()
    with torch.no_grad():
        expected = smoke_model(x)
    for spelling in (legacy, state):
        torch.manual_seed(5)
        fresh = HuBERTForECGClassification(hubert_config("small", smoke=True)).eval()
        fresh.load_state_dict(spelling)  # strict: every key matched after renaming
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), expected)


def scipy_hubert_input(x12: torch.Tensor, start: int) -> torch.Tensor:
    """The former implementation: the crop to the CPU in float64, scipy's decimate there."""
    crop = x12[:, :, start : start + 2500].reshape(len(x12), -1).double().numpy()
    out = signal.decimate(crop, 5, ftype="iir", axis=-1, zero_phase=True)
    return torch.from_numpy(np.ascontiguousarray(out)).float()


def ecg_like(b: int, seed: int) -> torch.Tensor:
    """Float16-rounded 12-lead records: noise, a baseline walk and a large offset on lead 3."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 12, 5000, generator=g) * 0.3
    x += torch.cumsum(torch.randn(b, 12, 5000, generator=g), dim=-1) * 0.01
    x[:, 3] += 4.0
    return x.half().float()


def test_device_decimation_equals_scipy_within_float_rounding():
    x = ecg_like(6, 0)
    for start in (0, 1, 777, 1250, 2500):
        crop = x[:, :, start : start + 2500].reshape(6, -1)
        want = signal.decimate(crop.double().numpy(), 5, ftype="iir", axis=-1, zero_phase=True)
        got = decimate(crop)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
        torch.testing.assert_close(hubert_input(x, start), scipy_hubert_input(x, start),
                                   rtol=0, atol=1e-6)
    crops = hubert_inputs(x, [0, 777, 2500])  # decimated in one call
    assert crops.shape == (3, 6, INPUT_SAMPLES)
    torch.testing.assert_close(crops, torch.stack([scipy_hubert_input(x, s)
                                                   for s in (0, 777, 2500)]), rtol=0, atol=1e-6)
    with pytest.raises(HubertInputError, match="multiple of 5"):
        decimate(torch.zeros(1, 3001))


def test_predictions_and_a_training_step_equal_the_scipy_pipeline(smoke_model, monkeypatch):
    import acs_pipeline.models.hubert as hubert

    x = ecg_like(4, 1)

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        net = HubertBinary(HuBERTForECGClassification(hubert_config("small", smoke=True)))
        with torch.no_grad():
            pred = net.eval()(x)  # the maximum over three crops
        net.train()
        torch.manual_seed(5)
        loss = F.binary_cross_entropy_with_logits(net(x), torch.tensor([1.0, 0.0, 1.0, 0.0]))
        loss.backward()
        grad = net.model.hubert_ecg.feature_extractor.conv_layers[0].conv.weight.grad
        return pred, loss.detach(), grad.clone()

    now = run()
    monkeypatch.setattr(hubert, "hubert_input", scipy_hubert_input)
    monkeypatch.setattr(hubert, "hubert_inputs", lambda x12, starts: torch.stack(
        [scipy_hubert_input(x12, s) for s in starts]))
    before = run()
    for a, b in zip(now, before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_paper_sizes_take_the_authors_fine_tuning_dropouts_and_smoke_keeps_its_own():
    paper, smoke = hubert_config("large"), hubert_config("small", smoke=True)
    assert (paper.hidden_dropout, paper.activation_dropout, paper.feat_proj_dropout,
            paper.final_dropout, paper.layerdrop) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert paper.attention_dropout == 0.1 and paper.classifier_hidden_size == 1024
    assert (smoke.hidden_dropout, smoke.layerdrop) == (0.1, 0.1)
    with torch.device("meta"):
        model = HuBERTForECGClassification(paper)
    drops = {n: m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert drops.pop("classifier_dropout") == 0.1 and set(drops.values()) == {0.0}


def test_freezing_trains_the_last_blocks_projection_and_head_only():
    torch.manual_seed(0)
    net = HubertBinary(HuBERTForECGClassification(hubert_config("small", smoke=True)))
    net.freeze_for_finetuning(1)
    trainable = {n.split(".")[2] if n.startswith("model.hubert_ecg") else n.split(".")[1]
                 for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"feature_projection", "encoder", "classifier"}
    enc = [n for n, p in net.named_parameters() if p.requires_grad and ".encoder." in n]
    assert enc and all(".encoder.layers.1." in n for n in enc)  # pos conv, layer norm frozen
    assert not net.model.hubert_ecg.feature_extractor._requires_grad
    net.freeze_for_finetuning(2)
    assert any(p.requires_grad for p in net.model.hubert_ecg.encoder.layers[0].parameters())
    with pytest.raises(HubertInputError, match=r"\[0, 2\]"):
        net.freeze_for_finetuning(3)


def test_pretrained_backbone_loads_drops_pretraining_keys_and_refuses_a_misfit(smoke_model):
    torch.manual_seed(1)
    target = HuBERTForECGClassification(hubert_config("small", smoke=True))
    head = {k: v.clone() for k, v in target.classifier.state_dict().items()}
    state = convert_weight_norm_keys(
        {k: v.clone() for k, v in smoke_model.hubert_ecg.state_dict().items()}, False)
    state |= {"final_proj.weight": torch.zeros(3, 32), "label_embedding.0.weight": torch.zeros(2),
              "masked_spec_embed": torch.zeros(32)}
    dropped = target.load_pretrained_backbone(state, "hubert_ecg_small.pt")
    assert dropped == ["final_proj.weight", "label_embedding.0.weight", "masked_spec_embed"]
    for k, v in smoke_model.hubert_ecg.state_dict().items():
        assert torch.equal(target.hubert_ecg.state_dict()[k], v), k
    assert all(torch.equal(target.classifier.state_dict()[k], v) for k, v in head.items())
    bad = dict(state)
    bad.pop("feature_projection.projection.weight")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(HubertInputError, match=r"right size.*1 missing.*1 unexpected"):
        target.load_pretrained_backbone(bad, "x.pt")
    large = {k: torch.zeros(1) for k in state}
    with pytest.raises(HubertInputError, match="shape mismatches"):
        target.load_pretrained_backbone(large, "hubert_ecg_large.pt")
