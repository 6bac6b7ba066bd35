"""Tests for acs_pipeline.training.stages: what re-runs (every call trains; only a crashed
attempt of the same work key resumes), the stage's files, remote resume, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from acs_pipeline.io.storage import Storage
from acs_pipeline.training import stages
from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.data import StageData
from acs_pipeline.training.predict import predict
from acs_pipeline.training.recipes import StagePlan
from acs_pipeline_tests.tiny_training import Interrupt, RaiseAfter, TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PLAN = StagePlan("resnet18", "acs", "smoke",
                 TrainConfig(max_epochs=3, batch_size=16, lr=1e-2, logger="none",
                             accelerator="cpu"))
INPUTS = {"cohort": "c1", "ecg_3by4": "v1"}
FILES = ("best.ckpt", "weights.pt", "model_card.md")


@pytest.fixture(scope="module")
def data() -> StageData:
    (xt, yt), (xv, yv) = make_data(48, 0), make_data(24, 1)
    ids = np.array([f"e{i}" for i in range(72)], dtype=object)
    return StageData(ids[:48], xt, yt, ids[48:], xv, yv, missing_tensors=0)


@pytest.fixture
def fits(monkeypatch) -> list[int]:
    """TinyNet for the registry's model; counts the ``fit`` calls."""
    calls: list[int] = []
    real = stages.fit

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "build_model", lambda model, profile: TinyNet())
    monkeypatch.setattr(stages, "fit", counted)
    return calls


def crash_after(monkeypatch, epoch: int) -> None:
    """Make the next ``fit`` calls raise ``Interrupt`` once ``epoch`` is checkpointed."""
    real = stages.fit

    def crashing(*args, **kwargs):
        return real(*args, **{**kwargs, "callbacks": [*kwargs["callbacks"], RaiseAfter(epoch)]})

    monkeypatch.setattr(stages, "fit", crashing)


def files(st: Storage, res: stages.StageResult) -> set[str]:
    base = stages.stage_dir(res.model, res.stage, res.work_key)
    return {k.removeprefix(base + "/") for k in st.list(base + "/") if "lightning_logs" not in k}


def test_every_call_trains_and_a_finished_stage_is_never_resumed(tmp_path: Path, data, fits):
    st = Storage(str(tmp_path))
    a = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    b = stages.train_stage(st, PLAN, data, work_key="run-b", inputs=INPUTS)
    again = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    assert len(fits) == 3
    for res in (a, b, again):
        assert not res.resumed and res.epochs_run == 3 and res.global_step == 9
        assert files(st, res) == set(FILES)  # last.ckpt deleted once the stage is done
    assert a.checkpoint_uri == str(tmp_path / "models/resnet18/acs/runs/run-a/best.ckpt")
    assert b.checkpoint_uri != a.checkpoint_uri
    # same seed and data on the CPU: the retrained weights are the same
    assert a.weights_sha256 == b.weights_sha256 == again.weights_sha256
    assert stages.StageResult.from_json(a.to_json()) == a
    old = {**json.loads(a.to_json()), "run_key": "0123", "reused": False}  # an earlier layout
    with pytest.raises(ValueError, match="materialize the stage's checkpoint again"):
        stages.StageResult.from_json(json.dumps(old))
    card = (tmp_path / "models/resnet18/acs/runs/run-a/model_card.md").read_text()
    assert "ACS on the tested cohort" in card and a.weights_sha256[:16] in card
    assert a.selection == "selection_split" and "(`selection_split`): best AUROC" in card
    assert a.counts["selecting_ecgs"] == 24


def test_the_result_and_model_card_name_the_authors_protocol(tmp_path: Path, data, fits):
    from dataclasses import replace

    st = Storage(str(tmp_path))
    res = stages.train_stage(st, PLAN, replace(data, selection="authors_validation"),
                             work_key="run-a", inputs=INPUTS)
    assert res.selection == "authors_validation"
    assert stages.StageResult.from_json(res.to_json()).selection == "authors_validation"
    card = (tmp_path / "models/resnet18/acs/runs/run-a/model_card.md").read_text()
    assert "on the validation split (authors' protocol, optimistic)" in card


def test_a_crashed_stage_resumes_with_the_same_work_key(tmp_path: Path, data, fits, monkeypatch):
    st = Storage(str(tmp_path))
    whole = stages.train_stage(st, PLAN, data, work_key="whole", inputs=INPUTS)
    with monkeypatch.context() as m:
        crash_after(m, 1)
        with pytest.raises(Interrupt):
            stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    last = tmp_path / "models/resnet18/acs/runs/run-a/last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    res = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    assert res.resumed and res.epochs_run == 3 and not last.exists()
    assert res.weights_sha256 == whole.weights_sha256
    # a new run does not see the crashed attempt's files
    with monkeypatch.context() as m:
        crash_after(m, 0)
        with pytest.raises(Interrupt):
            stages.train_stage(st, PLAN, data, work_key="run-b", inputs=INPUTS)
    assert not stages.train_stage(st, PLAN, data, work_key="run-c", inputs=INPUTS).resumed


def test_remote_storage_resumes_from_the_uploaded_last_ckpt(
    tmp_path: Path, data, fits, monkeypatch, s3_server, s3_bucket
):
    whole = stages.train_stage(Storage(str(tmp_path / "local")), PLAN, data, work_key="run-a",
                               inputs=INPUTS)
    st = Storage(f"s3://{s3_bucket}/acs", endpoint_url=s3_server)
    base = stages.stage_dir("resnet18", "acs", "run-a")
    scratch = tmp_path / "scratch"
    with monkeypatch.context() as m:
        crash_after(m, 1)
        with pytest.raises(Interrupt):
            stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS, scratch=scratch)
    assert st.list(base + "/") == [f"{base}/best.ckpt", f"{base}/last.ckpt"]
    assert not list((scratch / "acs-train").iterdir())  # the local folder is gone
    res = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS, scratch=scratch)
    assert res.resumed and res.epochs_run == 3
    assert files(st, res) == set(FILES)
    # the best checkpoint's state came back too: the result is the uninterrupted run's
    assert (res.weights_sha256, res.best_val_auroc) == (whole.weights_sha256, whole.best_val_auroc)
    assert res.weights_uri == f"s3://{s3_bucket}/acs/{base}/weights.pt"


