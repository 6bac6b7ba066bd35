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
