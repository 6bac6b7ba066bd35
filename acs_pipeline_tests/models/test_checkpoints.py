import io
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn
from transformers import HubertConfig

from acs_pipeline.models.checkpoints import (
    RELEASED_CHECKPOINT_GLOBALS,
    CheckpointError,
    PickledObject,
    extract_state_dict,
    load_checkpoint,
    match_state_dict,
)
from acs_pipeline.models.registry import build_model
from acs_pipeline_tests.released_fakes import Exploit, hubert_ecg_module

pytestmark = pytest.mark.usefixtures("single_thread_torch")


class Harmless:
    pass


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", "smoke")


def test_os_system_via_reduce_is_refused_and_named(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": small_model().state_dict(), "payload": Exploit(str(marker))}, path)
    for allowed in ((), RELEASED_CHECKPOINT_GLOBALS):
        with pytest.raises(CheckpointError, match=r"refusing to unpickle posix\.system") as err:
            load_checkpoint(path, allowed=allowed)
        assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match=r"posix\.system"):
        load_checkpoint(path.read_bytes())
    assert not marker.exists()


def test_unlisted_class_is_refused_and_named(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"model_state_dict": {}, "extra": Harmless()}, path)
    with pytest.raises(CheckpointError, match=r"test_checkpoints\.Harmless"):
        load_checkpoint(path)
    # a trusted type is rebuilt as itself
    assert isinstance(load_checkpoint(path, allowed=[Harmless])["extra"], Harmless)


@pytest.fixture
def hubert_checkpoint(tmp_path):
    """A file laid out like the released HuBERT-ECG ones, pickling hubert_ecg.HuBERTECGConfig."""
    with hubert_ecg_module() as config_class:
        config = config_class(hidden_size=512, num_hidden_layers=8, vocab_sizes=(2,))
        state = {"head.weight": torch.arange(6.0).reshape(2, 3)}
        path = tmp_path / "hubert_ecg_small.pt"
        torch.save({"model_config": config, "model_state_dict": state}, path)
    # loading must not need the original class
    return path


def test_hubert_config_needs_allow_list_and_becomes_inert_stand_in(hubert_checkpoint):
    with pytest.raises(CheckpointError, match=r"hubert_ecg\.HuBERTECGConfig"):
        load_checkpoint(hubert_checkpoint)
    obj = load_checkpoint(hubert_checkpoint, allowed=RELEASED_CHECKPOINT_GLOBALS)
    config = obj["model_config"]
    assert isinstance(config, PickledObject)
    assert config.pickled_name == "hubert_ecg.HuBERTECGConfig"
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_sizes) == (512, 8, [2])
    assert config["conv_stride"] == config.to_dict()["conv_stride"]
    assert "hubert_ecg" not in sys.modules
    state = extract_state_dict(obj)
    assert torch.equal(state["head.weight"], torch.arange(6.0).reshape(2, 3))


def test_hand_written_lightning_checkpoint_loads_and_matches(tmp_path):
    source = small_model()
    ckpt = {
        "epoch": 7,
        "global_step": 420,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
        "hyper_parameters": {"name": "resnet18", "lr": 1e-4, "covars": []},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "callbacks": {"ModelCheckpoint{'monitor': 'val_auc'}": {"best_score": torch.tensor(0.7)}},
    }
    path = tmp_path / "best.ckpt"
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 7 and loaded["hyper_parameters"]["name"] == "resnet18"
    state = extract_state_dict(loaded)
    assert set(state) == set(source.state_dict())  # 'model.' stripped
    torch.manual_seed(1)
    target = build_model("resnet18", "smoke")
    assert not torch.equal(target.initial_conv.weight, source.initial_conv.weight)
    match_state_dict(target, state)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_real_lightning_checkpoint_loads(tmp_path):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self, lr: float = 1e-3):
            super().__init__()
            self.save_hyperparameters()
            self.model = build_model("resnet18", "smoke")

        def training_step(self, batch, _idx):
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 500), torch.tensor([0.0, 1, 0, 1]))
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    path = tmp_path / "real.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_checkpoint(path)
    assert loaded["global_step"] == 1 and loaded["hyper_parameters"]["lr"] == 1e-3
    target = build_model("resnet18", "smoke")
    match_state_dict(target, extract_state_dict(loaded))
    assert torch.equal(target.fc[4].weight, module.model.fc[4].weight)


