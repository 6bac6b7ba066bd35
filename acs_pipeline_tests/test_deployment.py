"""Checks of the deployment files in docker/, without a Docker engine.

The instance files are validated by Dagster's own instance-config schema and by the
`config_type()` of every configurable class they name, then loaded into a real DagsterInstance
(Postgres swapped for SQLite). The workspace goes through Dagster's workspace schema, the compose
files through `docker-compose config` when the client is installed, and ports, module names,
environment variables and container names are cross-checked between the files.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from dagster import DagsterInstance
from dagster._cli import cli as dagster_cli
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.storage.config import pg_config
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._core.workspace.load import location_origins_from_config
from dagster._serdes.config_class import class_from_code_pointer
from dagster_aws.ecs import EcsRunLauncher
from dagster_postgres.utils import pg_url_from_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MODULE = PYPROJECT["tool"]["dagster"]["module_name"]
LOCATION = PYPROJECT["tool"]["dagster"]["code_location_name"]
INSTANCE_FILES = ["dagster.yaml", "dagster.aws.yaml"]
CONFIGURABLE_SECTIONS = [
    "run_launcher",
    "run_coordinator",
    "compute_logs",
    "local_artifact_storage",
    "scheduler",
]
DAGSTER_HOME = "/opt/dagster/dagster_home"
GRPC_PORT = 4000
WEBSERVER_PORT = 3000

# values for the `${VAR}` placeholders of docker/ecs/*.json (the README's envsubst step)
ECS_PLACEHOLDERS = {
    "AWS_ACCOUNT_ID": "123456789012",
    "AWS_REGION": "eu-west-1",
    "IMAGE_TAG": "abc1234",
    "RDS_HOSTNAME": "db.example.internal",
    "ACS_RAW_BUCKET": "acs-raw",
    "ACS_STORAGE_BUCKET": "acs-storage",
    "ACS_LOG_BUCKET": "acs-logs",
    "ACS_PG_PASSWORD_SECRET_ARN": (
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:acs-pipeline/postgres-AbCdEf:password::"
    ),
}


class DeploymentConfigError(Exception):
    """A deployment file that Dagster (or a cross-file check) rejects; names the file."""


# --------------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_refs(value: Any) -> Iterator[str]:
    """Every `{env: NAME}` reference in a Dagster config tree."""
    if isinstance(value, Mapping):
        if set(value) == {"env"} and isinstance(value["env"], str):
            yield value["env"]
        else:
            for item in value.values():
                yield from env_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from env_refs(item)


def fake_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Plausible values for the env vars a config refers to (ports must be integers)."""
    return {
        name: "5432" if name.endswith("_PORT") else f"fake-{name.lower()}"
        for name in env_refs(config)
    }


def validate_instance_file(path: Path) -> dict[str, Any]:
    """Validate a dagster.yaml as Dagster does when it loads an instance, without connecting.

    The whole file goes through `dagster_instance_config` (instance schema, storage, concurrency
    rules); each configurable class block is processed by the class's own `config_type()`, with
    `{env: ...}` values resolved from the current environment.
    """
    try:
        config, _ = dagster_instance_config(str(path.parent), path.name)
    except DagsterInvalidConfigError as err:
        raise DeploymentConfigError(f"{path.name}: {err}") from err
    for section in CONFIGURABLE_SECTIONS:
        if section not in config:
            continue
        block = config[section]
        cls = class_from_code_pointer(block["module"], block["class"])
        result = process_config(cls.config_type(), block.get("config") or {})
        if not result.success:
            messages = "; ".join(error.message for error in result.errors or [])
            raise DeploymentConfigError(f"{path.name}: {section} ({block['class']}): {messages}")
    if "postgres" in config.get("storage", {}):
        result = process_config(pg_config(), config["storage"]["postgres"])
        if not result.success:
            messages = "; ".join(error.message for error in result.errors or [])
            raise DeploymentConfigError(f"{path.name}: storage.postgres: {messages}")
    return config


