"""Resources: where the raw data and the storage root are, and the run profile.

This is the one place that reads the environment (``ACS_*``, ``AWS_ENDPOINT_URL``); everything
downstream receives plain values from these resources.

``ACS_STORAGE_URI`` and ``ACS_RAW_URI`` are required and have no default: the definitions load
without them (to list or inspect them), but a step that needs one fails when its resource is
initialized, naming the variable. ``make demo``, ``make dev`` and ``make test`` export the demo
cohort's paths explicitly; nothing else falls back to ``./.demo``. ``ACS_HOLDOUT_URI`` and
``ACS_TRUTH_URI`` are optional: unset means no holdout and no synthetic truth.
"""

import json
import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from acs_pipeline.io.storage import Storage

REQUIRED = {
    "ACS_STORAGE_URI": "the storage root for tensors, tables, checkpoints and reports",
    "ACS_RAW_URI": "the raw ed-bwh-ecg/v1 dataset root",
}


class MissingSettingError(ValueError):
    """A required setting (environment variable) is not set."""


def required(value: str | None, variable: str) -> str:
    """``value``, or an error naming ``variable`` and what it is for."""
    if not value:
        raise MissingSettingError(
            f"{variable} is not set: it must name {REQUIRED[variable]} (a local directory or "
            f"s3://bucket/prefix). Set {variable} in the environment of the code location and "
            "of the runs; only `make demo`, `make dev` and `make test` set demo values.")
    return value


class StorageResource(dg.ConfigurableResource):
    """The storage root for tensors, tables, checkpoints, predictions and reports."""

    root: str | None = Field(
        default=None, description="Local directory or s3://bucket/prefix (ACS_STORAGE_URI, "
        "required: a step using it fails at start when it is unset).")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (AWS_ENDPOINT_URL).")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        required(self.root, "ACS_STORAGE_URI")  # fail at the step's start, not mid-way

    def get(self) -> Storage:
        return Storage(required(self.root, "ACS_STORAGE_URI"), endpoint_url=self.endpoint_url)


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

    root: str | None = Field(
        default=None, description="Dataset root, local or s3:// (ACS_RAW_URI, required: a step "
        "using it fails at start when it is unset).")
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

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        required(self.root, "ACS_RAW_URI")

    def workers(self) -> int:
        return self.ingest_workers if self.ingest_workers > 0 else (os.cpu_count() or 1)

    def source(self) -> Storage:
        return Storage(required(self.root, "ACS_RAW_URI"), endpoint_url=self.endpoint_url,
                       max_workers=self.max_workers)

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
    predict_memory_mb: int = Field(
        default=2048, gt=0,
        description="Memory for one prediction batch's activations, in MB "
        "(ACS_PREDICT_MEMORY_MB): batch sizes follow it, per model.",
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
    """Build the resources from ``ACS_*`` variables. Nothing falls back to the demo cohort: an
    unset required root stays None, and the resource names the variable when a step uses it."""
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    storage = StorageResource(root=env.get("ACS_STORAGE_URI") or None, endpoint_url=endpoint)
    return {
        "storage": storage,
        "step_values": StepValuesIOManager(storage=storage),
        "raw": RawDataResource(
            root=env.get("ACS_RAW_URI") or None,
            holdout_root=env.get("ACS_HOLDOUT_URI") or None,
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
            predict_memory_mb=int(env.get("ACS_PREDICT_MEMORY_MB", "2048")),
            truth_uri=env.get("ACS_TRUTH_URI") or None,
            id_column=env.get("ACS_SUBMISSION_ID_COLUMN", "ecg_id"),
            prediction_column=env.get("ACS_SUBMISSION_PREDICTION_COLUMN", "prediction"),
            released_weights_uri=env.get("ACS_RELEASED_WEIGHTS_URI") or None,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env(os.environ))