def test_plain_state_dict_from_bytes_and_file_object():
    model = small_model()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    for source in (buffer.getvalue(), io.BytesIO(buffer.getvalue())):
        state = extract_state_dict(load_checkpoint(source))
        assert torch.equal(state["fc.4.weight"], model.fc[4].weight)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not tensors: epoch"):
        extract_state_dict({"epoch": 3, "w": torch.zeros(1)})
    with pytest.raises(ValueError, match="'module.Class'"):
        load_checkpoint(tmp_path / "list.pt", allowed=["NoModule"])


def test_mismatch_lists_every_problem_sorted():
    model = small_model()
    state = dict(model.state_dict())
    del state["fc.4.bias"], state["bn1.weight"]
    state["extra.b"] = torch.zeros(1)
    state["extra.a"] = torch.zeros(1)
    state["fc.0.weight"] = torch.zeros(5, 5)
    state["initial_conv.weight"] = torch.zeros(1, 3, 15)
    with pytest.raises(CheckpointError) as err:
        match_state_dict(model, state, source="best.ckpt")
    message = str(err.value)
    assert message.splitlines() == [
        "best.ckpt does not fit ResNet1D:",
        "2 missing keys: bn1.weight; fc.4.bias",
        "2 unexpected keys: extra.a; extra.b",
        "2 shape mismatches: fc.0.weight: checkpoint [5, 5] != model [32, 64]; "
        "initial_conv.weight: checkpoint [1, 3, 15] != model [8, 3, 15]",
    ]


def test_paper_weights_do_not_fit_smoke_model():
    with pytest.raises(CheckpointError, match=r"shape mismatches: bn1\.bias"):
        match_state_dict(build_model("ecg_omi"), build_model("resnet18").state_dict())


def _respell(raw: bytes, old: bytes, new: bytes) -> bytes:
    """A torch.save zip whose pickle names ``old`` as ``new`` (protocol-2 GLOBALs are text)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            dst.writestr(item, data)
    return out.getvalue()


def test_numpy_scalars_and_dtypes_load_in_both_spellings():
    buf = io.BytesIO()
    torch.save({"best_val_loss": np.float64(0.6125), "step": np.int64(7000),
                "dtype": np.dtype("float32"), "dtype_class": type(np.dtype("float64"))}, buf)
    raw = buf.getvalue()
    names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(raw))
    wanted = {"numpy._core.multiarray.scalar", "numpy.dtype", "numpy.dtypes.Float64DType"}
    assert wanted <= set(names)
    old = _respell(raw, b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(
        io.BytesIO(old))
    for data in (raw, old):
        obj = load_checkpoint(data)
        assert type(obj["best_val_loss"]) is np.float64 and obj["best_val_loss"] == 0.6125
        assert type(obj["step"]) is np.int64 and obj["step"] == 7000
        assert obj["dtype"] == np.dtype("float32") and obj["dtype_class"] is np.dtypes.Float64DType
    with pytest.raises(CheckpointError, match=r"numpy\._core\.multiarray\.scalar"):
        load_checkpoint(raw, numpy_scalars=False)


def test_object_numpy_scalars_stay_refused(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"x": np.float64(1.0)}, buf)
    # an object-dtype scalar would hand back whatever it wraps: respell the dtype to 'O'
    raw = buf.getvalue()
    evil = _respell(raw, b"X\x02\x00\x00\x00f8", b"X\x02\x00\x00\x00O8")
    with pytest.raises(CheckpointError, match=r"ObjectDType"):
        load_checkpoint(evil)
    assert not marker.exists()
    torch.save({"x": np.array([Exploit(str(marker))], dtype=object)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match=r"refusing to unpickle"):
        load_checkpoint(tmp_path / "obj.pt")
    assert not marker.exists()


def test_plain_transformers_hubert_config_is_inert_data():
    buf = io.BytesIO()
    torch.save({"model_config": HubertConfig(hidden_size=512, num_hidden_layers=8)}, buf)
    with pytest.raises(CheckpointError, match=r"transformers\.models\.hubert\.configuration_hub"):
        load_checkpoint(buf.getvalue())
    config = load_checkpoint(buf.getvalue(), allowed=RELEASED_CHECKPOINT_GLOBALS)["model_config"]
    assert isinstance(config, PickledObject) and not isinstance(config, HubertConfig)
    assert config.pickled_name.endswith(".HubertConfig")
    assert (config.hidden_size, config.num_hidden_layers) == (512, 8)
