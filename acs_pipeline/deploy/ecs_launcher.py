"""The run launcher of the AWS deployment: dagster-aws's ``EcsRunLauncher`` whose GPU runs get the
secrets it gives CPU runs.

``EcsRunLauncher`` puts the secrets it resolves (its ``secrets`` list and every Secrets Manager
secret tagged ``secrets_tag``, listed at launch) into the task definitions it registers for CPU
runs. A run whose ``ecs/run_task_kwargs`` tag names a task definition (the GPU route, gpu.py) would
start that definition as registered: RunTask's container overrides cannot carry secrets. Here such
a run starts a definition derived from the named one instead: the same in everything but the run
container's ``secrets``, which also hold the launcher's (the launcher's ``valueFrom`` wins on a
name both have, as CPU runs get it; the base's other secrets stay). It is registered in the family
``<base family>-launched`` when it differs from that family's latest revision, else that revision
is reused. Tags of the base definition are not copied. CPU runs are launched as before.

Imports only dagster, dagster-aws and botocore: the daemon image (docker/Dockerfile.dagster) has
none of the pipeline's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError
from dagster import DagsterInvariantViolationError, DagsterRun
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext

DERIVED_FAMILY_SUFFIX = "-launched"


def merge_secrets(own: list[dict[str, str]], launcher: Mapping[str, str]) -> list[dict[str, str]]:
    """A container's ``secrets`` with the launcher's (name -> valueFrom) added, the launcher's
    winning on a shared name; sorted by name."""
    merged = {s["name"]: s for s in own} | {
        name: {"name": name, "valueFrom": value_from} for name, value_from in launcher.items()
    }
    return [merged[name] for name in sorted(merged)]


class GpuSecretsEcsRunLauncher(EcsRunLauncher):
    """``EcsRunLauncher`` that launches a run naming a task definition in ``ecs/run_task_kwargs``
    from a copy of it carrying the launcher's secrets (see the module docstring)."""

    # Overrides a private method of dagster-aws 0.29.27's EcsRunLauncher, the one hook whose
    # `taskDefinition` replaces the launcher's own: _start_task_for_run (launch and resume) calls
    # it once per task with the run, and changes nothing else of the launch. It is not given the
    # secrets, so they are resolved again as the launcher does (public EcsContainerContext API).
    # Re-read _start_task_for_run when upgrading dagster-aws (test_ecs_launcher.py pins it).
    def _get_run_task_kwargs_from_run(self, run: DagsterRun) -> Mapping[str, Any]:
        kwargs = super()._get_run_task_kwargs_from_run(run)
        base = kwargs.get("taskDefinition")
        if not base:
            return kwargs
        context = EcsContainerContext.create_for_run(run, self)
        secrets = context.get_secrets_dict(self.secrets_manager)
        derived = self.derive_task_definition(base, self.get_container_name(context), secrets)
        return {**kwargs, "taskDefinition": derived}

    def derive_task_definition(
        self, base: str, container_name: str, secrets: Mapping[str, str]
    ) -> str:
        """ARN of ``base`` (family, family:revision or ARN) with ``secrets`` merged into the
        container ``container_name``, in the family ``<base family>-launched``: its latest
        revision when that already matches, else a revision registered now."""
        described = self.ecs.describe_task_definition(taskDefinition=base)["taskDefinition"]
        desired = self._registrable(described)
        desired["family"] = described["family"] + DERIVED_FAMILY_SUFFIX
        containers = [c for c in desired["containerDefinitions"] if c["name"] == container_name]
        if not containers:
            raise DagsterInvariantViolationError(
                f"Task definition {described['taskDefinitionArn']} has no container named "
                f"{container_name!r} (the run launcher's container_name)."
            )
        containers[0]["secrets"] = merge_secrets(containers[0].get("secrets", []), secrets)
        try:
            latest = self.ecs.describe_task_definition(taskDefinition=desired["family"])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ClientException":
                raise
            latest = None  # the family has no active revision yet
        if latest and self._registrable(latest["taskDefinition"]) == desired:
            return latest["taskDefinition"]["taskDefinitionArn"]
        registered = self.ecs.register_task_definition(**desired)
        return registered["taskDefinition"]["taskDefinitionArn"]

    def _registrable(self, described: Mapping[str, Any]) -> dict[str, Any]:
        """What RegisterTaskDefinition takes of a described definition (ARN, revision, status and
        the like dropped), each container's secrets sorted by name: the form compared for reuse."""
        fields = self.ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
        registrable = {k: v for k, v in described.items() if k in fields.members}
        registrable["containerDefinitions"] = []
        for container in described["containerDefinitions"]:
            container = dict(container)
            if "secrets" in container:
                container["secrets"] = sorted(container["secrets"], key=lambda s: s["name"])
            registrable["containerDefinitions"].append(container)
        return registrable
