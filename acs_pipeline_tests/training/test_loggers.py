"""Tests for training's experiment loggers: CSV, TensorBoard, MLflow, and their errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from acs_pipeline.training.config import TrainConfig
from acs_pipeline.training.fit import fit
from acs_pipeline.training.trainer import LoggerUnavailableError
from acs_pipeline_tests.tiny_training import TinyNet, make_data

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def data():
    return make_data(48, 0, length=200), make_data(24, 1, length=200)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"batch_size": 16, "lr": 1e-2, "max_epochs": 2, **kw})


def test_tensorboard_events_hold_the_validation_metrics(tmp_path: Path, data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = fit(TinyNet, *data, tmp_path, cfg(logger="tensorboard"))
    events = list((tmp_path / "lightning_logs").glob("version_*/events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val_auroc", "val_loss", "train_loss", "train_loss_epoch"} <= tags
    assert "hp_metric" not in tags
    for name in ("val_auroc", "val_loss"):
        logged = [e.value for e in acc.Scalars(name)]
        expected = [r[name] for r in res.history]
        np.testing.assert_allclose(logged, expected, rtol=1e-6)
    # 48 samples in batches of 16: 3 steps an epoch, the step loss logged once an epoch
    assert [e.step for e in acc.Scalars("train_loss")] == [2, 5]
    hparams = (events[0].parent / "hparams.yaml").read_text()
    assert "batch_size: 16" in hparams


def test_csv_logger_writes_metrics_and_config(tmp_path: Path, data) -> None:
    res = fit(TinyNet, *data, tmp_path, cfg(logger="csv"))
    lines = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    cols = lines[0].split(",")
    assert {"val_auroc", "val_loss", "train_loss", "train_loss_epoch"} <= set(cols)
    i = cols.index("val_auroc")
    logged = [float(ln.split(",")[i]) for ln in lines[1:] if ln.split(",")[i]]
    np.testing.assert_allclose(logged, [r["val_auroc"] for r in res.history], rtol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
# MLflow's SQL store still configures a loader strategy that SQLAlchemy 2.1 deprecates
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_mlflow_run_holds_metrics_and_params(tmp_path: Path, data) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run-a"
    res = fit(
        TinyNet, *data, out, cfg(logger="mlflow", tracking_uri=uri, experiment_name="acs-test")
    )
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("acs-test")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run-a"
    assert run.data.tags["acs_pipeline.out_dir"] == str(out)
    assert run.data.params["batch_size"] == "16"
    assert "tracking_uri" not in run.data.params
    hist = client.get_metric_history(run.info.run_id, "val_auroc")
    np.testing.assert_allclose(
        [m.value for m in sorted(hist, key=lambda m: m.step)],
        [r["val_auroc"] for r in res.history],
        rtol=1e-6,
    )
    assert {"val_loss", "train_loss", "train_loss_epoch"} <= set(run.data.metrics)


def test_bad_logger_configs_are_clear_errors(tmp_path: Path, data, monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"logger must be one of .*'wandb'"):
        TrainConfig(logger="wandb")
    with pytest.raises(ValueError, match="needs tracking_uri"):
        TrainConfig(logger="mlflow")

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    c = cfg(logger="mlflow", tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(LoggerUnavailableError, match=r"pip install .*mlflow-skinny==3\.17\.2"):
        fit(TinyNet, *data, tmp_path / "run", c)
    # nothing was written for a run that could not start
    assert not (tmp_path / "run").exists()


def test_logger_settings_flow_from_the_environment_to_the_train_config() -> None:
    from acs_pipeline.defs.resources import resources_from_env
    from acs_pipeline.training.recipes import plan

    default = resources_from_env({})["settings"]
    assert (default.logger, default.mlflow_tracking_uri, default.experiment_name) == (
        "csv",
        None,
        "acs-pipeline",
    )
    env = {
        "ACS_LOGGER": "mlflow",
        "MLFLOW_TRACKING_URI": "http://fallback:5000",
        "ACS_MLFLOW_TRACKING_URI": "sqlite:////tmp/acs.db",
        "ACS_EXPERIMENT": "exp-7",
        "ACS_STRATEGY": "ddp",
        "ACS_DEVICES": "2",
    }
    s = resources_from_env(env)["settings"]
    assert s.mlflow_tracking_uri == "sqlite:////tmp/acs.db"
    fallback = resources_from_env({**env, "ACS_MLFLOW_TRACKING_URI": ""})["settings"]
    assert fallback.mlflow_tracking_uri == "http://fallback:5000"
    p = plan(
        "ecg_omi",
        "mace",
        "smoke",
        devices=s.devices,
        strategy=s.strategy,
        logger=s.logger,
        tracking_uri=s.mlflow_tracking_uri,
        experiment_name=s.experiment_name,
    )
    c = p.config
    assert (c.logger, c.tracking_uri, c.experiment_name) == (
        "mlflow",
        "sqlite:////tmp/acs.db",
        "exp-7",
    )
    assert (c.devices, c.strategy) == ("2", "ddp")
