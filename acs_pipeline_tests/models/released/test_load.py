"""Loading one released file: formats, layout traps, strict matching, unsafe pickles."""

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from acs_pipeline.models.checkpoints import CheckpointError
from acs_pipeline.models.hubert import convert_weight_norm_keys
from acs_pipeline.models.registry import build_model
from acs_pipeline.models.released.load import ReleasedWeightsError, load_released
from acs_pipeline.models.released.predict import predict_released
from acs_pipeline.training.predict import predict_model
from acs_pipeline_tests.models.reference import reference_layout
from acs_pipeline_tests.released_fakes import (
    Exploit,
    assert_same_state,
    ecgs,
    lightning_checkpoint,
    save_hubert,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PARAMETRIZED = ("parametrizations.weight.original0", "parametrizations.weight.original1")
POS_CONV = "hubert_ecg.encoder.pos_conv_embed.conv."


@pytest.mark.parametrize("prefix", ["", "model.", "net."])
def test_resnet18_lightning_checkpoint_loads_and_predicts(tmp_path, resnet18, prefix):
    state = {prefix + k: v for k, v in resnet18.state_dict().items()}
    path = tmp_path / "resnet18.ckpt"
    torch.save(
        lightning_checkpoint(state, hyper_parameters={"channels": 32, "init_lr": 1e-4}), path
    )
    loaded = load_released("resnet18", path)
    assert_same_state(loaded.module, resnet18)
    info = loaded.info
    assert (info.name, info.registry_name, info.view) == ("resnet18", "resnet18", "ecg_3by4")
    assert info.n_params == 2_254_273
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.bytes == path.stat().st_size
    assert info.config["epoch"] == 49 and info.config["global_step"] == 1100
    assert info.config["hyper_parameters"] == {"channels": 32, "init_lr": 1e-4}
    assert info.config["state_dict_prefix"] == prefix
    json.dumps(info.to_dict())  # metadata-ready
    x = ecgs(3, 3)
    got = predict_released(loaded, x)
    with torch.no_grad():
        want = torch.sigmoid(resnet18(torch.from_numpy(x).float()).reshape(-1)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.ptp(got) > 0


def test_s4_checkpoint_with_grown_kernel_buffers_loads(tmp_path, s4_grown):
    state = dict(s4_grown.state_dict())
    omega = "s4_layers.0.kernel.kernel.omega"
    assert list(state[omega].shape) == reference_layout("s4")[omega] == [4097, 2]
    # As in the authors' files, B and P of a layer are views of one storage.
    b, p = "s4_layers.0.kernel.kernel.B", "s4_layers.0.kernel.kernel.P"
    shared = torch.cat([state[b], state[p]])
    state[b], state[p] = shared[:1], shared[1:]
    path = tmp_path / "S4.ckpt"
    hparams = {
        "d_input": 3,
        "d_output": 1,
        "d_model": 512,
        "d_state": 64,
        "n_layers": 4,
        "dropout": 0.2,
        "prenorm": False,
        "l_max": 1024,
        "init_lr": 1e-4,
    }
    torch.save(lightning_checkpoint(state, hyper_parameters=hparams), path)
    loaded = load_released("s4", path, protocol="benchmark")
    assert loaded.protocol == "benchmark"
    assert_same_state(loaded.module, s4_grown)
    for layer in loaded.module.s4_layers:
        assert layer.kernel.kernel.l_kernel == 8192
    assert loaded.info.n_params == 2_372_097
    assert loaded.info.config["hyper_parameters"]["d_model"] == 512

    # A file taken before the first forward pass ([513, 2] buffers) loads as well.
    torch.manual_seed(4)
    fresh = build_model("s4", "paper")
    torch.save(lightning_checkpoint(fresh.state_dict()), tmp_path / "s4_acs.ckpt")
    early = load_released("s4", tmp_path / "s4_acs.ckpt", protocol="benchmark")
    assert list(early.module.state_dict()[omega].shape) == [513, 2]


def test_hyper_parameters_that_change_the_network_are_refused(tmp_path):
    path = tmp_path / "s4.ckpt"
    hparams = {"d_model": 256, "prenorm": True, "init_lr": 1e-2}
    torch.save(
        lightning_checkpoint({"encoder.weight": torch.zeros(1)}, hyper_parameters=hparams), path
    )
    with pytest.raises(ReleasedWeightsError) as err:
        load_released("s4", path)
    message = str(err.value)
    assert str(path) in message
    assert "d_model=256 (ours 512)" in message and "prenorm=True (ours False)" in message
    assert "init_lr" not in message


# ------------------------------------------------------------------------------------- HuBERT


@pytest.mark.parametrize("spelling", ["legacy", "parametrized"])
def test_hubert_checkpoint_loads_with_either_weight_norm_spelling(tmp_path, hubert_small, spelling):
    state = dict(hubert_small.state_dict())
    assert POS_CONV + PARAMETRIZED[0] in state
    convert_weight_norm_keys(state, parametrized=spelling == "parametrized")
    assert (POS_CONV + "weight_g" in state) == (spelling == "legacy")
    state["hubert_ecg.masked_spec_embed"] = torch.rand(512)  # the pretraining mask token
    path = save_hubert(tmp_path / "hubert_ecg.pt", state)

    loaded = load_released("hubert", path, protocol="benchmark")
    assert "hubert_ecg" not in sys.modules  # the pickled class was never imported
    assert_same_state(loaded.module, hubert_small)
    info = loaded.info
    assert (info.registry_name, info.view, info.n_params) == (
        "hubert_small",
        "ecg_12lead",
        30_736_514,
    )
    assert info.ignored_keys == ["hubert_ecg.masked_spec_embed"]
    assert info.config["pickled_class"] == "hubert_ecg.HuBERTECGConfig"
    assert info.config["size"] == "small"
    assert info.config["weight_norm_spelling"] == spelling
    assert info.config["hubert_config"]["vocab_sizes"] == [100]
    assert info.config["checkpoint"]["best_val_loss"] == pytest.approx(0.61)
    assert info.config["checkpoint"]["target_val_auroc"] == 0.64
    json.dumps(info.to_dict())

    x = ecgs(2, 12, seed=1)
    got = predict_released(loaded, x)
    want = predict_model("hubert_small", hubert_small, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ((got > 0) & (got < 1)).all()


def test_hubert_config_checks(tmp_path):
    tiny = {"classifier.2.bias": torch.zeros(2)}
    path = save_hubert(tmp_path / "a.pt", tiny, hidden_size=640)
    with pytest.raises(
        ReleasedWeightsError,
        match=r"hidden_size 640 and "
        r"num_hidden_layers 8 is none of the released sizes",
    ):
        load_released("hubert", path)
    path = save_hubert(tmp_path / "b.pt", tiny, num_attention_heads=4, conv_bias=True)
    with pytest.raises(ReleasedWeightsError) as err:
        load_released("hubert", path)
    assert "num_attention_heads=4 (ours 8)" in str(err.value)
    assert "conv_bias=True (ours False)" in str(err.value)
    # a file without its config is named
    torch.save({"model_state_dict": tiny}, tmp_path / "c.pt")
    with pytest.raises(ReleasedWeightsError, match=r"missing \['model_config'\]"):
        load_released("hubert", tmp_path / "c.pt")


# ----------------------------------------------------------------------------- strict matching


def test_missing_extra_and_misshapen_keys_are_all_listed(tmp_path, resnet18):
    state = dict(resnet18.state_dict())
    del state["fc.4.bias"], state["bn1.running_mean"]
    state["covars_cond.0.weight"] = torch.zeros(2, 2)
    state["fc.0.weight"] = torch.zeros(256, 128)
    path = tmp_path / "resnet18.ckpt"
    torch.save(lightning_checkpoint(state), path)
    with pytest.raises(CheckpointError) as err:
        load_released("resnet18", path)
    assert str(err.value).splitlines() == [
        f"{path} does not fit ResNet1D:",
        "2 missing keys: bn1.running_mean; fc.4.bias",
        "1 unexpected keys: covars_cond.0.weight",
        "1 shape mismatches: fc.0.weight: checkpoint [256, 128] != model [256, 256]",
    ]


def test_hubert_mismatch_is_listed_too(tmp_path, hubert_small):
    state = convert_weight_norm_keys(dict(hubert_small.state_dict()), parametrized=False)
    del state["classifier.2.weight"]
    state["hubert_ecg.final_proj.weight"] = torch.zeros(100, 512)
    path = save_hubert(tmp_path / "hubert_ecg.pt", state)
    with pytest.raises(CheckpointError) as err:
        load_released("hubert", path)
    message = str(err.value)
    assert "1 missing keys: classifier.2.weight" in message
    assert "1 unexpected keys: hubert_ecg.final_proj.weight" in message


def test_wrong_format_is_named(tmp_path, resnet18):
    path = tmp_path / "resnet18.ckpt"
    torch.save({"model_state_dict": resnet18.state_dict()}, path)
    with pytest.raises(
        ReleasedWeightsError,
        match=r"needs a 'state_dict' entry; found "
        r"keys \['model_state_dict'\]",
    ):
        load_released("resnet18", path)
    with pytest.raises(ReleasedWeightsError, match="unknown released model 'resnet101'"):
        load_released("resnet101", path)
    with pytest.raises(ValueError, match="protocol 'authors_test_py' does not apply to released "
                       "resnet18; expected one of authors_prediction_py, benchmark"):
        load_released("resnet18", path, protocol="authors_test_py")


# --------------------------------------------------------------------------- unsafe pickles


@pytest.mark.parametrize("model", ["resnet18", "hubert"])
def test_pickled_payload_is_refused_named_and_never_runs(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / ("resnet18.ckpt" if model == "resnet18" else "hubert_ecg.pt")
    payload = Exploit(str(marker))
    if model == "resnet18":
        torch.save(lightning_checkpoint({}, callbacks={"evil": payload}), path)
    else:
        save_hubert(path, {}, extra={"patience_count": payload})
    with pytest.raises(CheckpointError, match=r"refusing to unpickle posix\.system") as err:
        load_released(model, path)
    assert str(path) in str(err.value)
    assert not marker.exists()
