"""Training data: labelled arrays as batches, the stages' data selection.

``EpochBatchSampler`` draws every epoch's batches from a permutation seeded by (seed, epoch), so
a resumed run sees the same batches as one that was never interrupted. Under DDP each process
draws its own shard of every epoch's batches.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from acs_pipeline.io.tensors import TensorSet

Split = tuple[np.ndarray, np.ndarray]

# stage -> (cohort, label): MACE pre-training on the untested cohort, ACS fine-tuning on the
# tested cohort
STAGES = {"mace": ("untested", "mace"), "acs": ("tested", "acs")}

# How the best checkpoint is chosen: selection -> (training splits, the split that selects).
# ``selection_split`` (default) selects on patients carved from training and leaves the
# validation split to the report; ``authors_validation`` is the authors' protocol: train on all
# of training and select on the validation split the report scores (optimistic numbers).
SELECTIONS = {
    "selection_split": (("train",), "selection"),
    "authors_validation": (("train", "selection"), "validation"),
}
SELECTION_LABELS = {
    "selection_split": "checkpoint selected on the selection split (carved from training)",
    "authors_validation": "checkpoint selected on the validation split (authors' protocol, "
                          "optimistic)",
}


class TrainingDataError(ValueError):
    """Training inputs have the wrong shape, length or label values."""


class InsufficientLabelsError(TrainingDataError):
    """A split has too few positives or negatives to train or to compute a validation AUROC."""


def _as_labels(y: np.ndarray | None, n: int, split: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise TrainingDataError(f"{split}: expected labels of shape ({n},), got {y.shape}")
    yf = y.astype(np.float32)
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        raise TrainingDataError(
            f"{split}: labels must be 0/1, found {np.unique(y[bad])[:5].tolist()} "
            f"at rows {np.flatnonzero(bad)[:5].tolist()}"
        )
    return yf


@dataclass(frozen=True)
class MappedFile:
    """Where a read-only memory-mapped array lives: file, byte offset, dtype, shape."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]


def _mapped_file(x: np.ndarray) -> MappedFile | None:
    """The file span behind a C-contiguous read-only ``np.memmap`` (or a contiguous slice of
    one), else ``None``."""
    mm = getattr(x, "_mmap", None)
    if not isinstance(x, np.memmap) or mm is None or not x.filename or x.flags.writeable \
            or not x.flags.c_contiguous:
        return None
    start = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY  # where numpy's mapping begins
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    return MappedFile(str(x.filename), start + x.ctypes.data - base, x.dtype.str, x.shape)


