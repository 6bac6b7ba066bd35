"""GPU routing: runs of `train` and the weekly `full` start on the GPU, `ingest` does not.

The AWS stack (docker/aws/stack.template) is created in moto (stack_fixtures.py); the code
location is loaded with the environment of the stack's `code` task definition (which names the GPU
task definition and capacity provider in ``ACS_GPU_*``), the instance with docker/dagster.aws.yaml
and the daemon task's environment, and runs are created as the UI and the scheduler create them
and launched by the instance file's run launcher (``GpuSecretsEcsRunLauncher``: dagster-aws's
``EcsRunLauncher`` that starts GPU runs from a copy of the GPU task definition carrying its
secrets). Registering and describing task definitions, listing secrets and the cluster are
moto's. moto 5.2 cannot place these tasks (its RunTask sums container-level memory, which these
task definitions leave to the task level, and its container instances have a fixed 4 vCPU /
7.3 GB), so the RunTask request is taken from the ECS client on the wire (botocore's
``before-call.ecs.RunTask`` event, after botocore validated it against ECS's API) and answered
with a task ARN; everything the request names is checked in moto.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from botocore.awsrequest import AWSResponse
from dagster import DagsterInstance
from dagster._core.launcher import LaunchRunContext
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon import get_default_daemon_logger  # noqa: F401 (imports the scheduler)
from dagster._scheduler.scheduler import _create_scheduler_run

from acs_pipeline.defs.gpu import ECS_TAGS, GPU_QUEUE_TAGS
from acs_pipeline.deploy.ecs_launcher import DERIVED_FAMILY_SUFFIX, GpuSecretsEcsRunLauncher
from acs_pipeline_tests.stack_fixtures import (
    INSTANCE,
    REGION,
    ROOT,
    UNSUPPORTED,
    Stack,
    created_stack,
    env_of,
    secrets_of,
)
from acs_pipeline_tests.test_deployment import LOCATION, MODULE, sqlite_copy
from acs_pipeline_tests.test_stack import allowed

GPU = {"type": "GPU", "value": "1"}


@dataclass
class Deployment:
    stack: Stack
    instance: DagsterInstance
    location: Any
    provider: str
    run_tasks: list[dict[str, Any]] = field(default_factory=list)  # RunTask requests, in order

    def launch(self, run: DagsterRun) -> dict[str, Any]:
        """Launch ``run`` with the instance's run launcher; the RunTask request it sent."""
        before = len(self.run_tasks)
        self.instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert len(self.run_tasks) == before + 1
        return self.run_tasks[-1]

    def task_definition(self, name: str) -> dict[str, Any]:
        ecs = self.stack.client("ecs")
        return ecs.describe_task_definition(taskDefinition=name)["taskDefinition"]

    def revisions(self, family: str) -> list[str]:
        ecs = self.stack.client("ecs")
        return ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]

    @property
    def repository(self):
        (repository,) = self.location.get_repositories().values()
        return repository


