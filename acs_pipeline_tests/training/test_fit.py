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

from acs_pipeline.training.checkpoint import WeightsError, load_weights
from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.fit import MissingCheckpointError, fit
from acs_pipeline.training.predict import predict
from acs_pipeline_tests.tiny_training import Interrupt, RaiseAfter, TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")

REPO = Path(__file__).resolve().parents[2]


FAST = {"logger": "none", "batch_size": 16, "lr": 1e-2}


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, **kw})


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


# ------------------------------------------------------------------------------ learning


def test_overfits_32_samples(tmp_path: Path) -> None:
    tr = make_data(32, 11)
    res = fit(
        lambda: TinyNet(width=16),
        tr,
        make_data(16, 12),
        tmp_path,
        cfg(max_epochs=30, batch_size=32, lr=3e-2),
    )
    assert res.epochs_run == 30 and res.global_step == 30
    model = TinyNet(width=16)
    model.load_state_dict(load_weights(res.last_path))
    p = predict(model, tr[0])
    assert roc_auc_score(tr[1], p) == 1.0
    hist = res.history
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]


def test_best_checkpoint_is_best_val_auroc_epoch(tmp_path: Path, data) -> None:
    # validation labels are planted backwards, so val AUROC falls as training goes on
    val = make_data(32, 1, flip=True)
    model = TinyNet()
    res = fit(model, data[0], val, tmp_path, cfg(max_epochs=4, logger="csv"))
    hist = res.history
    assert [int(r["epoch"]) for r in hist] == [0, 1, 2, 3]
    aurocs = [r["val_auroc"] for r in hist]
    best = int(np.argmax(aurocs))
    assert best != 3, aurocs  # the test needs the best epoch to be an earlier one
    assert res.best_epoch == best
    assert torch.load(res.best_path, weights_only=True)["epoch"] == best
    assert res.best_val_auroc == pytest.approx(aurocs[best], abs=1e-6)
    assert res.best_val_loss == pytest.approx(hist[best]["val_loss"], abs=1e-6)
    # on return the model holds the best weights: they reproduce the logged AUROC
    assert roc_auc_score(val[1], predict(model, val[0])) == pytest.approx(aurocs[best], abs=1e-6)
    last = TinyNet()
    last.load_state_dict(load_weights(res.last_path))
    assert roc_auc_score(val[1], predict(last, val[0])) == pytest.approx(aurocs[3], abs=1e-6)
    assert list((tmp_path / "lightning_logs").glob("*/metrics.csv"))
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, data) -> None:
    # backwards validation labels make the val loss rise, so the plateau schedule halves the
    # learning rate every epoch: its state must survive the interruption too
    val = make_data(32, 1, flip=True)
    data = (data[0], val)
    c = cfg(max_epochs=4, plateau_patience=0, plateau_factor=0.5)
    full = fit(TinyNet, *data, tmp_path / "full", c)
    lrs = [r["lr"] for r in full.history]
    assert lrs[0] == 1e-2 and lrs[-1] <= 5e-3, lrs
    with pytest.raises(Interrupt):
        fit(TinyNet, *data, tmp_path / "cut", c, callbacks=[RaiseAfter(1)])
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["epoch"] == 1
    rec = RecordEpochs()
    res = fit(TinyNet, *data, tmp_path / "cut", c, callbacks=[rec])
    assert rec.sampler_epochs == [2, 3]  # batches drawn in the order of the epochs they belong to
    assert res.resumed and res.start_epoch == 2 and res.epochs_run == 4
    assert res.global_step == full.global_step == 16
    assert weights_equal(load_weights(res.last_path), load_weights(full.last_path))
    assert res.history == full.history


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
        from acs_pipeline.training.config import TrainConfig
        from acs_pipeline.training.fit import fit

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
    res = fit(TinyNet, *data, out, c)
    assert res.resumed
    assert res.start_epoch == 2 and res.epochs_run == 4 and res.global_step == 16
    assert [int(r["epoch"]) for r in res.history] == [0, 1, 2, 3]


class NoBestYet(Callback):
    """Records whether a best.ckpt is in the folder when training starts."""

    def __init__(self, out: Path) -> None:
        self.out, self.had_best = out, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.had_best = (self.out / "best.ckpt").exists()


def test_a_folder_without_last_ckpt_trains_from_scratch(tmp_path: Path, data) -> None:
    # what a finished stage leaves behind: best.ckpt, no last.ckpt (fit keeps no other record)
    first = fit(TinyNet, *data, tmp_path, cfg(max_epochs=2))
    first.last_path.unlink()
    counter, seen = CountBatches(), NoBestYet(tmp_path)
    again = fit(TinyNet, *data, tmp_path, cfg(max_epochs=2), callbacks=[counter, seen])
    assert not again.resumed and again.start_epoch == 0
    assert counter.n == again.global_step == first.global_step == 8
    assert seen.had_best is False  # the earlier run's best checkpoint was not kept as this one's
    assert weights_equal(load_weights(again.best_path), load_weights(first.best_path))


class DropBest(Callback):
    def on_fit_end(self, trainer, pl_module) -> None:
        (Path(trainer.default_root_dir) / "best.ckpt").unlink()


def test_a_run_without_best_checkpoint_is_an_error(tmp_path: Path, data) -> None:
    with pytest.raises(MissingCheckpointError, match="best.ckpt"):
        fit(TinyNet, *data, tmp_path, cfg(max_epochs=1), callbacks=[DropBest()])


# --------------------------------------------------------------------------- init weights


def test_init_state_dict_is_applied(tmp_path: Path, data) -> None:
    torch.manual_seed(123)
    init = TinyNet().state_dict()
    model = TinyNet()
    assert not weights_equal(model.state_dict(), init)
    # lr 0: training leaves the weights where init_state_dict put them
    res = fit(model, *data, tmp_path / "a", cfg(max_epochs=1, lr=0.0), init_state_dict=init)
    assert weights_equal(load_weights(res.best_path), init)
    assert weights_equal(model.state_dict(), init)
    bad = {k: v for k, v in init.items() if not k.startswith("fc.")}
    with pytest.raises(WeightsError, match="fc.weight"):
        fit(TinyNet(), *data, tmp_path / "b", cfg(max_epochs=1), init_state_dict=bad)


def test_fit_is_quiet(tmp_path: Path, data, capfd) -> None:
    fit(TinyNet, *data, tmp_path, cfg(max_epochs=1))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_init_weights_with_scalar_buffers_load(tmp_path: Path, data) -> None:
    # BatchNorm keeps a 0-d ``num_batches_tracked`` buffer
    def bn_net() -> nn.Module:
        return nn.Sequential(
            nn.Conv1d(3, 4, 5), nn.BatchNorm1d(4), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
            nn.Linear(4, 1),
        )  # fmt: skip

    torch.manual_seed(5)
    init = bn_net().state_dict()
    res = fit(bn_net, *data, tmp_path, cfg(max_epochs=1, lr=0.0), init_state_dict=init)
    got = load_weights(res.best_path)
    assert torch.equal(got["0.weight"], init["0.weight"])
    assert int(got["1.num_batches_tracked"]) == 4  # 64 samples / batch 16, buffers still update
