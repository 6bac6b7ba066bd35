"""Tests for data-parallel training: sharding, strategy mapping, and a 2-process CPU DDP fit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from sklearn.metrics import roc_auc_score

from acs_pipeline.training.callbacks import EpochHistory
from acs_pipeline.training.checkpoint import load_weights
from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.data import ECGDataModule, EpochBatchSampler, TrainingDataError
from acs_pipeline.training.fit import fit, read_worker_state
from acs_pipeline.training.predict import predict
from acs_pipeline.training.trainer import Launch, launch, make_trainer, quiet_lightning
from acs_pipeline_tests.tiny_training import RaiseAfter, TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")


class RecordShards(Callback):
    """Each process writes the indices its train and validation samplers hand out per epoch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        train = trainer.train_dataloader.sampler
        val = trainer.val_dataloaders.sampler
        val.set_epoch(trainer.current_epoch)
        rec = {
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "replicas": [train.num_replicas, val.num_replicas],
            "train": [i for b in train for i in b],
            "val": [i for b in val for i in b],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        (self.folder / name).write_text(json.dumps(rec))


def cfg(**kw) -> TrainConfig:
    base = {"batch_size": 8, "lr": 1e-2, "max_epochs": 2, "logger": "none", "accelerator": "cpu"}
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("n", [10, 11, 33])
def test_validation_shards_are_disjoint_and_complete(n: int) -> None:
    shards = [EpochBatchSampler(n, 4, False, num_replicas=3, rank=r, pad=False) for r in range(3)]
    seen = [[i for b in s for i in b] for s in shards]
    assert sorted(i for part in seen for i in part) == list(range(n))
    assert [len(s) for s in shards] == [len(list(s)) for s in shards]


def test_training_shards_are_padded_to_equal_batch_counts() -> None:
    shards = [EpochBatchSampler(11, 4, True, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for s in shards:
        s.set_epoch(3)
    seen = [[i for b in s for i in b] for s in shards]
    assert len(seen[0]) == len(seen[1]) == 6
    assert set(seen[0]) | set(seen[1]) == set(range(11))
    assert len(shards[0]) == len(shards[1]) == len(list(shards[0])) == 2
    with pytest.raises(ValueError, match="rank must be in"):
        EpochBatchSampler(11, 4, True, num_replicas=2, rank=2)


def test_too_small_validation_set_for_the_processes_is_refused() -> None:
    x, y = make_data(3, 0, length=200)
    dm = ECGDataModule((x, y), (x, y), batch_size=2)
    dm.trainer = SimpleNamespace(world_size=4, global_rank=1)
    with pytest.raises(TrainingDataError, match="val: 3 samples cannot be sharded over 4"):
        dm.val_dataloader()


@pytest.mark.parametrize(
    ("given", "spawned"),
    [
        ("ddp", "ddp_spawn"),
        ("auto", "ddp_spawn"),
        ("ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_true"),
    ],
)
def test_command_line_relaunching_strategies_become_spawned(
    tmp_path: Path, given: str, spawned: str
) -> None:
    c = cfg(devices=2, strategy=given)
    how = launch(c)
    assert how == Launch(spawned, 2, workers=True)
    with quiet_lightning():
        trainer = make_trainer(c, how, tmp_path, [], False, 64)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 2
    # 32 samples per process in batches of 8
    assert trainer.log_every_n_steps == 4
    with pytest.raises(ValueError, match="re-run the whole pipeline step"):
        launch(cfg(devices=2, strategy="fsdp"))


def test_one_device_ddp_is_not_spawned(tmp_path: Path) -> None:
    how = launch(cfg(devices=1, strategy="ddp"))
    assert how == Launch("ddp", 1, workers=False)
    with quiet_lightning():
        trainer = make_trainer(cfg(devices=1, strategy="ddp"), how, tmp_path, [], False, 64)
    assert trainer.world_size == 1
    assert trainer.log_every_n_steps == 8


def test_processes_of_an_external_launcher_are_left_alone(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "0")  # as torchrun sets it for each rank it starts
    assert launch(cfg(devices=2, strategy="ddp")) == Launch("ddp", 2, workers=False)


def test_single_process_result_can_be_read_back_from_last_ckpt(tmp_path: Path) -> None:
    res = fit(TinyNet, make_data(32, 0, length=200), make_data(16, 1, length=200), tmp_path,
              cfg(max_epochs=3))
    history = EpochHistory()
    epochs, steps = read_worker_state(res.last_path, history)
    assert (epochs, steps) == (res.epochs_run, res.global_step) == (3, 12)
    assert history.rows == res.history
    assert history.train_samples == 3 * 32


DDP = {"devices": 2, "strategy": "ddp"}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process CPU DDP fit (launched as 'ddp', run as spawned workers) for the tests."""
    root = tmp_path_factory.mktemp("ddp")
    train, val = make_data(64, 0, length=200), make_data(33, 1, length=200)
    res = fit(
        TinyNet,
        train,
        val,
        root / "run",
        cfg(logger="csv", **DDP),
        callbacks=[RecordShards(root / "shards")],
    )
    return SimpleNamespace(res=res, out=root / "run", shards=root / "shards", train=train, val=val)


@pytest.mark.slow
def test_two_process_cpu_ddp_fit(ddp_run, tmp_path: Path) -> None:
    res, out, train, val = ddp_run.res, ddp_run.out, ddp_run.train, ddp_run.val
    single = fit(TinyNet, train, val, tmp_path / "single", cfg())
    assert single.global_step == 2 * 8

    assert (out / "best.ckpt").exists() and (out / "last.ckpt").exists()
    assert not list(out.glob(".*.tmp"))
    # data-parallel: each process takes half of every epoch's batches
    assert res.epochs_run == 2
    assert res.global_step == single.global_step // 2 == 8
    assert [r["step"] for r in res.history] == [4, 8]
    assert res.samples_per_s > 0

    # the reported AUROC is the one of the best checkpoint over the whole validation set
    net = TinyNet()
    net.load_state_dict(load_weights(res.best_path))
    prob = predict(net, val[0], device="cpu")
    assert res.best_val_auroc == pytest.approx(roc_auc_score(val[1], prob), abs=1e-6)
    best = next(r for r in res.history if r["epoch"] == res.best_epoch)
    assert best["val_auroc"] == res.best_val_auroc

    # the history read back from rank 0 covers both epochs; the CSV logger wrote its metrics
    assert [r["epoch"] for r in res.history] == [0, 1]
    assert (out / "lightning_logs" / "version_0" / "metrics.csv").exists()

    # each epoch, the two processes drew disjoint halves of the training set and of the
    # validation set
    for epoch in (0, 1):
        recs = [
            json.loads((ddp_run.shards / f"rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1)
        ]
        assert [(x["rank"], x["world"], x["replicas"]) for x in recs] == [
            (0, 2, [2, 2]),
            (1, 2, [2, 2]),
        ]
        assert sorted(recs[0]["train"] + recs[1]["train"]) == list(range(64))
        assert sorted(recs[0]["val"] + recs[1]["val"]) == list(range(33))


@pytest.mark.slow
def test_interrupted_ddp_run_resumes_to_the_same_weights(ddp_run, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Exception, match="interrupted after epoch 0"):
        fit(TinyNet, ddp_run.train, ddp_run.val, out, cfg(**DDP), callbacks=[RaiseAfter(0)])
    assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == 0
    res = fit(TinyNet, ddp_run.train, ddp_run.val, out, cfg(**DDP))
    assert (res.resumed, res.start_epoch, res.global_step) == (True, 1, 8)
    # Equal up to float32 rounding: gloo's all-reduce of the two processes' validation sums
    # may add in either order (seen: val_loss differing in the 8th digit between runs).
    assert [r.keys() for r in res.history] == [r.keys() for r in ddp_run.res.history]
    for got, want in zip(res.history, ddp_run.res.history, strict=True):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    a, b = load_weights(res.last_path), load_weights(ddp_run.res.last_path)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