def answer_run_task(runs: list[dict[str, Any]], cluster_arn: str):
    """A ``before-call.ecs.RunTask`` handler: record the request body, answer one task."""

    def handler(params: dict[str, Any], **_: Any):
        request = json.loads(params["body"])
        runs.append(request)
        task = {"taskArn": f"{cluster_arn.replace(':cluster/', ':task/')}/{uuid.uuid4().hex}",
                "clusterArn": cluster_arn, "taskDefinitionArn": request["taskDefinition"],
                "lastStatus": "PROVISIONING"}  # fmt: skip
        return AWSResponse(params["url"], 200, {}, None), {"tasks": [task], "failures": []}

    return handler


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with created_stack() as stack, pytest.MonkeyPatch.context() as patch:
        ecs = stack.client("ecs")
        cluster = stack.outputs["ClusterName"]
        # moto's CloudFormation has no capacity providers: the one the template describes is
        # created and associated with the cluster through the ECS API instead
        properties = stack.template["Resources"]["GpuCapacityProvider"]["Properties"]
        provider = properties["Name"]["Fn::Sub"].replace("${AWS::StackName}", stack.name)
        (group,) = stack.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[stack.physical["GpuAutoScalingGroup"]])["AutoScalingGroups"]
        ecs.create_capacity_provider(name=provider, autoScalingGroupProvider={
            "autoScalingGroupArn": group["AutoScalingGroupARN"],
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100},
            "managedTerminationProtection": "ENABLED"})  # fmt: skip
        ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=["FARGATE", provider],
                                           defaultCapacityProviderStrategy=[])

        code = env_of(stack.container("CodeTaskDefinitionArn"))
        assert code["ACS_GPU_CAPACITY_PROVIDER"] == f"{UNSUPPORTED}GpuCapacityProvider"
        code["ACS_GPU_CAPACITY_PROVIDER"] = provider
        daemon = env_of(stack.container("DaemonTaskDefinitionArn"))
        assert {k: v for k, v in code.items() if daemon.get(k, v) != v} == {}
        for name, value in (daemon | code).items():
            patch.setenv(name, value)
        patch.setenv("DAGSTER_POSTGRES_PASSWORD", "injected-by-ecs")
        patch.setenv("AWS_DEFAULT_REGION", REGION)  # ECS sets it in every task
        # The launcher copies cluster and network from the daemon's own task
        # (use_current_ecs_task_config), which needs the ECS agent's metadata endpoint: here
        # the same values are given as the launcher's run_task_kwargs.
        config = json.loads(json.dumps(INSTANCE))
        launcher = config["run_launcher"]["config"]
        launcher["use_current_ecs_task_config"] = False
        launcher["run_task_kwargs"] = {
            "cluster": cluster, "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": stack.parameters["PrivateSubnetIds"].split(","),
                "securityGroups": [stack.outputs["TaskSecurityGroupId"]],
                "assignPublicIp": "DISABLED"}}}  # fmt: skip
        home = sqlite_copy(config, tmp_path_factory.mktemp("dagster_home"))
        origin = InProcessCodeLocationOrigin(
            loadable_target_origin=LoadableTargetOrigin(
                executable_path=sys.executable, module_name=MODULE, working_directory=str(ROOT)),
            container_image=code["DAGSTER_CURRENT_IMAGE"], location_name=LOCATION)
        with DagsterInstance.from_config(str(home)) as instance, \
                origin.create_location(instance) as location:
            assert type(instance.run_launcher) is GpuSecretsEcsRunLauncher
            (cluster_arn,) = ecs.describe_clusters(clusters=[cluster])["clusters"]
            deployed = Deployment(stack, instance, location, provider)
            instance.run_launcher.ecs.meta.events.register(
                "before-call.ecs.RunTask",
                answer_run_task(deployed.run_tasks, cluster_arn["clusterArn"]))
            yield deployed


def launchpad_run(d: Deployment, job: str) -> DagsterRun:
    """A run of ``job`` as the UI's launchpad creates it: the job's tags on the run."""
    remote_job = d.repository.get_full_job(job)
    plan = d.location.get_execution_plan(remote_job, {}, step_keys_to_execute=None,
                                         known_state=None)
    return d.instance.create_run(
        job_name=job, run_id=None, run_config={}, status=DagsterRunStatus.NOT_STARTED,
        tags=remote_job.run_tags, root_run_id=None, parent_run_id=None, step_keys_to_execute=None,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        job_snapshot=remote_job.job_snapshot, parent_job_snapshot=remote_job.parent_job_snapshot,
        asset_selection=None, asset_check_selection=None, resolved_op_selection=None,
        op_selection=None, remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(), asset_graph=d.repository.asset_graph)


def scheduled_run(d: Deployment, schedule: str) -> DagsterRun:
    """A run of ``schedule`` as the scheduler daemon creates it."""
    remote_schedule = d.repository.get_schedule(schedule)
    remote_job = d.repository.get_full_job(remote_schedule.job_name)
    return _create_scheduler_run(d.instance, datetime(2026, 12, 7, 3, tzinfo=UTC), d.location,
                                 remote_schedule, remote_job, dg.RunRequest())


def container_overrides(request: dict[str, Any]) -> dict[str, Any]:
    (container,) = request["overrides"]["containerOverrides"]
    return container


# what describe_task_definition tells of a revision beside its content
REVISION = ("taskDefinitionArn", "family", "revision", "registeredAt", "registeredBy")


