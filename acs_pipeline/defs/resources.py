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
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    hubert_pretrained_uri: str | None = Field(
        default=None,
        description="The self-supervised pretrained HuBERT-ECG file (hubert_ecg_<size>.pt), a "
        "path or s3:// URI (ACS_HUBERT_PRETRAINED_URI), that the paper profile fine-tunes; "
        "'none-from-scratch' trains from a random start; unset -> paper HuBERT is refused.",
    )
    selection: Literal["selection_split", "authors_validation"] = Field(
        default="selection_split",
        description="Which ECGs choose each stage's checkpoint (ACS_SELECTION): "
        "'selection_split' (patients carved from training; the report's validation split stays "
        "untouched) or 'authors_validation' (the authors' protocol: train on all of training, "
        "select on the validation split the report scores).",
    )
    seeds: list[int] = Field(
        default=[], description="Extra training seeds for `<model>_seed_sweep` (ACS_SEEDS, e.g. "
        "'0,1,2'; splits fixed); none and no split seeds -> the sweep is skipped.")
    split_seeds: list[int] = Field(
        default=[], description="Split seeds for `<model>_seed_sweep` (ACS_SPLIT_SEEDS; the "
        "training seed fixed at ACS_SEED).")
    sweep_models: list[str] = Field(
        default=[], description="The models whose seed sweep runs (ACS_SWEEP_MODELS, "
        "comma-separated; none -> every model).")


class GpuLauncherSettings(BaseModel):
    """Where runs that train or predict with a network run (``ACS_GPU_*``, read at load time);
    ``acs_pipeline/defs/gpu.py`` turns them into the run launcher's tags."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    launcher: Literal["none", "ecs", "k8s"] = Field(
        default="none", description="ACS_GPU_LAUNCHER: 'ecs' (EcsRunLauncher), 'k8s' "
        "(K8sRunLauncher) or 'none' (no launcher tags: runs use the launcher's default task).")
    capacity_provider: str | None = Field(
        default=None, description="ACS_GPU_CAPACITY_PROVIDER: ECS capacity provider of the GPU "
        "instances (stack output GpuCapacityProviderName); required with 'ecs'.")
    task_definition: str | None = Field(
        default=None, description="ACS_GPU_TASK_DEFINITION: ECS GPU run task definition, family "
        "or ARN (stack output GpuTaskDefinitionArn); required with 'ecs'.")
    cpu: int = Field(default=7168, gt=0, description="ACS_GPU_CPU: CPU units (1024 = 1 vCPU).")
    memory_mib: int = Field(default=28672, gt=0, description="ACS_GPU_MEMORY: MiB.")
    gpus: int = Field(default=1, gt=0, description="ACS_GPU_COUNT: GPUs per run.")
    node_selector: dict[str, str] = Field(
        default={"acs/node-pool": "gpu"},
        description="ACS_GPU_NODE_SELECTOR (JSON object): Kubernetes node selector.")
    tolerations: list[dict[str, str]] = Field(
        default=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="ACS_GPU_TOLERATIONS (JSON list): Kubernetes tolerations.")
    image: str | None = Field(
        default=None, description="ACS_GPU_IMAGE: Kubernetes only, the GPU image of the code "
        "(ECS takes it from the GPU task definition).")


GPU_VARIABLES = {
    "launcher": "ACS_GPU_LAUNCHER", "capacity_provider": "ACS_GPU_CAPACITY_PROVIDER",
    "task_definition": "ACS_GPU_TASK_DEFINITION", "cpu": "ACS_GPU_CPU",
    "memory_mib": "ACS_GPU_MEMORY", "gpus": "ACS_GPU_COUNT",
    "node_selector": "ACS_GPU_NODE_SELECTOR", "tolerations": "ACS_GPU_TOLERATIONS",
    "image": "ACS_GPU_IMAGE",
}  # fmt: skip


def gpu_settings_from_env(env: Mapping[str, str]) -> GpuLauncherSettings:
    """The GPU launcher settings from ``ACS_GPU_*``; unset -> launcher 'none'. A bad value, or
    'ecs' without its capacity provider and task definition, is an error naming the variable."""
    values: dict = {}
    for field, variable in GPU_VARIABLES.items():
        raw = (env.get(variable) or "").strip()
        if not raw:
            continue
        if field in ("node_selector", "tolerations"):
            try:
                values[field] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{variable} is not JSON: {exc}") from exc
        else:
            values[field] = raw.lower() if field == "launcher" else raw
    try:
        settings = GpuLauncherSettings(**values)
    except ValidationError as exc:
        bad = ", ".join(GPU_VARIABLES[str(e["loc"][0])] + f": {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid GPU launcher settings: {bad}") from exc
    if settings.launcher == "ecs":
        missing = [GPU_VARIABLES[f] for f in ("capacity_provider", "task_definition")
                   if getattr(settings, f) is None]
        if missing:
            raise MissingSettingError(
                f"ACS_GPU_LAUNCHER=ecs needs {' and '.join(missing)} (the stack outputs "
                "GpuCapacityProviderName and GpuTaskDefinitionArn).")
    return settings


def gpu_settings() -> GpuLauncherSettings:
    """The GPU launcher settings of this process's environment."""
    return gpu_settings_from_env(os.environ)


def _ints(env: Mapping[str, str], variable: str) -> list[int]:
    """A comma-separated list of integers (seeds), distinct, in the given order; unset -> []."""
    out: list[int] = []
    for part in (env.get(variable) or "").split(","):
        if not part.strip():
            continue
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"{variable} must be comma-separated integers, got "
                             f"{env[variable]!r}") from None
        if n not in out:
            out.append(n)
    return out


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
        "settings": settings_from_env(env),
    }


def settings_from_env(env: Mapping[str, str]) -> "PipelineSettings":
    """The pipeline settings from ``ACS_*`` variables (``resources_from_env``'s ``settings``)."""
    return PipelineSettings(
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
        hubert_pretrained_uri=env.get("ACS_HUBERT_PRETRAINED_URI") or None,
        selection=env.get("ACS_SELECTION") or "selection_split",
        seeds=_ints(env, "ACS_SEEDS"),
        split_seeds=_ints(env, "ACS_SPLIT_SEEDS"),
        sweep_models=[m.strip() for m in env.get("ACS_SWEEP_MODELS", "").split(",")
                      if m.strip()],
    )


def settings_key() -> tuple[tuple[str, str], ...]:
    """Every ``ACS_*`` variable of this process: the definitions built under one key are the same
    (definitions.py builds them once per key)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("ACS_")))


def loaded_settings() -> "PipelineSettings":
    """The settings of this process's environment, as the code location loads them (the
    training assets' code versions name the settings that change what is trained)."""
    return settings_from_env(os.environ)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env(os.environ))
