"""Run tags that send a run to a GPU, for the run launcher the deployment uses.

The tags are plain strings read by the launchers (dagster-aws 0.29 ``EcsRunLauncher``,
dagster-k8s ``K8sRunLauncher``); a launcher ignores tags of the others, and the local and compose
launchers ignore all of them. Which launcher and which names come from
:class:`~acs_pipeline.defs.resources.GpuLauncherSettings` (``ACS_GPU_*``).
"""

import json

from acs_pipeline.defs.resources import GpuLauncherSettings

# the run-queue limit of the instance files admits one run with this tag at a time
GPU_QUEUE_TAGS = {"acs/resource": "gpu"}
ECS_TAGS = ("ecs/run_task_kwargs", "ecs/cpu", "ecs/memory", "ecs/container_overrides")
K8S_TAG = "dagster-k8s/config"


def ecs_tags(s: GpuLauncherSettings) -> dict[str, str]:
    """The GPU task definition on the GPU capacity provider (the launcher drops its launch type
    then), its size (else the launcher's ``run_resources`` would shrink it) and the GPU
    requirement of the run container."""
    run_task_kwargs = {
        "taskDefinition": s.task_definition,
        "capacityProviderStrategy": [{"capacityProvider": s.capacity_provider, "weight": 1}],
    }
    container = {"resourceRequirements": [{"type": "GPU", "value": str(s.gpus)}]}
    return {
        "ecs/run_task_kwargs": json.dumps(run_task_kwargs),
        "ecs/cpu": str(s.cpu),
        "ecs/memory": str(s.memory_mib),
        "ecs/container_overrides": json.dumps(container),
    }


def k8s_quantity_mib(mib: int) -> str:
    """A Kubernetes memory quantity: whole GiB as ``Gi``, else ``Mi``."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def k8s_cpu(units: int) -> str:
    """ECS CPU units (1024 per vCPU) as a Kubernetes CPU quantity."""
    return str(units // 1024) if units % 1024 == 0 else f"{units * 1000 // 1024}m"


def k8s_config(s: GpuLauncherSettings) -> dict:
    """The ``dagster-k8s/config`` value: GPU node group, toleration, GPU limit."""
    memory = k8s_quantity_mib(s.memory_mib)
    container: dict = {"resources": {
        "requests": {"cpu": k8s_cpu(s.cpu), "memory": memory},
        "limits": {"nvidia.com/gpu": str(s.gpus), "memory": memory},
    }}  # fmt: skip
    if s.image:
        container["image"] = s.image
    return {
        "pod_spec_config": {"node_selector": dict(s.node_selector),
                            "tolerations": [dict(t) for t in s.tolerations]},
        "container_config": container,
    }


def launcher_tags(s: GpuLauncherSettings) -> dict[str, str]:
    """The launcher's GPU tags; none when no GPU launcher is configured."""
    if s.launcher == "ecs":
        return ecs_tags(s)
    if s.launcher == "k8s":
        return {K8S_TAG: json.dumps(k8s_config(s))}
    return {}


def gpu_run_tags(s: GpuLauncherSettings) -> dict[str, str]:
    """Tags of a run that trains or predicts with a network: the GPU queue tag and the
    launcher's GPU tags."""
    return GPU_QUEUE_TAGS | launcher_tags(s)


def describe(s: GpuLauncherSettings) -> str:
    """One sentence for job descriptions and the load log: where GPU runs go."""
    if s.launcher == "ecs":
        return (f"GPU: ECS task definition {s.task_definition} on capacity provider "
                f"{s.capacity_provider}, {s.gpus} GPU, {s.cpu} CPU units, {s.memory_mib} MiB.")
    if s.launcher == "k8s":
        return (f"GPU: Kubernetes nodes {s.node_selector}, {s.gpus} nvidia.com/gpu"
                + (f", image {s.image}." if s.image else ", the code location's image."))
    return ("No GPU launcher configured (ACS_GPU_LAUNCHER unset or 'none'): runs use the run "
            "launcher's default task, CPU on ECS and Kubernetes.")