def assert_on_the_gpu(d: Deployment, request: dict[str, Any], cpu_run: dict[str, Any]) -> None:
    """``request`` starts the stack's GPU task definition, as the launcher derives it (its
    secrets added), on the GPU capacity provider, with the GPU requirement, the GPU task's size
    and the secrets and settings CPU runs get."""
    base = d.task_definition(d.stack.outputs["GpuTaskDefinitionArn"])
    derived = d.task_definition(request["taskDefinition"])
    assert request["taskDefinition"] == derived["taskDefinitionArn"]
    assert derived["family"] == base["family"] + DERIVED_FAMILY_SUFFIX
    assert request["taskDefinition"] in d.revisions(derived["family"])
    # the same as the stack's GPU task definition but for the run container's secrets, which
    # keep the stack's own
    (derived_run,), (base_run,) = derived["containerDefinitions"], base["containerDefinitions"]
    assert {k: v for k, v in derived_run.items() if k != "secrets"} == {
        k: v for k, v in base_run.items() if k != "secrets"}
    assert {k: v for k, v in derived.items() if k not in (*REVISION, "containerDefinitions")} == {
        k: v for k, v in base.items() if k not in (*REVISION, "containerDefinitions")}
    assert secrets_of(base_run).items() <= secrets_of(derived_run).items()
    # the daemon's role may start it
    assert allowed(d.stack.policy("DaemonTaskRole"), "ecs:RunTask", request["taskDefinition"])
    assert request["capacityProviderStrategy"] == [{"capacityProvider": d.provider, "weight": 1}]
    assert "launchType" not in request  # ECS refuses both
    (cluster,) = d.stack.client("ecs").describe_clusters(clusters=[request["cluster"]])[
        "clusters"]
    assert d.provider in cluster["capacityProviders"]
    gpu = d.task_definition(request["taskDefinition"])
    (run,) = gpu["containerDefinitions"]
    container = container_overrides(request)
    assert container["name"] == run["name"] == INSTANCE["run_launcher"]["config"]["container_name"]
    assert container["resourceRequirements"] == [GPU] == run["resourceRequirements"]
    assert container["command"][:3] == ["dagster", "api", "execute_run"]
    # the task keeps the GPU task definition's size (not the launcher's 2 vCPU / 8 GB)
    template = d.stack.template["Resources"]["GpuRunTaskDefinition"]["Properties"]
    assert (request["overrides"]["cpu"], request["overrides"]["memory"]) == (
        template["Cpu"], template["Memory"])
    # the same secrets and settings as the task definition the launcher registered for CPU runs
    (cpu,) = d.task_definition(cpu_run["taskDefinition"])["containerDefinitions"]
    assert secrets_of(run) == secrets_of(cpu) != {}
    copied = INSTANCE["run_launcher"]["config"]["env_vars"]
    assert {k: env_of(run)[k] for k in copied} == {k: env_of(cpu)[k] for k in copied}


@pytest.fixture(scope="module")
def ingest(deployment: Deployment) -> dict[str, Any]:
    return deployment.launch(launchpad_run(deployment, "ingest"))


def test_ingest_starts_a_cpu_fargate_task(deployment: Deployment, ingest: dict[str, Any]) -> None:
    assert ingest["launchType"] == "FARGATE"
    assert "capacityProviderStrategy" not in ingest
    assert_on_the_cpu(deployment, ingest)


def assert_on_the_cpu(deployment: Deployment, ingest: dict[str, Any]) -> None:
    assert ingest["taskDefinition"] != deployment.stack.outputs["GpuTaskDefinitionArn"]
    definition = deployment.task_definition(ingest["taskDefinition"])
    assert definition["family"].startswith("acs_")  # registered by the launcher
    assert not definition["family"].endswith(DERIVED_FAMILY_SUFFIX)
    (run,) = definition["containerDefinitions"]
    assert run["image"] == deployment.stack.parameters["CodeImage"]
    assert not run.get("resourceRequirements")
    assert "resourceRequirements" not in container_overrides(ingest)
    # dagster.aws.yaml's run_resources: 2 vCPU / 8 GB
    assert (ingest["overrides"]["cpu"], ingest["overrides"]["memory"]) == ("2048", "8192")
    assert not {t["key"] for t in ingest.get("tags", [])} & set(GPU_QUEUE_TAGS)


def test_train_starts_the_gpu_task_on_the_gpu_capacity_provider(
    deployment: Deployment, ingest: dict[str, Any]
) -> None:
    run = launchpad_run(deployment, "train")
    assert set(ECS_TAGS) <= set(run.tags)
    request = deployment.launch(run)
    assert_on_the_gpu(deployment, request, ingest)
    # propagate_tags (acs/resource) reaches the ECS task: the queue tag is on the run
    assert {"key": "acs/resource", "value": "gpu"} in request["tags"]


