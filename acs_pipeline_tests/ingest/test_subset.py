"""Chosen ids of a view, read part by part: one part in memory at a time, rows in asked order."""

import weakref

import numpy as np
import pytest

from acs_pipeline.ingest import subset
from acs_pipeline.ingest.read import load_view, shard_paths
from acs_pipeline.io import tensors
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.ingest.raw_tree import multi_part_view


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Storage:
    """A 3by4 view of 24 ECGs in several shards, two of them holding two parts."""
    st = multi_part_view(tmp_path_factory.mktemp("subset"))
    assert len(shard_paths(st, "ecg_3by4")) > 3
    return st


class PartCounter:
    """Wraps ``tensors.load``: counts parts read and the most ever alive at once."""

    def __init__(self) -> None:
        self.load = tensors.load
        self.reset()

    def reset(self) -> None:
        self.loaded, self.most_alive, self.refs = 0, 0, []

    def __call__(self, storage, rel):
        part = self.load(storage, rel)
        self.refs = [r for r in self.refs if r() is not None]
        self.refs.append(weakref.ref(part))
        self.loaded += 1
        self.most_alive = max(self.most_alive, len(self.refs))
        return part


@pytest.fixture
def counter(monkeypatch) -> PartCounter:
    c = PartCounter()
    monkeypatch.setattr(subset.tensors, "load", c)
    return c


def test_read_subset_gives_the_asked_rows_in_order_holding_one_part(storage, counter, tmp_path):
    whole = load_view(storage, "ecg_3by4")
    ids = whole.ecg_ids[[17, 2, 9, 0, 23, 11]].tolist()  # across shards, not sorted
    counter.reset()
    got = subset.read_subset(storage, "ecg_3by4", ids)
    assert got.ecg_ids.tolist() == ids
    np.testing.assert_array_equal(got.x, whole.select(ids).x)
    assert counter.loaded == len(shard_paths(storage, "ecg_3by4"))
    assert counter.most_alive == 1  # a part is released before the next is read

    counter.reset()
    mapped = subset.read_subset(storage, "ecg_3by4", ids, out=tmp_path / "x.npy")
    assert isinstance(mapped.x, np.memmap) and not mapped.x.flags.writeable
    np.testing.assert_array_equal(mapped.x, got.x)
    assert counter.most_alive == 1


def test_iter_subset_yields_only_wanted_rows_part_by_part(storage, counter):
    whole = load_view(storage, "ecg_3by4")
    ids = set(whole.ecg_ids[::5].tolist()) | {"ff00000000"}  # one id the view lacks
    counter.reset()
    parts = list(subset.iter_subset(storage, "ecg_3by4", ids))
    got = [e for p in parts for e in p.ecg_ids.tolist()]
    assert sorted(got) == sorted(ids - {"ff00000000"})
    for p in parts:
        np.testing.assert_array_equal(p.x, whole.select(p.ecg_ids.tolist()).x)
    assert counter.most_alive == 1
    every = list(subset.iter_subset(storage, "ecg_3by4"))
    assert sum(len(p) for p in every) == len(whole)


def test_view_ids_and_errors(storage):
    whole = load_view(storage, "ecg_3by4")
    assert subset.view_ids(storage, "ecg_3by4").tolist() == whole.ecg_ids.tolist()
    with pytest.raises(tensors.TensorFileError, match=r"1 requested ECG\(s\).*ff00000000"):
        subset.read_subset(storage, "ecg_3by4", [whole.ecg_ids[0], "ff00000000"])
    with pytest.raises(tensors.TensorFileError, match="duplicate"):
        subset.read_subset(storage, "ecg_3by4", [whole.ecg_ids[0]] * 2)
    empty = subset.read_subset(storage, "ecg_3by4", [])
    assert empty.x.shape == (0, 3, 5000)
