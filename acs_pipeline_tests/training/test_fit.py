"""Tests for acs_pipeline.training.fit on a tiny conv net and arrays of length 500 (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import roc_auc_score
from torch import nn

from acs_pipeline.training import fit as T
from acs_pipeline_tests.tiny_training import Interrupt, RaiseAfter, TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")

REPO = Path(__file__).resolve().parents[2]


FAST = {"logger": "none", "batch_size": 16, "lr": 1e-2}


def cfg(**kw) -> T.TrainConfig:
    return T.TrainConfig(**{**FAST, **kw})


def read_metrics(path: Path) -> list[dict[str, float]]:
    lines = path.read_text().strip().splitlines()
    cols = lines[0].split(",")
    return [dict(zip(cols, map(float, ln.split(",")), strict=True)) for ln in lines[1:]]


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class RecordEpochs(Callback):
    def __init__(self) -> None:
        self.sampler_epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.sampler_epochs.append(trainer.train_dataloader.sampler.epoch)


class CountBatches(Callback):
    def __init__(self) -> None:
        self.n = 0

    def on_train_batch_end(self, *args) -> None:
        self.n += 1


@pytest.fixture(scope="module")
def data():
    return make_data(64, 0), make_data(32, 1)


# ------------------------------------------------------------------------------ config, data


def test_config_defaults_are_the_recipe_and_validate() -> None:
    c = T.TrainConfig()
    assert (c.max_epochs, c.batch_size, c.lr, c.betas, c.optimizer) == (
        50,
        64,
        1e-4,
        (0.9, 0.999),
        "adam",
    )
    d = c.to_dict()
    assert d["betas"] == [0.9, 0.999] and json.loads(json.dumps(d)) == d
    assert T.TrainConfig(**d) == c
    expected = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    assert c.resolved_precision == expected
    assert T.TrainConfig(precision="16-mixed").resolved_precision == "16-mixed"
    with pytest.raises(ValueError, match="optimizer"):
        T.TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="logger"):
        T.TrainConfig(logger="wandb")


def test_array_dataset_batches_match_single_samples(tmp_path: Path) -> None:
    x, y = make_data(20, 3)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    ds = T.ArrayDataset(ro, y)
    assert ds.x is ro  # no copy of the samples
    for idx in ([3, 4, 5, 6], [9, 2, 17]):  # contiguous (slice) and scattered (fancy index)
        xb, yb = ds[idx]
        assert xb.dtype == torch.float32 and xb.shape == (len(idx), 3, 500)
        singles = torch.stack([ds[i][0] for i in idx])
        assert torch.equal(xb, singles)
        assert torch.equal(yb, torch.tensor(y[idx]))
    # GPU path: float16 batches travel as they are stored and become float32 on the device
    dm = T.ECGDataModule((x, y), (x, y), batch_size=8, device_cast=True)
    xb16, yb16 = next(iter(dm.val_dataloader()))
    assert xb16.dtype == torch.float16 and torch.equal(xb16, torch.from_numpy(x[:8]))
    clf = T.ECGClassifier(TinyNet())
    assert torch.equal(clf(xb16), clf(ds[list(range(8))][0]))
    with pytest.raises(T.TrainingDataError, match="0/1"):
        T.ArrayDataset(x, np.full(20, 2.0))
    with pytest.raises(T.TrainingDataError, match=r"\(N, C, L\)"):
        T.ArrayDataset(x[0], None)


def test_epoch_batch_sampler_is_seeded_by_epoch_and_covers_all() -> None:
    s = T.EpochBatchSampler(50, 16, shuffle=True, seed=7, min_last_batch=3)
    e0 = list(s)
    assert e0 == list(s)  # same epoch, same order
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    assert [len(b) for b in e1] == [16, 16, 16] and len(s) == 3  # trailing batch of 2 dropped
    s2 = T.EpochBatchSampler(50, 16, shuffle=True, seed=7)
    assert sorted(sum(list(s2), [])) == list(range(50)) and len(s2) == 4
    shards = [list(T.EpochBatchSampler(10, 4, False, num_replicas=2, rank=r)) for r in (0, 1)]
    flat = [sum(sh, []) for sh in shards]
    assert len(flat[0]) == len(flat[1]) == 5 and set(flat[0]) | set(flat[1]) == set(range(10))


def test_check_trainable_names_split_and_counts(tmp_path: Path) -> None:
    ok = np.array([0, 1] * 5)
    T.check_trainable(ok, ok)
    with pytest.raises(T.InsufficientLabelsError, match=r"val split has 1 positive\(s\) and 9"):
        T.check_trainable(ok, np.array([1] + [0] * 9))
    with pytest.raises(T.InsufficientLabelsError, match=r"train split has 0 positive"):
        T.check_trainable(np.zeros(10), ok)
    with pytest.raises(T.InsufficientLabelsError, match=r"1 negative"):
        T.check_trainable(ok, np.array([0, 1, 1, 1]))
    with pytest.raises(T.TrainingDataError, match="val: labels must be 0/1"):
        T.check_trainable(ok, np.array([0, 1, 0.5, 1]))
    # fit checks before it trains or writes anything
    x, _ = make_data(10, 0)
    with pytest.raises(T.InsufficientLabelsError, match="val"):
        T.fit(TinyNet(), (x, ok), (x, np.array([1] + [0] * 9)), tmp_path / "run", cfg())
    assert not (tmp_path / "run").exists()
    with pytest.raises(T.TrainingDataError, match="10 samples but 9 labels"):
        T.fit(TinyNet(), (x, ok[:9]), (x, ok), tmp_path / "run", cfg())


# ------------------------------------------------------------------------------ learning


def test_one_step_lowers_loss_on_fixed_batch() -> None:
    torch.manual_seed(0)
    x, y = make_data(32, 5)
    batch = (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    clf = T.ECGClassifier(TinyNet(), lr=1e-2)
    opt = clf.configure_optimizers()
    before, _ = clf.loss(batch)
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = clf.loss(batch)
    assert after.item() < before.item() - 1e-4
    with pytest.raises(T.TrainingDataError, match=r"shape \(32, 2\)"):
        T.ECGClassifier(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))(batch[0])


def test_overfits_32_samples(tmp_path: Path) -> None:
    tr = make_data(32, 11)
    res = T.fit(
        lambda: TinyNet(width=16),
        tr,
        make_data(16, 12),
        tmp_path,
        cfg(max_epochs=30, batch_size=32, lr=3e-2),
    )
    assert res.epochs_run == 30 and res.global_step == 30
    model = TinyNet(width=16)
    model.load_state_dict(T.load_weights(res.last_path))
    p = T.predict(model, tr[0])
    assert roc_auc_score(tr[1], p) == 1.0
    hist = read_metrics(res.metrics_csv)
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]


def test_best_checkpoint_is_best_val_auroc_epoch(tmp_path: Path, data) -> None:
    # validation labels are planted backwards, so val AUROC falls as training goes on
    val = make_data(32, 1, flip=True)
    model = TinyNet()
    res = T.fit(model, data[0], val, tmp_path, cfg(max_epochs=4, logger="csv"))
    hist = read_metrics(res.metrics_csv)
    assert [int(r["epoch"]) for r in hist] == [0, 1, 2, 3]
    aurocs = [r["val_auroc"] for r in hist]
    best = int(np.argmax(aurocs))
    assert best != 3, aurocs  # the test needs the best epoch to be an earlier one
    assert res.best_epoch == best
    assert torch.load(res.best_path, weights_only=True)["epoch"] == best
    assert res.best_val_auroc == pytest.approx(aurocs[best], abs=1e-6)
    assert res.best_val_loss == pytest.approx(hist[best]["val_loss"], abs=1e-6)
    # on return the model holds the best weights: they reproduce the logged AUROC
    assert roc_auc_score(val[1], T.predict(model, val[0])) == pytest.approx(aurocs[best], abs=1e-6)
    last = TinyNet()
    last.load_state_dict(T.load_weights(res.last_path))
    assert roc_auc_score(val[1], T.predict(last, val[0])) == pytest.approx(aurocs[3], abs=1e-6)
    assert list((tmp_path / "lightning_logs").glob("*/metrics.csv"))
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------- resume and reuse


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, data) -> None:
    # backwards validation labels make the val loss rise, so the plateau schedule halves the
    # learning rate every epoch: its state must survive the interruption too
    val = make_data(32, 1, flip=True)
    data = (data[0], val)
    c = cfg(max_epochs=4, plateau_patience=0, plateau_factor=0.5)
    full = T.fit(TinyNet, *data, tmp_path / "full", c)
    lrs = [r["lr"] for r in read_metrics(full.metrics_csv)]
    assert lrs[0] == 1e-2 and lrs[-1] <= 5e-3, lrs
    with pytest.raises(Interrupt):
        T.fit(TinyNet, *data, tmp_path / "cut", c, callbacks=[RaiseAfter(1)])
    state = json.loads((tmp_path / "cut" / "run_state.json").read_text())
    assert state["finished"] is False
    rec = RecordEpochs()
    res = T.fit(TinyNet, *data, tmp_path / "cut", c, callbacks=[rec])
    assert rec.sampler_epochs == [2, 3]  # batches drawn in the order of the epochs they belong to
    assert res.resumed and res.start_epoch == 2 and res.epochs_run == 4
    assert res.global_step == full.global_step == 16
    assert weights_equal(T.load_weights(res.last_path), T.load_weights(full.last_path))
    assert read_metrics(res.metrics_csv) == read_metrics(full.metrics_csv)


def test_killed_process_resumes_from_last_ckpt(tmp_path: Path, data) -> None:
    np.savez(tmp_path / "data.npz", xt=data[0][0], yt=data[0][1], xv=data[1][0], yv=data[1][1])
    c = cfg(max_epochs=4)
    out, flag = tmp_path / "run", tmp_path / "epoch1.flag"
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    child = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        import numpy as np
        import torch
        from lightning.pytorch.callbacks import Callback
        from acs_pipeline_tests.tiny_training import TinyNet
        from acs_pipeline.training.fit import TrainConfig, fit

        torch.set_num_threads(1)

        class Hang(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == 2:  # epoch 1 is checkpointed by now
                    Path({str(flag)!r}).write_text("1")
                    time.sleep(300)

        d = np.load({str(tmp_path / "data.npz")!r})
        c = TrainConfig(**json.loads(Path({str(tmp_path / "config.json")!r}).read_text()))
        fit(TinyNet, (d["xt"], d["yt"]), (d["xv"], d["yv"]), {str(out)!r}, c, callbacks=[Hang()])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "child did not reach epoch 1"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == 1
    res = T.fit(TinyNet, *data, out, c)
    assert res.resumed and not res.reused
    assert res.start_epoch == 2 and res.epochs_run == 4 and res.global_step == 16
    assert [int(r["epoch"]) for r in read_metrics(res.metrics_csv)] == [0, 1, 2, 3]
    # a finished run is returned as recorded, without training
    counter = CountBatches()
    again = T.fit(TinyNet, *data, out, c, callbacks=[counter])
    assert again.reused and not again.resumed and counter.n == 0
    assert again.best_val_auroc == res.best_val_auroc and again.global_step == 16


def test_changed_config_is_refused_or_restarted(tmp_path: Path, data) -> None:
    first = T.fit(TinyNet, *data, tmp_path, cfg(max_epochs=1))
    assert not first.reused
    with pytest.raises(T.RunStateMismatchError, match="on_mismatch='restart'"):
        T.fit(TinyNet, *data, tmp_path, cfg(max_epochs=1, lr=1e-3))
    other_data = (make_data(64, 9), data[1])
    with pytest.raises(T.RunStateMismatchError):
        T.fit(TinyNet, *other_data, tmp_path, cfg(max_epochs=1))
    again = T.fit(TinyNet, *data, tmp_path, cfg(max_epochs=1, lr=1e-3), on_mismatch="restart")
    assert not again.reused and not again.resumed and again.global_step == 4
    # changing only the logger keeps the run
    assert T.fit(TinyNet, *data, tmp_path, cfg(max_epochs=1, lr=1e-3, logger="csv")).reused


# ------------------------------------------------------------------------------ two stages


def test_init_state_dict_is_applied(tmp_path: Path, data) -> None:
    torch.manual_seed(123)
    init = TinyNet().state_dict()
    model = TinyNet()
    assert not weights_equal(model.state_dict(), init)
    # lr 0: training leaves the weights where init_state_dict put them
    res = T.fit(model, *data, tmp_path / "a", cfg(max_epochs=1, lr=0.0), init_state_dict=init)
    assert weights_equal(T.load_weights(res.best_path), init)
    assert weights_equal(model.state_dict(), init)
    bad = {k: v for k, v in init.items() if not k.startswith("fc.")}
    with pytest.raises(T.RunStateMismatchError, match="fc.weight"):
        T.fit(TinyNet(), *data, tmp_path / "b", cfg(max_epochs=1), init_state_dict=bad)


def test_two_stage_finetune_starts_from_pretrained_best(tmp_path: Path, data) -> None:
    mace, acs = T.fit_two_stage(
        TinyNet,
        data,
        (make_data(48, 4), make_data(24, 5)),
        tmp_path,
        cfg(max_epochs=2),
        cfg(max_epochs=1, lr=0.0),
    )
    assert mace.best_path == tmp_path / "mace" / "best.ckpt"
    assert acs.best_path == tmp_path / "acs" / "best.ckpt"
    assert weights_equal(T.load_weights(acs.best_path), T.load_weights(mace.best_path))
    fresh = TinyNet()
    assert not weights_equal(fresh.state_dict(), T.load_weights(acs.best_path))


# ------------------------------------------------------------------------------ predict, io


def test_predict_probabilities_in_order_and_eval_mode() -> None:
    torch.manual_seed(0)
    model = TinyNet(dropout=0.5).train()
    x, _ = make_data(37, 2)
    p = T.predict(model, x, batch_size=8)
    assert p.shape == (37,) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1)) and p.std() > 0
    assert np.array_equal(T.predict(model, x, batch_size=8), p)  # dropout off
    assert model.training  # mode restored
    perm = np.random.default_rng(0).permutation(37)
    np.testing.assert_allclose(T.predict(model, x[perm], batch_size=5), p[perm], rtol=1e-6)
    doubled = T.predict(model, x, transform=lambda xb: xb * 0)
    assert np.allclose(doubled, doubled[0])


def test_atomic_checkpoint_io_keeps_old_file_on_failure(tmp_path: Path) -> None:
    io = T.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"model.w": torch.ones(2)}}, path)
    assert torch.equal(T.load_weights(path)["w"], torch.ones(2))
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails part-way)
        io.save_checkpoint({"state_dict": {"model.w": torch.zeros(2)}, "f": lambda: 0}, path)
    assert torch.equal(T.load_weights(path)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    torch.save({"state_dict": {"other.w": torch.ones(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(T.RunStateMismatchError, match="prefix"):
        T.load_weights(tmp_path / "x.ckpt")


def test_fit_is_quiet(tmp_path: Path, data, capfd) -> None:
    T.fit(TinyNet, *data, tmp_path, cfg(max_epochs=1))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_init_weights_with_scalar_buffers_are_fingerprinted(tmp_path: Path, data) -> None:
    # BatchNorm keeps a 0-d ``num_batches_tracked`` buffer; fingerprinting must accept it
    def bn_net() -> nn.Module:
        return nn.Sequential(
            nn.Conv1d(3, 4, 5), nn.BatchNorm1d(4), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
            nn.Linear(4, 1),
        )  # fmt: skip

    torch.manual_seed(5)
    init = bn_net().state_dict()
    res = T.fit(bn_net, *data, tmp_path, cfg(max_epochs=1, lr=0.0), init_state_dict=init)
    got = T.load_weights(res.best_path)
    assert torch.equal(got["0.weight"], init["0.weight"])
    assert int(got["1.num_batches_tracked"]) == 4  # 64 samples / batch 16, buffers still update
    assert T.fit(bn_net, *data, tmp_path, cfg(max_epochs=1, lr=0.0), init_state_dict=init).reused