def test_weekly_schedule_runs_on_the_gpu(deployment: Deployment, ingest: dict[str, Any]) -> None:
    run = scheduled_run(deployment, "weekly_full")
    assert run.job_name == "full"
    assert_on_the_gpu(deployment, deployment.launch(run), ingest)


def test_the_code_definition_names_the_stacks_gpu_outputs(deployment: Deployment) -> None:
    code = deployment.stack.template["Resources"]["CodeTaskDefinition"]["Properties"]
    (container,) = code["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["ACS_GPU_LAUNCHER"] == "ecs"
    assert env["ACS_GPU_CAPACITY_PROVIDER"] == {"Ref": "GpuCapacityProvider"}
    assert env["ACS_GPU_TASK_DEFINITION"] == {"Ref": "GpuRunTaskDefinition"}
    outputs = deployment.stack.template["Outputs"]
    assert outputs["GpuCapacityProviderName"]["Value"] == {"Ref": "GpuCapacityProvider"}
    assert outputs["GpuTaskDefinitionArn"]["Value"] == {"Ref": "GpuRunTaskDefinition"}


def test_runs_from_a_code_location_without_gpu_settings_stay_on_cpu(
    deployment: Deployment, ingest: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("ACS_GPU_LAUNCHER", "ACS_GPU_CAPACITY_PROVIDER", "ACS_GPU_TASK_DEFINITION"):
        monkeypatch.delenv(name)
    origin = deployment.location.origin
    with origin.create_location(deployment.instance) as location:
        plain = Deployment(deployment.stack, deployment.instance, location, deployment.provider,
                           deployment.run_tasks)
        run = launchpad_run(plain, "train")
        assert not set(ECS_TAGS) & set(run.tags)
        request = plain.launch(run)
    assert request["launchType"] == "FARGATE"
    assert "capacityProviderStrategy" not in request
    assert "resourceRequirements" not in container_overrides(request)


def test_a_secret_tagged_after_the_stack_reaches_gpu_and_cpu_runs(deployment: Deployment) -> None:
    """A secret tagged `acs-pipeline` after deploying (say, an MLflow token) is in the task
    definition of the next GPU run, as in the next CPU run's; a launch with the same secrets
    reuses the derived task definition, a new tagged secret makes a new revision of it."""
    tag = INSTANCE["run_launcher"]["config"]["secrets_tag"]
    manager = deployment.stack.client("secretsmanager")
    before = deployment.launch(launchpad_run(deployment, "train"))
    family = deployment.task_definition(before["taskDefinition"])["family"]
    assert deployment.launch(launchpad_run(deployment, "train"))["taskDefinition"] == (
        before["taskDefinition"])  # nothing changed: no new revision
    created = []
    try:
        for name in ("MLFLOW_TRACKING_TOKEN", "HF_TOKEN"):
            created.append(manager.create_secret(Name=name, SecretString="s3cret",
                                                 Tags=[{"Key": tag, "Value": "yes"}])["ARN"])
            revisions = deployment.revisions(family)
            train = deployment.launch(launchpad_run(deployment, "train"))
            ingest = deployment.launch(launchpad_run(deployment, "ingest"))
            assert_on_the_cpu(deployment, ingest)
            (cpu,) = deployment.task_definition(ingest["taskDefinition"])["containerDefinitions"]
            assert secrets_of(cpu)[name] == created[-1]
            assert_on_the_gpu(deployment, train, ingest)  # the same secrets as the CPU run
            (gpu,) = deployment.task_definition(train["taskDefinition"])["containerDefinitions"]
            assert secrets_of(gpu)[name] == created[-1]
            # one new revision of the derived family; launched again, it is reused
            assert deployment.revisions(family) == [*revisions, train["taskDefinition"]]
            weekly = deployment.launch(scheduled_run(deployment, "weekly_full"))
            assert weekly["taskDefinition"] == train["taskDefinition"]
            assert deployment.revisions(family) == [*revisions, train["taskDefinition"]]
        # the stack's GPU task definition itself is left as it was
        base = deployment.stack.container("GpuTaskDefinitionArn")
        assert not {"MLFLOW_TRACKING_TOKEN", "HF_TOKEN"} & set(secrets_of(base))
    finally:
        for arn in created:
            manager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
