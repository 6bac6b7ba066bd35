"""The authors' prediction protocols against independent re-implementations of their scripts
(``02_HuBERT/code/test.py`` as ``test.sh`` runs it, ``01_ResNet_S4/prediction.py``), on files
saved as the authors' scripts save them."""

import numpy as np
import pytest
import torch
from scipy import signal

from acs_pipeline.io.tensors import TensorSet
from acs_pipeline.models.registry import build_model
from acs_pipeline.models.released.load import load_released
from acs_pipeline.models.released.predict import predict_released, predict_released_parts
from acs_pipeline.models.released.protocols import authors_crop_starts
from acs_pipeline_tests.released_fakes import (
    assert_same_state,
    ecgs,
    lightning_checkpoint,
    paper_model,
    save_hubert,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


# ------------------------------------------------------------------ test.py, written out again


def script_random_crop(ecg: torch.Tensor, crop_size: int) -> torch.Tensor:
    """test.py's ``random_crop``: one ``np.random.randint`` per ECG of the batch."""
    batch_size = ecg.size(0)
    ecg = ecg.view(batch_size, 12, -1)
    new_ecg = torch.zeros(batch_size, 12, crop_size)
    for i in range(batch_size):
        start = np.random.randint(0, ecg.size(-1) - crop_size)
        new_ecg[i] = ecg[i, :, start : start + crop_size]
    return new_ecg.view(batch_size, -1)


def script_test_py(net, x: np.ndarray, aggregation: str, batch_size: int = 64) -> np.ndarray:
    """test.py --tta --downsampling_factor=5 over ``x`` in order: the global numpy generator
    seeded with 42, ECGDataset's 10-s window and decimation of the flattened record, n_augs 3,
    sigmoid, aggregation over the crops, column 0."""
    saved = np.random.get_state()
    torch.manual_seed(42)
    np.random.seed(42)
    probs_pos: list[float] = []
    try:
        for s in range(0, len(x), batch_size):
            items = []
            for ecg_data in x[s : s + batch_size].astype(np.float32):
                start = np.random.randint(0, ecg_data.shape[1] - 5000 + 1)
                ecg_data = ecg_data[:, start : start + 5000].reshape(-1)
                items.append(torch.from_numpy(signal.decimate(ecg_data, 5).copy()).float())
            ecg = torch.stack(items)
            augs = [script_random_crop(ecg, 2500 // 5) for _ in range(3)]
            probs = []
            for aug_ecg in augs:
                with torch.no_grad():
                    probs.append(torch.sigmoid(net(aug_ecg)))
            stacked = torch.stack(probs)
            agg = stacked.mean(dim=0) if aggregation == "mean" else stacked.max(dim=0).values
            probs_pos.extend(agg.numpy()[:, 0])
    finally:
        np.random.set_state(saved)
    return np.asarray(probs_pos, dtype=np.float64)


def test_crop_starts_follow_test_py_draws_across_batches():
    saved = np.random.get_state()
    np.random.seed(42)
    want = np.empty((3, 130), dtype=np.int64)
    try:
        for s in range(0, 130, 64):
            b = min(64, 130 - s)
            for _ in range(b):
                np.random.randint(0, 1)
            for aug in range(3):
                for i in range(b):
                    want[aug, s + i] = np.random.randint(0, 1000 - 500)
    finally:
        np.random.set_state(saved)
    got = authors_crop_starts(130)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() < 500 and len(np.unique(got)) > 100


@pytest.mark.parametrize(
    ("protocol", "aggregation"), [("authors_test_py", "max"), ("authors_test_py_mean", "mean")]
)
def test_hubert_authors_test_py_matches_the_script(tmp_path, hubert_small, protocol, aggregation):
    path = save_hubert(tmp_path / "hubert_ecg.pt", dict(hubert_small.state_dict()))
    loaded = load_released("hubert", path, protocol=protocol)
    assert loaded.protocol == protocol
    x = ecgs(5, 12, seed=7)
    want = script_test_py(hubert_small, x, aggregation)
    got = predict_released(loaded, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # parts that arrive one at a time: scored in arrival order, returned sorted by id
    ids = np.array(["e4", "e3", "e2", "e1", "e0"], dtype=object)
    parts = [TensorSet(ids[:2], x[:2]), TensorSet(ids[2:], x[2:])]
    got_ids, got_parts = predict_released_parts(loaded, parts)
    assert got_ids.tolist() == ["e0", "e1", "e2", "e3", "e4"]
    np.testing.assert_allclose(got_parts, want[::-1], rtol=0, atol=1e-5)
    if aggregation == "max":
        bench = predict_released(load_released("hubert", path, protocol="benchmark"), x)
        assert not np.allclose(bench, got, rtol=0, atol=1e-7)  # another protocol, other numbers


def test_hubert_file_from_finetune_random_init_loads(tmp_path, hubert_small):
    path = save_hubert(tmp_path / "hubert_ecg.pt", dict(hubert_small.state_dict()),
                       random_init=True)
    loaded = load_released("hubert", path)
    assert_same_state(loaded.module, hubert_small)
    config = loaded.info.config
    assert config["pickled_class"].endswith("configuration_hubert.HubertConfig")
    assert config["checkpoint"]["best_val_loss"] == 0.61
    assert type(config["checkpoint"]["best_val_loss"]) is float


# ------------------------------------------------------------- prediction.py, written out again


def script_prediction_py_s4(state: dict, x: np.ndarray) -> np.ndarray:
    """prediction.py for ``--model_name state``: a fresh S4Model, ``load_from_checkpoint``'s
    ``param.data = state_dict[name].data`` for every parameter and buffer, then
    ``F.sigmoid(model(ecgs))``. The authors' kernel computes ``dA^L`` afresh at every doubling,
    so the fresh model's cached power (from its random init) is dropped."""
    torch.manual_seed(123)
    model = build_model("s4", "paper")
    for name, param in model.named_parameters():
        param.data = state[name].data
    for name, buf in model.named_buffers():
        buf.data = state[name].data
    for layer in model.s4_layers:
        layer.kernel.kernel._power_cache = None
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x).float())).double().numpy()


def test_s4_authors_prediction_py_regrows_the_kernel_as_the_script(tmp_path, s4_grown):
    state = s4_grown.state_dict()
    assert list(state["s4_layers.0.kernel.kernel.omega"].shape) == [4097, 2]
    path = tmp_path / "s4.ckpt"
    torch.save(lightning_checkpoint(state, hyper_parameters={"d_model": 512, "l_max": 1024}),
               path)
    loaded = load_released("s4", path)
    assert loaded.protocol == "authors_prediction_py"
    x = ecgs(2, 3, seed=9)
    want = script_prediction_py_s4({k: v.clone() for k, v in state.items()}, x)
    got = predict_released(loaded, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    as_stored = predict_released(load_released("s4", path, protocol="benchmark"), x)
    assert np.abs(as_stored - got).max() > 1e-4  # the regrowth changes the function
    c = "s4_layers.0.kernel.kernel.C"
    assert not torch.equal(loaded.module.state_dict()[c], state[c])
    assert all(layer.kernel.kernel.l_kernel == 8192 for layer in loaded.module.s4_layers)


@pytest.mark.parametrize(
    ("model", "file_name", "hparams", "n_params"),
    [
        ("resnet50", "resnet50_1d.ckpt", {"channels": 64, "hidden_dim": 512, "block_kernel": 7},
         23_238_657),
        ("ecg_omi", "ECG_OMI.ckpt", {"input_channels": 3, "input_length": 5000}, 210_783),
    ],
)
def test_resnet50_and_ecg_omi_import_like_resnet18(tmp_path, model, file_name, hparams, n_params):
    source = paper_model(model, seed=11)
    path = tmp_path / file_name
    torch.save(
        lightning_checkpoint(source.state_dict(),
                             hyper_parameters={**hparams, "num_classes": 1, "init_lr": 1e-4}),
        path,
    )
    loaded = load_released(model, path)
    assert loaded.protocol == "authors_prediction_py"
    assert_same_state(loaded.module, source)
    assert (loaded.info.registry_name, loaded.info.view) == (model, "ecg_3by4")
    assert loaded.info.n_params == n_params
    x = ecgs(3, 3, seed=2)
    with torch.no_grad():  # prediction.py: load_from_checkpoint, eval, F.sigmoid(pred)[:, -1]
        want = torch.sigmoid(source(torch.from_numpy(x).float()).reshape(-1, 1))[:, -1].numpy()
    np.testing.assert_allclose(predict_released(loaded, x), want, rtol=0, atol=1e-6)
    torch.save(lightning_checkpoint(source.state_dict(), hyper_parameters={"num_classes": 2}),
               path)
    with pytest.raises(ValueError, match=r"hyper_parameters differ .*num_classes=2 \(ours 1\)"):
        load_released(model, path)