def sqlite_copy(config: Mapping[str, Any], home: Path) -> Path:
    """Write `config` into `home/dagster.yaml` with SQLite storage and local paths under home."""
    local = copy.deepcopy(dict(config))
    home.mkdir(parents=True, exist_ok=True)
    local["storage"] = {"sqlite": {"base_dir": str(home / "db")}}
    for section in ("local_artifact_storage", "compute_logs"):
        block = local.get(section)
        if block and block["class"].startswith("Local"):
            block["config"]["base_dir"] = str(home / section)
    (home / "dagster.yaml").write_text(yaml.safe_dump(local))
    return home


def docker_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


def docker_args(path: Path, instruction: str) -> list[str]:
    return [args for name, args in docker_instructions(path) if name == instruction]


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for args in docker_args(path, "ARG"):
        name, _, value = args.partition("=")
        defaults[name] = value.strip('"')
    return defaults


def compose_env(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "compose environment must use the mapping form"
    return env


def render_ecs(text: str, name: str) -> dict[str, Any]:
    """Substitute the documented `${VAR}` placeholders and parse the JSON."""
    try:
        rendered = string.Template(text).substitute(ECS_PLACEHOLDERS)
    except KeyError as err:
        raise DeploymentConfigError(f"ecs/{name}: undocumented placeholder {err}") from err
    return json.loads(rendered)


def ecs_json(name: str) -> dict[str, Any]:
    return render_ecs((DOCKER / "ecs" / name).read_text(), name)


def container(task_definition: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = task_definition["containerDefinitions"]
    return only


@pytest.fixture
def instance_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake values for every env var the two instance files use, plus a fake AWS region."""
    env: dict[str, str] = {}
    for name in INSTANCE_FILES:
        env |= fake_env(load_yaml(DOCKER / name))
    env["DAGSTER_POSTGRES_PASSWORD"] = "s3cret"
    env["DAGSTER_POSTGRES_HOST"] = "postgres"
    env |= {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DOCKER / "docker-compose.yml")


# --------------------------------------------------------------------------------------------
# every file parses


@pytest.mark.parametrize(
    "path",
    sorted([*DOCKER.rglob("*.yaml"), *DOCKER.rglob("*.yml")]),
    ids=lambda p: str(p.relative_to(DOCKER)),
)
def test_every_yaml_file_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


@pytest.mark.parametrize("path", sorted(DOCKER.glob("ecs/*.json")), ids=lambda p: p.name)
def test_every_ecs_json_renders_with_the_documented_placeholders(path: Path) -> None:
    rendered = ecs_json(path.name)
    assert "${" not in json.dumps(rendered)
    assert ("containerDefinitions" in rendered) != ("Statement" in rendered)


def test_an_undocumented_placeholder_is_reported() -> None:
    with pytest.raises(DeploymentConfigError, match="NOT_DOCUMENTED"):
        render_ecs('{"image": "${NOT_DOCUMENTED}"}', "task-definition-x.json")


# --------------------------------------------------------------------------------------------
# instance config


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_instance_file_validates_against_dagster_schema(name: str, instance_env: dict) -> None:
    config = validate_instance_file(DOCKER / name)
    assert config["telemetry"] == {"enabled": False}
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["max_retries"] == 2
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["max_runtime_seconds"] > 0
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "acs/resource", "value": "gpu", "limit": 1} in limits


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_postgres_settings_come_from_the_environment(name: str, instance_env: dict) -> None:
    config = validate_instance_file(DOCKER / name)
    postgres = config["storage"]["postgres"]
    assert set(env_refs(postgres["postgres_db"])) == {
        f"DAGSTER_POSTGRES_{part}" for part in ("USER", "PASSWORD", "HOST", "DB", "PORT")
    }
    resolved = process_config(pg_config(), postgres).value
    url = pg_url_from_config(resolved)
    assert url.startswith(
        f"postgresql://{instance_env['DAGSTER_POSTGRES_USER']}:s3cret@postgres:5432/"
        f"{instance_env['DAGSTER_POSTGRES_DB']}"
    )
    assert "s3cret" not in (DOCKER / name).read_text()


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_instance_loads_with_the_settings_we_wrote(
    name: str, instance_env: dict, tmp_path: Path
) -> None:
    config = load_yaml(DOCKER / name)
    home = sqlite_copy(config, tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.telemetry_enabled is False
        assert instance.run_retries_enabled is True
        assert instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled is True
        assert instance.run_monitoring_max_runtime_seconds == 21600
        concurrency = instance.get_concurrency_config()
        assert (
            concurrency.pool_config.default_pool_limit
            == config["concurrency"]["pools"]["default_limit"]
        )
        assert concurrency.pool_config.pool_granularity.value == "op"
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs == config["concurrency"]["runs"]["max_concurrent_runs"]
        launcher = instance.run_launcher
        if name == "dagster.yaml":
            assert type(launcher).__name__ == "DefaultRunLauncher"
        else:
            # EcsRunLauncher.__init__ checks prefix length, propagate_tags, run_task_kwargs; the
            # deployment's subclass gives GPU runs the same secrets (deploy/ecs_launcher.py)
            assert type(launcher).__name__ == "GpuSecretsEcsRunLauncher"
            assert isinstance(launcher, EcsRunLauncher)
            assert launcher.container_name == "run"
            assert launcher.run_resources == {"cpu": "2048", "memory": "8192"}
            assert launcher.secrets == [
                {
                    "name": "DAGSTER_POSTGRES_PASSWORD",
                    "valueFrom": instance_env["ACS_PG_PASSWORD_SECRET_ARN"],
                }
            ]
            assert launcher.secrets_tags == ["acs-pipeline"]
            assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"


def test_init_script_sets_the_gpu_pool_limit(
    instance_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run init_instance.sh with a `dagster` shim that records each call, then replay the calls
    through the real Dagster CLI in this process (a fresh `dagster` process per call is slow)."""
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    shim = shim_dir / "dagster"
    shim.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ACS_GPU_POOL_LIMIT", None)
    done = subprocess.run(
        ["sh", str(DOCKER / "init_instance.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded == [["instance", "migrate"], ["instance", "concurrency", "set", "gpu", "1"]]

    home = sqlite_copy(load_yaml(DOCKER / "dagster.yaml"), tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for args in recorded:
        result = CliRunner().invoke(dagster_cli, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1


BROKEN_INSTANCE_EDITS: dict[str, tuple[Callable[[dict], Any], str]] = {
    "misspelt top-level key": (
        lambda c: c.update(run_retry=c.pop("run_retries")),
        'unexpected config entry "run_retry"',
    ),
    "max_retries not an int": (
        lambda c: c["run_retries"].update(max_retries="two"),
        "run_retries:max_retries",
    ),
    "run limit under run_coordinator next to concurrency": (
        lambda c: c["run_coordinator"]["config"].update(max_concurrent_runs=3),
        "incompatible with the `concurrency > runs` config",
    ),
    "unknown pool granularity": (
        lambda c: c["concurrency"]["pools"].update(granularity="step"),
        "`step` for `granularity`",
    ),
    "negative default pool limit": (
        lambda c: c["concurrency"]["pools"].update(default_limit=-1),
        "`-1` for `pools > default_limit`",
    ),
    "two storages": (
        lambda c: c["storage"].update(sqlite={"base_dir": "/tmp"}),
        "dagster storage",
    ),
    "unknown launcher option": (
        lambda c: c.update(
            run_launcher={
                "module": "dagster_aws.ecs",
                "class": "EcsRunLauncher",
                "config": {"task_definiton": "acs"},
            }
        ),
        'run_launcher \\(EcsRunLauncher\\).*"task_definiton"',
    ),
    "postgres port not an int": (
        lambda c: c["storage"]["postgres"]["postgres_db"].update(port="five"),
        "postgres_db:port",
    ),
}


@pytest.mark.parametrize("edit", sorted(BROKEN_INSTANCE_EDITS))
def test_broken_copies_of_dagster_yaml_are_rejected(
    edit: str, instance_env: dict, tmp_path: Path
) -> None:
    change, reason = BROKEN_INSTANCE_EDITS[edit]
    config = load_yaml(DOCKER / "dagster.yaml")
    change(config)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DeploymentConfigError, match=reason):
        validate_instance_file(tmp_path / "dagster.yaml")


def test_missing_secret_in_the_environment_is_rejected(
    instance_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_POSTGRES_PASSWORD")
    with pytest.raises(DeploymentConfigError, match="DAGSTER_POSTGRES_PASSWORD"):
        validate_instance_file(DOCKER / "dagster.aws.yaml")


def test_misspelt_ecs_launcher_option_is_rejected(instance_env: dict, tmp_path: Path) -> None:
    config = load_yaml(DOCKER / "dagster.aws.yaml")
    config["run_launcher"]["config"]["run_resource"] = config["run_launcher"]["config"].pop(
        "run_resources"
    )
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DeploymentConfigError, match="EcsRunLauncher"):
        validate_instance_file(tmp_path / "dagster.yaml")


# --------------------------------------------------------------------------------------------
# workspace


def test_workspace_points_at_the_code_service() -> None:
    path = DOCKER / "workspace.yaml"
    origins = location_origins_from_config(load_yaml(path), str(path))
    assert list(origins) == [LOCATION]
    origin = origins[LOCATION]
    assert isinstance(origin, GrpcServerCodeLocationOrigin)
    assert (origin.host, origin.port) == ("code", GRPC_PORT)


def test_broken_workspace_is_rejected() -> None:
    broken = {"load_from": [{"grpc_server": {"host": "code", "port": "four thousand"}}]}
    assert not process_workspace_config(broken).success
    assert process_workspace_config(load_yaml(DOCKER / "workspace.yaml")).success


# --------------------------------------------------------------------------------------------
# compose


def test_compose_services_and_healthchecks(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "code",
        "dagster-init",
        "dagster-webserver",
        "dagster-daemon",
    }
    assert re.fullmatch(r"postgres:16\.\d+-\w+", services["postgres"]["image"])
    for name in ("postgres", "code", "dagster-webserver", "dagster-daemon"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("dagster-webserver", "dagster-daemon"):
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["code"]["condition"] == "service_healthy"
        assert needs["dagster-init"]["condition"] == "service_completed_successfully"
    assert services["dagster-init"]["command"] == ["acs-init-instance"]
    assert set(compose["volumes"]) >= {"postgres-data", "dagster-storage", "acs-data"}


def test_compose_takes_secrets_only_from_the_environment(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in compose_env(service).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert value is None or re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (name, key)
    text = (DOCKER / "docker-compose.yml").read_text()
    assert "${DAGSTER_POSTGRES_PASSWORD:?" in text


def test_compose_gives_every_instance_process_the_env_it_needs(compose: dict) -> None:
    needed = set(env_refs(load_yaml(DOCKER / "dagster.yaml")))
    for name in ("code", "dagster-init", "dagster-webserver", "dagster-daemon"):
        assert needed <= set(compose_env(compose["services"][name])), name
    code_env = compose_env(compose["services"]["code"])
    assert {"ACS_RAW_URI", "ACS_STORAGE_URI", "ACS_HOLDOUT_URI", "ACS_PROFILE"} <= set(code_env)
    assert "AWS_ENDPOINT_URL" in code_env


def test_compose_mounts_match_the_instance_paths(compose: dict) -> None:
    instance = load_yaml(DOCKER / "dagster.yaml")
    storage_dirs = [
        instance[section]["config"]["base_dir"]
        for section in ("local_artifact_storage", "compute_logs")
    ]
    for name in ("code", "dagster-webserver", "dagster-daemon"):
        mounts = dict(
            (target.split(":")[0], source)
            for source, _, target in (
                v.partition(":") for v in compose["services"][name]["volumes"]
            )
        )
        assert mounts[f"{DAGSTER_HOME}/dagster.yaml"] == "./dagster.yaml", name
        assert mounts[f"{DAGSTER_HOME}/storage"] == "dagster-storage", name
        for base_dir in storage_dirs:
            assert base_dir.startswith(f"{DAGSTER_HOME}/storage"), base_dir
    webserver_mounts = compose["services"]["dagster-daemon"]["volumes"]
    assert "./workspace.yaml:/opt/dagster/app/workspace.yaml:ro" in webserver_mounts


def test_ports_agree_across_compose_workspace_and_dockerfiles(compose: dict) -> None:
    workspace_port = load_yaml(DOCKER / "workspace.yaml")["load_from"][0]["grpc_server"]["port"]
    code = compose["services"]["code"]
    assert code["command"][code["command"].index("-p") + 1] == str(workspace_port)
    assert code["expose"] == [str(workspace_port)]
    assert str(workspace_port) in code["healthcheck"]["test"]
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        assert docker_args(DOCKER / dockerfile, "EXPOSE") == [str(workspace_port)]
        assert json.loads(docker_args(DOCKER / dockerfile, "CMD")[0]) == code["command"]
    webserver = compose["services"]["dagster-webserver"]
    command = webserver["command"]
    assert command[command.index("-p") + 1] == str(WEBSERVER_PORT)
    assert webserver["ports"] == [f"${{DAGSTER_WEBSERVER_PORT:-{WEBSERVER_PORT}}}:{WEBSERVER_PORT}"]
    assert docker_args(DOCKER / "Dockerfile.dagster", "EXPOSE") == [str(WEBSERVER_PORT)]
    code_td = container(ecs_json("task-definition-code.json"))
    assert code_td["portMappings"][0]["containerPort"] == workspace_port
    assert code_td["portMappings"][0]["name"] == "code"
    assert code_td["command"] == code["command"]
    web_td = container(ecs_json("task-definition-webserver.json"))
    assert web_td["portMappings"][0]["containerPort"] == WEBSERVER_PORT


def run_compose(*args: str, env: Mapping[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    files = [arg for path in args for arg in ("-f", str(DOCKER / path))]
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), *files, "config", "-q"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DOCKER,
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_files(tmp_path: Path) -> None:
    env = {"DAGSTER_POSTGRES_PASSWORD": "x"}
    plain = run_compose("docker-compose.yml", env=env, tmp_path=tmp_path)
    assert plain.returncode == 0, plain.stderr
    gpu = run_compose("docker-compose.yml", "docker-compose.gpu.yml", env=env, tmp_path=tmp_path)
    assert gpu.returncode == 0, gpu.stderr
    missing = run_compose("docker-compose.yml", env={}, tmp_path=tmp_path)
    assert missing.returncode != 0
    assert "DAGSTER_POSTGRES_PASSWORD" in missing.stderr


def test_gpu_overlay_reserves_a_gpu_for_the_code_service() -> None:
    overlay = load_yaml(DOCKER / "docker-compose.gpu.yml")
    assert set(overlay["services"]) == {"code"}
    code = overlay["services"]["code"]
    assert code["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    (device,) = code["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


# --------------------------------------------------------------------------------------------
# Dockerfiles


def pinned(package: str) -> str:
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    for requirement in [*project["dependencies"], *extras]:
        if re.match(rf"{re.escape(package)}==", requirement):
            return requirement
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu", "Dockerfile.dagster"])
def test_dockerfile_copies_existing_paths_and_runs_unprivileged(name: str) -> None:
    path = DOCKER / name
    defaults = arg_defaults(path)
    for args in docker_args(path, "COPY"):
        *sources, _ = args.split()
        for source in sources:
            source = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], source)
            assert (ROOT / source).exists(), f"{name}: COPY {source}"
    users = docker_args(path, "USER")
    assert users and users[-1] not in ("root", "0")
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    assert {"*", "!pyproject.toml", "!constraints.txt", "!acs_pipeline/", "!docker/"} <= set(ignore)
    # the pip installs use the versions the test suite runs with
    assert "-c constraints.txt" in " ".join(docker_args(path, "RUN")).replace("/tmp/", "")


PYTHON_IMAGE = "python:3.11.7-slim-bookworm"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu", "Dockerfile.dagster"])
def test_base_images_are_exact_versions(name: str) -> None:
    """No moving tag: a rebuild next month starts from the same base image."""
    path = DOCKER / name
    defaults = arg_defaults(path)
    for base in docker_args(path, "FROM"):
        base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base).split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+|pytorch/pytorch:[\d.]+-cuda[\d.]+-"
                            r"cudnn\d+-runtime", base), f"{name}: FROM {base}"
    if name != "Dockerfile.gpu":
        assert docker_args(path, "FROM") == [PYTHON_IMAGE]
    local = sys.version_info
    assert PYTHON_IMAGE.startswith(f"python:{local.major}.{local.minor}.")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_code_images_serve_the_code_location(name: str) -> None:
    path = DOCKER / name
    cmd = json.loads(docker_args(path, "CMD")[0])
    assert cmd == ["dagster", "api", "grpc", "-m", MODULE, "-h", "0.0.0.0", "-p", str(GRPC_PORT)]
    assert MODULE == "acs_pipeline.definitions"
    runs = " ".join(docker_args(path, "RUN"))
    assert "pip install -c constraints.txt ." in runs
    assert "pip install --no-deps ." in runs
    assert pinned("torch") in runs  # the torch wheel matches the project's pin
    assert f"DAGSTER_HOME={DAGSTER_HOME}" in " ".join(docker_args(path, "ENV"))


def test_cpu_image_uses_the_cpu_torch_wheel() -> None:
    path = DOCKER / "Dockerfile"
    assert docker_args(path, "FROM") == [PYTHON_IMAGE]
    runs = docker_args(path, "RUN")
    torch_install = next(run for run in runs if "torch==" in run)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install
    # the torch wheel must be in place before the project's dependencies are resolved
    project_install = next(i for i, r in enumerate(runs) if "constraints.txt ." in r)
    assert runs.index(torch_install) < project_install


def test_gpu_image_is_based_on_cuda_pytorch() -> None:
    path = DOCKER / "Dockerfile.gpu"
    base = arg_defaults(path)["BASE_IMAGE"]
    assert re.fullmatch(r"pytorch/pytorch:2\.13\.0-cuda12\.\d+-cudnn9-runtime", base)
    assert docker_args(path, "FROM") == ["${BASE_IMAGE}"]
    assert "whl/cu12" in arg_defaults(path)["TORCH_INDEX_URL"]


def test_dagster_image_pins_the_project_versions() -> None:
    path = DOCKER / "Dockerfile.dagster"
    runs = " ".join(docker_args(path, "RUN"))
    for package in ("dagster", "dagster-webserver", "dagster-postgres", "dagster-aws"):
        assert pinned(package) in runs.split(), package
    assert arg_defaults(path)["DAGSTER_YAML"] == "docker/dagster.yaml"
    # the AWS instance file's run launcher is in the project: installed without dependencies
    launcher = load_yaml(DOCKER / "dagster.aws.yaml")["run_launcher"]["module"]
    assert launcher.startswith("acs_pipeline.")
    assert "pip install --no-deps /tmp/acs" in runs and f'python -c "import {launcher}"' in runs
    assert "acs_pipeline /tmp/acs/acs_pipeline" in docker_args(path, "COPY")
    cmd = json.loads(docker_args(path, "CMD")[0])
    assert cmd[0] == "dagster-webserver" and cmd[-1] == "/opt/dagster/app/workspace.yaml"


def test_installed_package_carries_every_data_file() -> None:
    """The images pip-install the project (not editable): non-Python files must be package data."""
    package = ROOT / "acs_pipeline"
    shipped = {
        Path(match)
        for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["acs_pipeline"]
        for match in glob.glob(pattern, root_dir=package, recursive=True)
    }
    missing = [
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix not in {".py", ".pyc"}
        and "__pycache__" not in path.parts
        and path.relative_to(package) not in shipped
    ]
    assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"


# --------------------------------------------------------------------------------------------
# ECS


def test_gpu_task_definition_matches_the_run_launcher(instance_env: dict) -> None:
    launcher = load_yaml(DOCKER / "dagster.aws.yaml")["run_launcher"]["config"]
    task_definition = ecs_json("task-definition-gpu-run.json")
    run = container(task_definition)
    assert run["name"] == launcher["container_name"]
    assert {"type": "GPU", "value": "1"} in run["resourceRequirements"]
    assert task_definition["requiresCompatibilities"] == ["EC2"]
    assert task_definition["networkMode"] == "awsvpc"
    assert ":gpu-" in run["image"]
    env_names = {item["name"] for item in run["environment"]}
    secret_names = {item["name"] for item in run["secrets"]}
    # a GPU run needs the same settings the launcher gives a CPU run
    assert set(launcher["env_vars"]) <= env_names
    assert {secret["name"] for secret in launcher["secrets"]} <= secret_names
    assert not {name for name in env_names if "PASSWORD" in name or "SECRET_KEY" in name}


@pytest.mark.parametrize("name", ["daemon", "webserver"])
def test_system_task_definitions_define_what_the_instance_reads(name: str) -> None:
    run = container(ecs_json(f"task-definition-{name}.json"))
    defined = {item["name"] for item in run["environment"]} | {
        item["name"] for item in run.get("secrets", [])
    }
    needed = set(env_refs(load_yaml(DOCKER / "dagster.aws.yaml")))
    assert needed <= defined, needed - defined
    if name == "daemon":
        launcher = load_yaml(DOCKER / "dagster.aws.yaml")["run_launcher"]["config"]
        # env_vars are copied from the daemon's own environment when a run is launched
        assert set(launcher["env_vars"]) - {"DAGSTER_POSTGRES_PASSWORD"} <= defined
        assert "acs-init-instance" in " ".join(run["command"])
    assert "DAGSTER_POSTGRES_PASSWORD" in {item["name"] for item in run["secrets"]}


def test_code_task_definition_tells_the_launcher_its_image() -> None:
    run = container(ecs_json("task-definition-code.json"))
    env = {item["name"]: item["value"] for item in run["environment"]}
    assert env["DAGSTER_CURRENT_IMAGE"] == run["image"]
    assert ":cpu-" in run["image"]


def statements(name: str) -> list[dict[str, Any]]:
    return ecs_json(name)["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_run_role_reads_raw_data_and_writes_only_storage() -> None:
    raw = f"arn:aws:s3:::{ECS_PLACEHOLDERS['ACS_RAW_BUCKET']}"
    store = f"arn:aws:s3:::{ECS_PLACEHOLDERS['ACS_STORAGE_BUCKET']}"
    raw_actions: set[str] = set()
    store_actions: set[str] = set()
    for statement in statements("iam-policy-run.json"):
        assert statement["Effect"] == "Allow"
        for resource in as_list(statement["Resource"]):
            assert resource != "*"
            if resource in (raw, f"{raw}/*"):
                raw_actions |= set(as_list(statement["Action"]))
            if resource in (store, f"{store}/*"):
                store_actions |= set(as_list(statement["Action"]))
    assert raw_actions == {"s3:ListBucket", "s3:GetObject"}
    assert store_actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}


def test_daemon_role_can_launch_runs_and_pass_only_the_run_roles() -> None:
    actions: dict[str, list[str]] = {}
    for statement in statements("iam-policy-daemon.json"):
        for action in as_list(statement["Action"]):
            actions[action] = as_list(statement["Resource"])
    for needed in (
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "ecs:RegisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ecs:TagResource",
        "ec2:DescribeNetworkInterfaces",
        "secretsmanager:ListSecrets",
        "logs:GetLogEvents",
        "iam:PassRole",
    ):
        assert needed in actions, needed
    assert "*" not in actions["iam:PassRole"]
    assert all(
        arn.startswith("arn:aws:iam::123456789012:role/acs-") for arn in actions["iam:PassRole"]
    )
    execution = {a for s in statements("iam-policy-execution.json") for a in as_list(s["Action"])}
    assert "secretsmanager:GetSecretValue" in execution


# --------------------------------------------------------------------------------------------
# Kubernetes


def test_helm_values_match_the_compose_deployment() -> None:
    values = load_yaml(DOCKER / "k8s" / "values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", MODULE]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["telemetry"] == {"enabled": False}
    assert values["dagsterDaemon"]["runRetries"]["maxRetries"] == 2
    assert values["concurrency"]["enabled"] is True
    assert {"key": "acs/resource", "value": "gpu", "limit": 1} in values["concurrency"]["runs"][
        "tagConcurrencyLimits"
    ]
    # no run limit under the run coordinator next to the concurrency block (Dagster rejects it)
    assert (
        "maxConcurrentRuns"
        not in values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    )
    assert "postgresqlPassword" not in values["postgresql"]
