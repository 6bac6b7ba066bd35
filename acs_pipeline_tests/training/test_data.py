"""Tests for acs_pipeline.training.data: datasets, the epoch batch sampler, label checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.data import (
    STAGES,
    ArrayDataset,
    ECGDataModule,
    EpochBatchSampler,
    InsufficientLabelsError,
    TrainingDataError,
    check_trainable,
    stage_rows,
)
from acs_pipeline.training.fit import fit
from acs_pipeline.training.module import ECGClassifier
from acs_pipeline_tests.tiny_training import TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_array_dataset_batches_match_single_samples(tmp_path: Path) -> None:
    x, y = make_data(20, 3)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    ds = ArrayDataset(ro, y)
    assert ds.x is ro  # no copy of the samples
    for idx in ([3, 4, 5, 6], [9, 2, 17]):  # contiguous (slice) and scattered (fancy index)
        xb, yb = ds[idx]
        assert xb.dtype == torch.float32 and xb.shape == (len(idx), 3, 500)
        singles = torch.stack([ds[i][0] for i in idx])
        assert torch.equal(xb, singles)
        assert torch.equal(yb, torch.tensor(y[idx]))
    # GPU path: float16 batches travel as they are stored and become float32 on the device
    dm = ECGDataModule((x, y), (x, y), batch_size=8, device_cast=True)
    xb16, yb16 = next(iter(dm.val_dataloader()))
    assert xb16.dtype == torch.float16 and torch.equal(xb16, torch.from_numpy(x[:8]))
    clf = ECGClassifier(TinyNet())
    assert torch.equal(clf(xb16), clf(ds[list(range(8))][0]))
    with pytest.raises(TrainingDataError, match="0/1"):
        ArrayDataset(x, np.full(20, 2.0))
    with pytest.raises(TrainingDataError, match=r"\(N, C, L\)"):
        ArrayDataset(x[0], None)


def test_epoch_batch_sampler_is_seeded_by_epoch_and_covers_all() -> None:
    s = EpochBatchSampler(50, 16, shuffle=True, seed=7, min_last_batch=3)
    e0 = list(s)
    assert e0 == list(s)  # same epoch, same order
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    assert [len(b) for b in e1] == [16, 16, 16] and len(s) == 3  # trailing batch of 2 dropped
    s2 = EpochBatchSampler(50, 16, shuffle=True, seed=7)
    assert sorted(sum(list(s2), [])) == list(range(50)) and len(s2) == 4
    shards = [list(EpochBatchSampler(10, 4, False, num_replicas=2, rank=r)) for r in (0, 1)]
    flat = [sum(sh, []) for sh in shards]
    assert len(flat[0]) == len(flat[1]) == 5 and set(flat[0]) | set(flat[1]) == set(range(10))


def test_check_trainable_names_split_and_counts(tmp_path: Path) -> None:
    ok = np.array([0, 1] * 5)
    check_trainable(ok, ok)
    with pytest.raises(InsufficientLabelsError, match=r"val split has 1 positive\(s\) and 9"):
        check_trainable(ok, np.array([1] + [0] * 9))
    with pytest.raises(InsufficientLabelsError, match=r"train split has 0 positive"):
        check_trainable(np.zeros(10), ok)
    with pytest.raises(InsufficientLabelsError, match=r"1 negative"):
        check_trainable(ok, np.array([0, 1, 1, 1]))
    with pytest.raises(TrainingDataError, match="val: labels must be 0/1"):
        check_trainable(ok, np.array([0, 1, 0.5, 1]))
    # fit checks before it trains or writes anything
    x, _ = make_data(10, 0)
    c = TrainConfig(logger="none", batch_size=16, lr=1e-2)
    with pytest.raises(InsufficientLabelsError, match="val"):
        fit(TinyNet(), (x, ok), (x, np.array([1] + [0] * 9)), tmp_path / "run", c)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingDataError, match="10 samples but 9 labels"):
        fit(TinyNet(), (x, ok[:9]), (x, ok), tmp_path / "run", c)


def _cohort() -> pl.DataFrame:
    """A cohort from ``build_cohort`` (train / selection / validation by patient)."""
    from acs_pipeline.cohort.build import build_cohort
    from acs_pipeline_tests.cohort.test_build import make_tables

    df, _ = build_cohort(make_tables(n_pat=300), seed=1)
    return df


@pytest.mark.parametrize("stage", ["acs", "mace"])
def test_checkpoints_are_selected_on_the_selection_split_by_default(stage: str) -> None:
    co = _cohort()
    which, label = STAGES[stage]
    have = co["ecg_id"].to_list()
    r = stage_rows(co, have, stage)
    split = dict(co.select("ecg_id", "split").iter_rows())
    assert r.selection == "selection_split"
    assert {split[e] for e in r.val_ids} == {"selection"}
    assert {split[e] for e in r.train_ids} == {"train"}
    mine = co.filter((pl.col("cohort") == which) & pl.col(label).is_not_null())
    assert sorted(r.val_ids) == sorted(mine.filter(pl.col("split") == "selection")["ecg_id"])
    assert list(r.val_ids) == sorted(r.val_ids) and list(r.train_ids) == sorted(r.train_ids)
    # the report's ECGs neither train nor select
    report = set(mine.filter(pl.col("split") == "validation")["ecg_id"])
    assert not report & (set(r.train_ids) | set(r.val_ids))


def test_the_authors_protocol_selects_on_validation_and_trains_on_all_of_training() -> None:
    co = _cohort()
    r = stage_rows(co, co["ecg_id"].to_list(), "acs", selection="authors_validation")
    tested = co.filter(pl.col("cohort") == "tested")
    split = dict(tested.select("ecg_id", "split").iter_rows())
    assert r.selection == "authors_validation"
    assert {split[e] for e in r.val_ids} == {"validation"}
    assert {split[e] for e in r.train_ids} == {"train", "selection"}
    assert len(r.train_ids) + len(r.val_ids) == len(tested)
    y = dict(tested.select("ecg_id", "acs").iter_rows())
    np.testing.assert_array_equal(r.val_y, [y[e] for e in r.val_ids])


def test_stage_rows_name_a_missing_selection_split_and_an_unknown_protocol() -> None:
    co = _cohort().with_columns(split=pl.col("split").replace("selection", "train"))
    have = co["ecg_id"].to_list()
    with pytest.raises(TrainingDataError, match=r"no 'selection' split .*ACS_SELECTION="
                                                r"authors_validation"):
        stage_rows(co, have, "acs")
    assert len(stage_rows(co, have, "acs", selection="authors_validation").val_ids) > 0
    with pytest.raises(ValueError, match="selection must be one of"):
        stage_rows(co, have, "acs", selection="validation")
