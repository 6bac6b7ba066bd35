"""GPU launcher settings (``ACS_GPU_*``) and the run tags built from them."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from acs_pipeline.defs.gpu import (
    ECS_TAGS,
    GPU_QUEUE_TAGS,
    K8S_TAG,
    describe,
    gpu_run_tags,
    k8s_cpu,
    k8s_quantity_mib,
)
from acs_pipeline.defs.resources import MissingSettingError, gpu_settings_from_env

ROOT = Path(__file__).resolve().parents[2]
ECS = {"ACS_GPU_LAUNCHER": "ecs", "ACS_GPU_CAPACITY_PROVIDER": "acs-pipeline-gpu",
       "ACS_GPU_TASK_DEFINITION": "acs-pipeline-gpu-run:4"}  # fmt: skip


def documented_k8s_tag() -> dict:
    """The ``dagster-k8s/config`` value that docker/k8s/values.yaml shows in its comment."""
    text = (ROOT / "docker" / "k8s" / "values.yaml").read_text()
    block = re.search(r"#   dagster-k8s/config:\n((?:\s*#     .*\n)+)", text)
    assert block, "values.yaml no longer documents the dagster-k8s/config tag"
    lines = [re.sub(r"^\s*#", "", line) for line in block.group(1).splitlines()]
    return yaml.safe_load(textwrap.dedent("\n".join(lines)))


def test_nothing_set_means_no_launcher_tags():
    settings = gpu_settings_from_env({})
    assert settings.launcher == "none"
    assert gpu_run_tags(settings) == GPU_QUEUE_TAGS
    assert "ACS_GPU_LAUNCHER unset" in describe(settings)


def test_ecs_tags_route_to_the_gpu_task_and_capacity_provider():
    tags = gpu_run_tags(gpu_settings_from_env(ECS | {"ACS_GPU_MEMORY": "30720"}))
    assert set(tags) == set(GPU_QUEUE_TAGS) | set(ECS_TAGS)
    assert json.loads(tags["ecs/run_task_kwargs"]) == {
        "taskDefinition": "acs-pipeline-gpu-run:4",
        "capacityProviderStrategy": [{"capacityProvider": "acs-pipeline-gpu", "weight": 1}],
    }
    assert (tags["ecs/cpu"], tags["ecs/memory"]) == ("7168", "30720")
    assert json.loads(tags["ecs/container_overrides"]) == {
        "resourceRequirements": [{"type": "GPU", "value": "1"}]}
    assert all(isinstance(v, str) for v in tags.values())


def test_k8s_tag_is_the_one_docker_k8s_values_documents():
    tags = gpu_run_tags(gpu_settings_from_env({"ACS_GPU_LAUNCHER": "K8S"}))
    assert set(tags) == set(GPU_QUEUE_TAGS) | {K8S_TAG}
    assert json.loads(tags[K8S_TAG]) == documented_k8s_tag()


def test_k8s_settings_change_nodes_tolerations_gpus_and_image():
    env = {"ACS_GPU_LAUNCHER": "k8s", "ACS_GPU_COUNT": "2", "ACS_GPU_CPU": "3584",
           "ACS_GPU_MEMORY": "15000", "ACS_GPU_IMAGE": "registry/acs-pipeline:gpu-abc",
           "ACS_GPU_NODE_SELECTOR": '{"node.kubernetes.io/instance-type": "g5.12xlarge"}',
           "ACS_GPU_TOLERATIONS": '[{"key": "gpu", "operator": "Equal", "value": "a10g", '
                                  '"effect": "NoSchedule"}]'}  # fmt: skip
    config = json.loads(gpu_run_tags(gpu_settings_from_env(env))[K8S_TAG])
    assert config["pod_spec_config"]["node_selector"] == {
        "node.kubernetes.io/instance-type": "g5.12xlarge"}
    assert config["pod_spec_config"]["tolerations"][0]["value"] == "a10g"
    container = config["container_config"]
    assert container["image"] == "registry/acs-pipeline:gpu-abc"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "15000Mi"}
    assert container["resources"]["requests"] == {"cpu": "3500m", "memory": "15000Mi"}


@pytest.mark.parametrize(("units", "cpu"), [(1024, "1"), (7168, "7"), (512, "500m")])
def test_ecs_cpu_units_as_kubernetes_cpu(units: int, cpu: str):
    assert k8s_cpu(units) == cpu


@pytest.mark.parametrize(("mib", "quantity"), [(28672, "28Gi"), (1000, "1000Mi")])
def test_memory_as_kubernetes_quantity(mib: int, quantity: str):
    assert k8s_quantity_mib(mib) == quantity


@pytest.mark.parametrize(("env", "message"), [
    ({"ACS_GPU_LAUNCHER": "ecs"}, "ACS_GPU_CAPACITY_PROVIDER and ACS_GPU_TASK_DEFINITION"),
    (ECS | {"ACS_GPU_TASK_DEFINITION": " "}, "needs ACS_GPU_TASK_DEFINITION \\("),
    ({"ACS_GPU_LAUNCHER": "slurm"}, "ACS_GPU_LAUNCHER: Input should be 'none', 'ecs' or 'k8s'"),
    (ECS | {"ACS_GPU_CPU": "lots"}, "ACS_GPU_CPU: Input should be a valid integer"),
    (ECS | {"ACS_GPU_COUNT": "0"}, "ACS_GPU_COUNT: Input should be greater than 0"),
    ({"ACS_GPU_NODE_SELECTOR": "pool=gpu"}, "ACS_GPU_NODE_SELECTOR is not JSON"),
    ({"ACS_GPU_TOLERATIONS": '{"key": "gpu"}'}, "ACS_GPU_TOLERATIONS: Input should be a valid"),
])  # fmt: skip
def test_bad_settings_name_the_variable(env: dict[str, str], message: str):
    with pytest.raises(ValueError, match=message) as failed:
        gpu_settings_from_env(env)
    if "needs" in message or "CAPACITY" in message:
        assert isinstance(failed.value, MissingSettingError)


def test_helm_values_give_the_code_server_the_k8s_gpu_settings():
    values = yaml.safe_load((ROOT / "docker" / "k8s" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    config = json.loads(gpu_run_tags(gpu_settings_from_env(env))[K8S_TAG])
    image = config["container_config"].pop("image")
    assert config == documented_k8s_tag()
    assert image.split(":")[0] == deployment["image"]["repository"]
    assert ":gpu-" in image and not image.endswith(deployment["image"]["tag"])