class ArrayDataset(Dataset):
    """(N, C, L) samples and optional (N,) 0/1 labels over numpy arrays, without copying them.

    ``ds[i]`` gives one sample; ``ds[list_of_indices]`` gives a whole batch from one numpy
    slice (contiguous indices) or fancy-index, which is what ``EpochBatchSampler`` feeds it.
    Samples come out as ``out_dtype`` tensors (float32; ``None`` keeps the stored dtype, e.g.
    float16 to halve host-to-GPU copies and convert on the device). float16 memmaps are fine.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None = None,
        split: str = "data",
        out_dtype: type | np.dtype | None = np.float32,
    ) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            shape = getattr(x, "shape", None)
            raise TrainingDataError(f"{split}: expected an (N, C, L) numpy array, got {shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TrainingDataError(f"{split}: expected floating samples, got {x.dtype}")
        self.x = x
        self.y = _as_labels(y, len(x), split)
        self.split = split
        self.out_dtype = np.dtype(out_dtype) if out_dtype is not None else x.dtype

    def __getstate__(self) -> dict[str, Any]:
        # a memory-mapped file travels by name (DDP's spawned ranks map the same local copy
        # instead of receiving the samples pickled)
        state = dict(self.__dict__)
        mapped = _mapped_file(self.x)
        if mapped is not None:
            state["x"] = mapped
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["x"], MappedFile):
            m = state["x"]
            state["x"] = np.memmap(m.path, dtype=np.dtype(m.dtype), mode="r", offset=m.offset,
                                   shape=m.shape)
        self.__dict__.update(state)

    def _convert(self, a: np.ndarray) -> Tensor:
        # numpy's float16 -> float32 conversion beats torch's on CPU; a gathered batch is
        # already a fresh array, so only a slice of a read-only memmap needs a copy
        if a.dtype != self.out_dtype:
            a = a.astype(self.out_dtype)
        elif not a.flags.writeable or not a.flags.c_contiguous:
            a = np.array(a, order="C")
        return torch.from_numpy(a)

    def __len__(self) -> int:
        return len(self.x)

    def _rows(self, idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray | slice]:
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
            sel: np.ndarray | slice = slice(int(idx[0]), int(idx[-1]) + 1)
        else:
            sel = idx
        return self.x[sel], sel

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> Any:
        if isinstance(index, int | np.integer):
            xb = self._convert(self.x[index])
            if self.y is None:
                return xb
            return xb, torch.tensor(self.y[index])
        xs, sel = self._rows(index)
        xb = self._convert(xs)
        if self.y is None:
            return xb
        return xb, torch.from_numpy(self.y[sel].copy())


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches from a permutation seeded by ``(seed, epoch)``; shards across replicas.

    Lightning calls ``set_epoch`` before each epoch, so the order depends on the epoch number
    only and a resumed run repeats it. A trailing batch smaller than ``min_last_batch`` is
    dropped (BatchNorm cannot train on a batch of one).

    With ``num_replicas > 1`` replica ``rank`` takes every ``num_replicas``-th index of the
    epoch's permutation. ``pad=True`` (training) repeats a few indices so that every replica
    gets the same number of batches, which DDP's gradient synchronisation needs; ``pad=False``
    (validation, prediction) gives disjoint shards that together hold every index exactly once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        min_last_batch: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.min_last_batch, self.num_replicas, self.rank = min_last_batch, num_replicas, rank
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            idx = np.arange(self.n)
        if self.num_replicas > 1:
            if self.pad:
                idx = np.resize(idx, math.ceil(self.n / self.num_replicas) * self.num_replicas)
            idx = idx[self.rank :: self.num_replicas]
        return idx

    def _n_per_replica(self) -> int:
        if self.num_replicas == 1:
            return self.n
        if self.pad:
            return math.ceil(self.n / self.num_replicas)
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._indices()
        for start in range(0, len(idx), self.batch_size):
            batch = idx[start : start + self.batch_size]
            if len(batch) < min(self.min_last_batch, len(idx)):
                break
            yield batch.tolist()

    def __len__(self) -> int:
        m = self._n_per_replica()
        full, rest = divmod(m, self.batch_size)
        return full + int(rest > 0 and rest >= min(self.min_last_batch, m))


def make_loader(dataset: ArrayDataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False, min_last_batch: int = 1,
                num_replicas: int = 1, rank: int = 0, pad: bool = True) -> DataLoader:
    """A DataLoader that fetches each batch with one numpy indexing operation."""
    sampler = EpochBatchSampler(
        len(dataset), batch_size, shuffle, seed, min_last_batch, num_replicas, rank, pad
    )
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0)


class ECGDataModule(L.LightningDataModule):
    """Train and validation arrays as loaders; pinned memory and workers only on GPU.

    With ``device_cast`` (default: when CUDA is present) batches keep the stored dtype (float16)
    on the way to the GPU and ``ECGClassifier`` converts them there to float32. Under DDP each
    process loads its own shard (``EpochBatchSampler``): padded to equal length for training,
    disjoint and complete for validation.
    """

    def __init__(self, train: Split, val: Split, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, pin_memory: bool | None = None,
                 device_cast: bool | None = None) -> None:
        super().__init__()
        gpu = torch.cuda.is_available()
        out = None if (gpu if device_cast is None else device_cast) else np.float32
        self.train_ds = ArrayDataset(*train, "train", out)
        self.val_ds = ArrayDataset(*val, "val", out)
        self.batch_size, self.seed = batch_size, seed
        self.pin_memory = gpu if pin_memory is None else pin_memory
        self.num_workers = num_workers if gpu else 0

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, ds: ArrayDataset, shuffle: bool, min_last: int) -> DataLoader:
        replicas, rank = self._replicas()
        if not shuffle and len(ds) < replicas:
            # an empty shard would leave one process out of DDP's first-forward buffer sync
            raise TrainingDataError(
                f"{ds.split}: {len(ds)} samples cannot be sharded over {replicas} processes"
            )
        return make_loader(ds, self.batch_size, shuffle, self.seed, self.num_workers,
                           self.pin_memory, min_last, replicas, rank, pad=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_ds, shuffle=True, min_last=2)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_ds, shuffle=False, min_last=1)


def check_split(split: str, data: Split) -> None:
    """Raise ``TrainingDataError`` unless ``data`` is an (N, C, L) array and N labels."""
    x, y = data
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise TrainingDataError(
            f"{split}: expected an (N, C, L) array, got {getattr(x, 'shape', x)}"
        )
    if len(np.asarray(y)) != len(x):
        raise TrainingDataError(f"{split}: {len(x)} samples but {len(np.asarray(y))} labels")


def check_trainable(y_train: np.ndarray, y_val: np.ndarray, min_pos: int = 2) -> None:
    """Raise ``InsufficientLabelsError`` if a split has fewer than ``min_pos`` of either class."""
    for split, y in (("train", y_train), ("val", y_val)):
        yf = _as_labels(np.asarray(y), len(y), split)
        assert yf is not None
        pos = int(yf.sum())
        neg = len(yf) - pos
        if pos < min_pos or neg < min_pos:
            raise InsufficientLabelsError(
                f"{split} split has {pos} positive(s) and {neg} negative(s) among {len(yf)}; "
                f"need at least {min_pos} of each"
            )


# -------------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class StageRows:
    """A stage's train rows and the rows that select its checkpoint (``val_*``; ECG ids and
    labels), before any tensor is read; ``selection`` names the protocol (:data:`SELECTIONS`)."""

    train_ids: np.ndarray
    train_y: np.ndarray
    val_ids: np.ndarray
    val_y: np.ndarray
    missing_tensors: int
    selection: str = "selection_split"


@dataclass(frozen=True)
class StageData:
    """A stage's train rows and the rows that select its checkpoint (``val_*``): ECG ids,
    tensors, labels; ``selection`` names the protocol (:data:`SELECTIONS`)."""

    train_ids: np.ndarray
    train_x: np.ndarray
    train_y: np.ndarray
    val_ids: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    missing_tensors: int
    selection: str = "selection_split"

    def counts(self) -> dict[str, int]:
        return {
            "train_ecgs": len(self.train_y), "train_positives": int(self.train_y.sum()),
            # the rows that select the checkpoint: the selection or the validation split
            "selecting_ecgs": len(self.val_y), "selecting_positives": int(self.val_y.sum()),
            "missing_tensors": self.missing_tensors,
        }


def stage_rows(cohort: pl.DataFrame, have: Collection[str], stage: str,
               max_train: int | None = None, seed: int = 0,
               selection: str = "selection_split") -> StageRows:
    """Rows of a stage's cohort with a label and a tensor (an id in ``have``): the training rows
    and the rows that select the checkpoint (``val_*``), each sorted by ecg_id, as the
    ``selection`` protocol says (:data:`SELECTIONS`: by default train on ``train`` and select on
    ``selection``; ``authors_validation`` trains on both and selects on ``validation``).

    ECGs of the cohort without a tensor (quarantined at ingest) are counted in
    ``missing_tensors``. ``max_train`` subsamples the training rows (smoke profile), seeded.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {sorted(SELECTIONS)}, got {selection!r}")
    train_splits, select_split = SELECTIONS[selection]
    which, label = STAGES[stage]
    rows = cohort.filter((pl.col("cohort") == which) & pl.col("split").is_not_null()
                         & pl.col(label).is_not_null())
    if not (rows["split"] == select_split).any():
        raise TrainingDataError(
            f"the {which} cohort has no '{select_split}' split to select the {stage} checkpoint "
            f"(selection {selection!r}); materialize `cohort` again (it carves 'selection' from "
            "'train') or set ACS_SELECTION=authors_validation")
    kept = rows.filter(pl.col("ecg_id").is_in(list(have)))
    out = {}
    for name, splits in (("train", train_splits), ("select", (select_split,))):
        part = kept.filter(pl.col("split").is_in(splits)).sort("ecg_id")
        ids = part["ecg_id"].to_numpy().astype(object)
        y = part[label].to_numpy().astype(np.float32)
        if name == "train" and max_train is not None and len(ids) > max_train:
            keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_train,
                                                              replace=False))
            ids, y = ids[keep], y[keep]
        out[name] = (ids, y)
    return StageRows(*out["train"], *out["select"], missing_tensors=len(rows) - len(kept),
                     selection=selection)


def stage_data(cohort: pl.DataFrame, tset: TensorSet, stage: str,
               max_train: int | None = None, seed: int = 0,
               selection: str = "selection_split") -> StageData:
    """``stage_rows`` with their tensors from a view held in memory (tests, small views;
    the pipeline reads only a stage's rows: ``training.stages.load_stage_data``)."""
    r = stage_rows(cohort, tset.ecg_ids.tolist(), stage, max_train, seed, selection)
    return StageData(r.train_ids, tset.select(r.train_ids.tolist()).x, r.train_y,
                     r.val_ids, tset.select(r.val_ids.tolist()).x, r.val_y, r.missing_tensors,
                     r.selection)