def test_predict_stage_uses_the_stored_best_weights(tmp_path: Path, data, fits):
    st = Storage(str(tmp_path))
    res = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    net = TinyNet()
    net.load_state_dict(stages.load_stage_weights(st, res))
    np.testing.assert_array_equal(stages.predict_stage(st, res, data.val_x),
                                  predict(net, data.val_x))


def test_work_key_is_one_folder_name():
    for bad in ("", "a/b"):
        with pytest.raises(ValueError, match="work_key"):
            stages.stage_dir("resnet18", "acs", bad)


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> Storage:
    """A storage root with a 3by4 view of 24 ECGs in several parts (two ingest runs)."""
    from acs_pipeline_tests.ingest.raw_tree import multi_part_view

    return multi_part_view(tmp_path_factory.mktemp("view"))


def test_load_stage_data_reads_the_stage_rows_part_by_part_into_a_mapped_file(
        view, tmp_path, monkeypatch):
    import pickle

    import polars as pl

    from acs_pipeline.ingest import subset
    from acs_pipeline.ingest.read import load_view
    from acs_pipeline.training.data import ArrayDataset, stage_data
    from acs_pipeline_tests.ingest.test_subset import PartCounter

    whole = load_view(view, "ecg_3by4")
    ids = whole.ecg_ids.tolist()
    n = len(ids)
    cohort = pl.DataFrame({
        "ecg_id": [*ids, "ff00000000"],  # the last has no tensor
        "cohort": ["tested"] * 16 + ["untested"] * (n - 16) + ["tested"],
        "split": (["train", "selection", "validation", "train"] * n)[:n] + ["train"],
        "acs": [float(i % 3 == 0) for i in range(n + 1)], "mace": [0.0] * (n + 1)})
    counter = PartCounter()
    monkeypatch.setattr(subset.tensors, "load", counter)
    data = stages.load_stage_data(view, "ecg_3by4", cohort, "acs", tmp_path / "rows")
    assert counter.most_alive == 1 and data.missing_tensors == 1
    want = stage_data(cohort, whole, "acs")
    for f in ("train_ids", "train_x", "train_y", "val_ids", "val_x", "val_y"):
        np.testing.assert_array_equal(getattr(data, f), getattr(want, f))
    assert len(data.train_ids) == 8 and isinstance(data.train_x, np.memmap)
    split = dict(cohort.select("ecg_id", "split").iter_rows())
    assert {split[e] for e in data.val_ids} == {"selection"} and len(data.val_ids) == 4
    authors = stages.load_stage_data(view, "ecg_3by4", cohort, "acs", tmp_path / "authors",
                                     selection="authors_validation")
    assert {split[e] for e in authors.val_ids} == {"validation"}
    assert len(authors.train_ids) == 12 and authors.selection == "authors_validation"
    # DDP's spawned ranks get the file's name, not the samples, and map the same rows
    ds = ArrayDataset(data.val_x, data.val_y)
    blob = pickle.dumps(ds)
    assert len(blob) < 2000 < data.val_x.nbytes
    np.testing.assert_array_equal(pickle.loads(blob).x, data.val_x)


def test_predict_view_predicts_the_asked_ids_part_by_part_in_budget_batches(
        view, tmp_path, data, fits, monkeypatch):
    from acs_pipeline.ingest import subset
    from acs_pipeline.ingest.read import load_view
    from acs_pipeline.training import predict as predict_mod
    from acs_pipeline_tests.ingest.test_subset import PartCounter

    st = Storage(str(tmp_path))
    res = stages.train_stage(st, PLAN, data, work_key="run-a", inputs=INPUTS)
    monkeypatch.setitem(predict_mod.PREDICT_MB_PER_ECG, "resnet18",
                        100.0 / predict_mod.MEMORY_MARGIN)
    batches: list[int] = []

    def recording(model, profile):
        net = TinyNet()
        net.register_forward_pre_hook(lambda m, args: batches.append(len(args[0])))
        return net

    monkeypatch.setattr(stages, "build_model", recording)
    whole = load_view(view, "ecg_3by4")
    asked = [*whole.ecg_ids[[20, 3, 11, 7, 15]].tolist(), "ff00000000"]
    counter = PartCounter()
    monkeypatch.setattr(subset.tensors, "load", counter)
    # the view lives under another root than the weights: read each from its own storage
    monkeypatch.setattr(stages, "iter_subset",
                        lambda _st, v, ids, prefix: subset.iter_subset(view, v, ids, prefix))
    ids, probs = stages.predict_view(st, {"acs": res, "again": res}, "ecg_3by4", asked,
                                     budget_mb=250)
    assert counter.most_alive == 1
    assert ids.tolist() == sorted(asked[:-1])  # only the asked ids the view has
    assert sum(batches) == 2 * 5 and max(batches) <= 2  # 250 MB / 100 MB per ECG
    net = TinyNet()
    net.load_state_dict(stages.load_stage_weights(st, res))
    want = predict(net, whole.select(ids.tolist()).x)
    np.testing.assert_allclose(probs["acs"], want, rtol=1e-6)
    np.testing.assert_array_equal(probs["again"], probs["acs"])
