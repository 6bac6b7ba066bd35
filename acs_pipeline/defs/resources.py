"""Resources: where the raw data and the storage root are, and the run profile.

This is the one place that reads the environment (``ACS_*``, ``AWS_ENDPOINT_URL``); everything
downstream receives plain values from these resources.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from pydantic import Field

from acs_pipeline.io.storage import Storage

DEFAULT_DEMO = Path.cwd() / ".demo"


class StorageResource(dg.ConfigurableResource):
    """The storage root for tensors, tables, checkpoints, predictions and reports."""

    root: str = Field(description="Local directory or s3://bucket/prefix (ACS_STORAGE_URI).")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (AWS_ENDPOINT_URL).")

    def get(self) -> Storage:
        return Storage(self.root, endpoint_url=self.endpoint_url)


class StepValuesIOManager(dg.ConfigurableIOManager):
    """Small JSON values passed between the steps of one run (which shards a step updates,
    what it did), stored under ``dagster/step-values/<run>/`` in the storage root, so steps in
    separate processes or containers see them. Tensors never go through it."""

    storage: StorageResource

    def _rel(self, context: dg.OutputContext) -> str:
        # run (the producing one, also on re-execution), step, output[, mapping key]
        return f"dagster/step-values/{'/'.join(context.get_identifier())}.json"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        self.storage.get().write_bytes(self._rel(context), json.dumps(obj).encode())

    def load_input(self, context: dg.InputContext):
        return json.loads(self.storage.get().read_bytes(self._rel(context.upstream_output)))


class RawDataResource(dg.ConfigurableResource):
    """The raw ``ed-bwh-ecg/v1`` dataset and the unlabelled holdout waveforms."""

    root: str = Field(description="Dataset root, local or s3:// (ACS_RAW_URI).")
    holdout_root: str | None = Field(
        default=None, description="Holdout waveforms root (ACS_HOLDOUT_URI); none -> no holdout."
    )
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (AWS_ENDPOINT_URL).")
    max_workers: int = Field(default=8, description="Concurrent reads.")
    ingest_workers: int = Field(
        default=1, description="Steps that update ingest shards in parallel under the "
        "multiprocess or a per-container executor (ACS_INGEST_WORKERS; 0: one per CPU core)."
    )
    ingest_step_files: int = Field(
        default=512, description="Fewest files to decode per parallel update step "
        "(ACS_INGEST_STEP_FILES): a step costs seconds to start, so small updates use fewer."
    )
    shard_digits: int = Field(
        default=2, description="Hex digits of the ECG id that name an ingest shard "
        "(ACS_INGEST_SHARD_DIGITS): 2 = Nightingale's 256 folders, 1 = 16 larger shards."
    )

    def workers(self) -> int:
        return self.ingest_workers if self.ingest_workers > 0 else (os.cpu_count() or 1)

    def source(self) -> Storage:
        return Storage(self.root, endpoint_url=self.endpoint_url, max_workers=self.max_workers)

    def holdout(self) -> Storage | None:
        if not self.holdout_root:
            return None
        return Storage(
            self.holdout_root, endpoint_url=self.endpoint_url, max_workers=self.max_workers
        )


class PipelineSettings(dg.ConfigurableResource):
    """Run-wide settings: the training profile, the seed, the accelerator, the submission format."""

    profile: str = Field(default="smoke", description="'smoke' (CPU minutes) or 'paper'.")
    seed: int = Field(default=0, description="Seed for splits and training.")
    accelerator: str = Field(default="auto", description="Lightning accelerator.")
    devices: str = Field(default="auto", description="Lightning devices ('auto', '1', '4').")
    strategy: str = Field(
        default="auto",
        description="Lightning strategy ('auto', 'ddp'; with several devices, DDP in spawned "
        "worker processes).",
    )
    logger: str = Field(
        default="csv", description="Experiment logger: 'csv', 'tensorboard', 'mlflow' or 'none'."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (ACS_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI), "
        "e.g. sqlite:///path/mlflow.db; needed with logger 'mlflow'.",
    )
    experiment_name: str = Field(
        default="acs-pipeline", description="MLflow experiment name (ACS_EXPERIMENT)."
    )
    torch_threads: int = Field(
        default=0, description="CPU threads per training/prediction step (0: torch's default)."
    )
    truth_uri: str | None = Field(
        default=None, description="Synthetic truth CSV (oracle risk), local path; optional."
    )
    id_column: str = Field(default="ecg_id", description="Leaderboard CSV id column.")
    prediction_column: str = Field(default="prediction", description="Leaderboard score column.")
    released_weights_uri: str | None = Field(
        default=None,
        description="The authors' released weights, a directory or s3:// prefix "
        "(ACS_RELEASED_WEIGHTS_URI); none -> the released assets are skipped.",
    )


def resources_from_env(env: Mapping[str, str]) -> dict[str, dg.ConfigurableResource]:
    """Build the resources from ``ACS_*`` variables, defaulting to the embedded demo cohort."""
    demo = Path(env.get("ACS_DEMO_DIR", str(DEFAULT_DEMO)))
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    storage = StorageResource(
        root=env.get("ACS_STORAGE_URI", str(demo / "storage")), endpoint_url=endpoint
    )
    return {
        "storage": storage,
        "step_values": StepValuesIOManager(storage=storage),
        "raw": RawDataResource(
            root=env.get("ACS_RAW_URI", str(demo / "data" / "ed-bwh-ecg" / "v1")),
            holdout_root=env.get(
                "ACS_HOLDOUT_URI", str(demo / "data" / "ed-bwh-ecg" / "holdout")
            )
            or None,
            endpoint_url=endpoint,
            max_workers=int(env.get("ACS_MAX_WORKERS", "8")),
            ingest_workers=int(env.get("ACS_INGEST_WORKERS", "0")),
            ingest_step_files=int(env.get("ACS_INGEST_STEP_FILES", "512")),
            shard_digits=int(env.get("ACS_INGEST_SHARD_DIGITS", "2")),
        ),
        "settings": PipelineSettings(
            profile=env.get("ACS_PROFILE", "smoke"),
            seed=int(env.get("ACS_SEED", "0")),
            accelerator=env.get("ACS_ACCELERATOR", "auto"),
            devices=env.get("ACS_DEVICES", "auto"),
            strategy=env.get("ACS_STRATEGY", "auto"),
            logger=env.get("ACS_LOGGER", "csv"),
            mlflow_tracking_uri=env.get("ACS_MLFLOW_TRACKING_URI")
            or env.get("MLFLOW_TRACKING_URI")
            or None,
            experiment_name=env.get("ACS_EXPERIMENT", "acs-pipeline"),
            torch_threads=int(env.get("ACS_TORCH_THREADS", "0")),
            truth_uri=env.get("ACS_TRUTH_URI", str(demo / "data" / "synthetic-truth.csv")),
            id_column=env.get("ACS_SUBMISSION_ID_COLUMN", "ecg_id"),
            prediction_column=env.get("ACS_SUBMISSION_PREDICTION_COLUMN", "prediction"),
            released_weights_uri=env.get("ACS_RELEASED_WEIGHTS_URI") or None,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env(os.environ))
