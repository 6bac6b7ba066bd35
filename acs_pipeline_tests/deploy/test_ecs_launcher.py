"""The deployment's run launcher (acs_pipeline/deploy/ecs_launcher.py) on its own: what it imports,
and the derived task definition against moto's ECS. defs/test_gpu_routing.py launches runs with it
against the stack."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version

import boto3
import pytest
from dagster import DagsterInvariantViolationError
from moto import mock_aws

from acs_pipeline.deploy.ecs_launcher import GpuSecretsEcsRunLauncher, merge_secrets
from acs_pipeline_tests.s3_fixtures import AWS_ENV_TO_CLEAR, FAKE_AWS_ENV
from acs_pipeline_tests.stack_fixtures import INSTANCE, ROOT

OWN = {"name": "OWN_TOKEN", "valueFrom": "arn:aws:secretsmanager:us-east-1:123:secret:own"}
SHARED = {"name": "DAGSTER_POSTGRES_PASSWORD", "valueFrom": "arn:old:password::"}


def test_the_instance_file_names_this_launcher() -> None:
    launcher = INSTANCE["run_launcher"]
    assert (launcher["module"], launcher["class"]) == (
        GpuSecretsEcsRunLauncher.__module__,
        GpuSecretsEcsRunLauncher.__name__,
    )


def test_the_override_is_pinned_to_the_dagster_aws_it_was_read_against() -> None:
    """It overrides a private method of EcsRunLauncher: an upgrade must re-read the launcher."""
    assert version("dagster-aws") == "0.29.27"


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(run.stdout.split())


def test_importing_it_imports_no_pipeline_dependency() -> None:
    """The daemon image installs dagster and dagster-aws only."""
    loaded = modules_after("import acs_pipeline.deploy.ecs_launcher")
    top = {m.split(".")[0] for m in loaded}
    assert {"dagster", "dagster_aws", "boto3"} <= top
    assert not {"torch", "lightning", "polars", "pandas", "numpy", "pyarrow"} & top
    assert {m for m in loaded if m.startswith("acs_pipeline")} == {
        "acs_pipeline",
        "acs_pipeline.deploy",
        "acs_pipeline.deploy.ecs_launcher",
    }


def test_the_code_location_does_not_load_it() -> None:
    """definitions.py loads every module under defs/; this one stays out, so the code location
    does not need dagster-aws (the `deploy` extra; Dagster loads its components when present)."""
    loaded = modules_after("from acs_pipeline.definitions import defs; defs()")
    assert "acs_pipeline.defs.gpu" in loaded
    assert not {m for m in loaded if m.startswith("acs_pipeline.deploy")}


def test_merge_keeps_own_secrets_and_the_launchers_win_on_a_name() -> None:
    merged = merge_secrets(
        [SHARED, OWN],
        {"DAGSTER_POSTGRES_PASSWORD": "arn:new:password::", "MLFLOW_TRACKING_TOKEN": "arn:mlflow"},
    )
    assert merged == [
        {"name": "DAGSTER_POSTGRES_PASSWORD", "valueFrom": "arn:new:password::"},
        {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": "arn:mlflow"},
        OWN,
    ]


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[GpuSecretsEcsRunLauncher]:
    for variable in AWS_ENV_TO_CLEAR:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(variable, value)
    with mock_aws():
        yield GpuSecretsEcsRunLauncher(use_current_ecs_task_config=False)


def register_base(ecs, image: str = "gpu:1") -> str:
    return ecs.register_task_definition(
        family="gpu-run",
        requiresCompatibilities=["EC2"],
        networkMode="awsvpc",
        cpu="7168",
        memory="28672",
        executionRoleArn="arn:aws:iam::123456789012:role/acs-ecs-execution",
        taskRoleArn="arn:aws:iam::123456789012:role/acs-run",
        containerDefinitions=[
            {
                "name": "run",
                "image": image,
                "essential": True,
                "resourceRequirements": [{"type": "GPU", "value": "1"}],
                "environment": [{"name": "ACS_PROFILE", "value": "paper"}],
                "secrets": [SHARED, OWN],
            },
            {"name": "sidecar", "image": "sidecar:1", "essential": False},
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def without(definition: dict, *keys: str) -> dict:
    return {k: v for k, v in definition.items() if k not in keys}


VARYING = ("taskDefinitionArn", "family", "revision", "registeredAt", "registeredBy")


def test_derived_definition_is_the_base_with_the_launchers_secrets(
    launcher: GpuSecretsEcsRunLauncher,
) -> None:
    ecs = boto3.client("ecs")
    base = register_base(ecs)
    secrets = {"DAGSTER_POSTGRES_PASSWORD": "arn:new:password::", "MLFLOW": "arn:mlflow"}
    arn = launcher.derive_task_definition(base, "run", secrets)
    derived = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    described = ecs.describe_task_definition(taskDefinition=base)["taskDefinition"]
    assert (derived["family"], derived["revision"]) == ("gpu-run-launched", 1)
    run, sidecar = derived["containerDefinitions"]
    assert run.pop("secrets") == merge_secrets([SHARED, OWN], secrets)
    base_run, base_sidecar = described["containerDefinitions"]
    assert base_run.pop("secrets") == [SHARED, OWN]  # the base is left as it was
    assert json.dumps(without(derived, *VARYING), sort_keys=True) == json.dumps(
        without(described, *VARYING), sort_keys=True
    )
    assert "secrets" not in sidecar

    # the same secrets again: the latest revision is reused; a new one: a new revision
    assert launcher.derive_task_definition(base, "run", dict(reversed(secrets.items()))) == arn
    newer = launcher.derive_task_definition(base, "run", secrets | {"HF_TOKEN": "arn:hf"})
    assert newer.endswith("gpu-run-launched:2")
    # a new revision of the base (a stack update: new image) makes a new derived revision
    update = register_base(ecs, image="gpu:2")
    latest = launcher.derive_task_definition(update, "run", secrets | {"HF_TOKEN": "arn:hf"})
    assert latest.endswith("gpu-run-launched:3")
    (container, _) = ecs.describe_task_definition(taskDefinition=latest)["taskDefinition"][
        "containerDefinitions"
    ]
    assert container["image"] == "gpu:2"


def test_a_base_without_the_run_container_is_refused(launcher: GpuSecretsEcsRunLauncher) -> None:
    base = register_base(boto3.client("ecs"))
    with pytest.raises(DagsterInvariantViolationError, match="no container named 'main'"):
        launcher.derive_task_definition(base, "main", {})
