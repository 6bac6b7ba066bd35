"""The AWS stack `docker/aws/stack.template`: cfn-lint passes, and the stack is created in moto's
CloudFormation with its outputs wired as `docker/dagster.aws.yaml` and the README expect (how the
stack is created in moto, and which resource types moto lacks: stack_fixtures.py).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint, lint_file
from dagster import DagsterInstance
from moto.iam.access_control import IAMPolicy, PermissionResult

from acs_pipeline.deploy.ecs_launcher import DERIVED_FAMILY_SUFFIX
from acs_pipeline_tests.stack_fixtures import (
    IMAGES,
    INSTANCE,
    LAUNCHER,
    REGION,
    ROOT,
    TEMPLATE,
    UNSUPPORTED,
    WORKSPACE,
    Stack,
    created_stack,
    env_of,
    load_template,
    secrets_of,
)
from acs_pipeline_tests.test_deployment import container, ecs_json, env_refs, sqlite_copy

LINT_REGIONS = ["us-east-1", "eu-west-1"]
# every environment variable the instance file reads (or the launcher copies into runs) -> the
# stack output it must equal; the three constants are checked against the resources themselves
FROM_OUTPUT = {
    "DAGSTER_POSTGRES_HOST": "DbEndpoint",
    "DAGSTER_POSTGRES_PORT": "DbPort",
    "DAGSTER_COMPUTE_LOG_BUCKET": "StorageBucketName",
    "ACS_ECS_LOG_GROUP": "LogGroupName",
    "ACS_ECS_EXECUTION_ROLE_ARN": "ExecutionRoleArn",
    "ACS_ECS_TASK_ROLE_ARN": "RunTaskRoleArn",
    "ACS_PG_PASSWORD_SECRET_ARN": "DbPasswordValueFrom",
    "ACS_RAW_URI": "RawUri",
    "ACS_STORAGE_URI": "StorageUri",
    "ACS_HOLDOUT_URI": "HoldoutUri",
}
CONSTANTS = {"DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_DB", "ACS_PROFILE"}
SECRETS = {"DAGSTER_POSTGRES_PASSWORD": "DbPasswordValueFrom"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with created_stack() as created:
        yield created


# --------------------------------------------------------------------------------------------
# cfn-lint


def test_cfn_lint_passes_with_informational_checks() -> None:
    config = ManualArgs(regions=LINT_REGIONS, include_checks=["I"])
    problems = [str(match) for match in lint_file(TEMPLATE, config=config)]
    assert problems == []


def test_cfn_lint_catches_a_broken_copy() -> None:
    broken = TEMPLATE.read_text().replace('- {Type: GPU, Value: "1"}', '- {Type: TPU, Value: "1"}')
    assert broken != TEMPLATE.read_text()
    problems = lint(broken, regions=LINT_REGIONS)
    assert any("TPU" in str(match) for match in problems), problems


# --------------------------------------------------------------------------------------------
# the stack in moto


def test_stack_creates_and_every_output_names_a_real_resource(stack: Stack) -> None:
    assert set(stack.outputs) == set(stack.template["Outputs"])
    unsupported = {k for k, v in stack.outputs.items() if UNSUPPORTED in v}
    assert unsupported == {"GpuCapacityProviderName"}  # AWS::ECS::CapacityProvider, see below
    out = stack.outputs
    (cluster,) = stack.client("ecs").describe_clusters(clusters=[out["ClusterName"]])["clusters"]
    assert cluster["status"] == "ACTIVE" and cluster["clusterName"] == stack.name
    for name in ("Code", "Daemon", "Webserver", "Gpu"):
        assert stack.container(f"{name}TaskDefinitionArn")["image"]
    stack.client("s3").head_bucket(Bucket=out["StorageBucketName"])
    assert out["StorageUri"] == f"s3://{out['StorageBucketName']}/acs-pipeline"
    prefix = INSTANCE["compute_logs"]["config"]["prefix"]
    assert out["ComputeLogUri"] == f"s3://{out['StorageBucketName']}/{prefix}"
    assert out["RawUri"] == "s3://nightingale-ed-bwh-ecg/ed-bwh-ecg/v1"
    assert out["HoldoutUri"] == "s3://nightingale-ed-bwh-ecg/ed-bwh-ecg/holdout"
    (database,) = stack.client("rds").describe_db_instances(
        DBInstanceIdentifier=stack.physical["Database"]
    )["DBInstances"]
    assert database["Endpoint"] == {"Address": out["DbEndpoint"], "Port": int(out["DbPort"])}
    assert database["Engine"] == "postgres" and database["DBName"] == "dagster"
    assert database["StorageEncrypted"] and not database["PubliclyAccessible"]
    (group,) = stack.client("logs").describe_log_groups(logGroupNamePrefix=out["LogGroupName"])[
        "logGroups"
    ]
    assert group["logGroupName"] == f"/ecs/{stack.name}" and group["retentionInDays"] == 30
    iam = stack.client("iam")
    for role in ("ExecutionRoleArn", "RunTaskRoleArn"):
        assert iam.get_role(RoleName=out[role].rsplit("/", 1)[1])["Role"]["Arn"] == out[role]
    assert out["PrivateSubnetIds"] == stack.parameters["PrivateSubnetIds"]
    stack.client("ec2").describe_security_groups(GroupIds=[out["TaskSecurityGroupId"]])
    (balancer,) = stack.client("elbv2").describe_load_balancers(
        LoadBalancerArns=[stack.physical["LoadBalancer"]]
    )["LoadBalancers"]
    assert balancer["Scheme"] == "internet-facing"
    assert out["UiUrl"] == f"http://{balancer['DNSName']}"


def test_instance_file_reads_only_what_the_stack_provides(stack: Stack) -> None:
    reads = set(env_refs(INSTANCE)) | set(LAUNCHER["env_vars"])
    assert reads == set(FROM_OUTPUT) | CONSTANTS | set(SECRETS)
    daemon = stack.container("DaemonTaskDefinitionArn")
    secret = json.loads(
        stack.client("secretsmanager").get_secret_value(SecretId=stack.outputs["DbSecretArn"])[
            "SecretString"
        ]
    )
    (database,) = stack.client("rds").describe_db_instances(
        DBInstanceIdentifier=stack.physical["Database"]
    )["DBInstances"]
    expected = {env: stack.outputs[output] for env, output in FROM_OUTPUT.items()} | {
        "DAGSTER_POSTGRES_USER": secret["username"],
        "DAGSTER_POSTGRES_DB": database["DBName"],
        "ACS_PROFILE": "paper",
    }
    assert {k: v for k, v in env_of(daemon).items() if k in expected} == expected
    web = stack.container("WebserverTaskDefinitionArn")
    assert {k: env_of(web)[k] for k in env_refs(INSTANCE) if k not in SECRETS} == {
        k: expected[k] for k in env_refs(INSTANCE) if k not in SECRETS
    }
    for process in (daemon, web):
        assert secrets_of(process) == {k: stack.outputs[v] for k, v in SECRETS.items()}
    # ECS's valueFrom `<secret arn>:<json key>::` names a key that the secret holds
    arn, key, stage, version = stack.outputs["DbPasswordValueFrom"].rsplit(":", 3)
    assert (arn, key, stage, version) == (stack.outputs["DbSecretArn"], "password", "", "")
    assert secret[key]


def test_instance_loads_with_the_daemons_environment(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = stack.container("DaemonTaskDefinitionArn")
    for name, value in env_of(daemon).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "injected-by-ecs")
    home = sqlite_copy(INSTANCE, tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        definition = launcher.task_definition_dict
        assert definition["log_group"] == stack.outputs["LogGroupName"]
        assert definition["execution_role_arn"] == stack.outputs["ExecutionRoleArn"]
        assert definition["task_role_arn"] == stack.outputs["RunTaskRoleArn"]
        assert launcher.secrets == [
            {"name": "DAGSTER_POSTGRES_PASSWORD", "valueFrom": stack.outputs["DbPasswordValueFrom"]}
        ]
        logs = instance.compute_log_manager
        assert f"s3://{logs._s3_bucket}/{logs._s3_prefix}" == stack.outputs["ComputeLogUri"]


def test_gpu_task_definition_gets_what_the_launcher_gives_cpu_runs(stack: Stack) -> None:
    gpu = stack.container("GpuTaskDefinitionArn")
    daemon = env_of(stack.container("DaemonTaskDefinitionArn"))
    assert gpu["name"] == LAUNCHER["container_name"]
    assert gpu["image"] == IMAGES["GpuImage"]
    assert gpu["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    # the launcher copies env_vars from the daemon's environment and adds its `secrets`
    assert {k: env_of(gpu)[k] for k in LAUNCHER["env_vars"]} == {
        k: daemon[k] for k in LAUNCHER["env_vars"]
    }
    assert secrets_of(gpu) == {
        s["name"]: daemon[s["valueFrom"]["env"]] for s in LAUNCHER["secrets"]
    }
    assert env_of(gpu)["AWS_DEFAULT_REGION"] == REGION
    properties = stack.template["Resources"]["GpuRunTaskDefinition"]["Properties"]
    assert properties["RequiresCompatibilities"] == ["EC2"]
    assert properties["NetworkMode"] == "awsvpc"


@pytest.mark.parametrize(
    ("name", "logical"),
    [("code", "Code"), ("daemon", "Daemon"), ("webserver", "Webserver"), ("gpu-run", "GpuRun")],
)
def test_task_definitions_match_the_manual_ones_in_docker_ecs(
    stack: Stack, name: str, logical: str
) -> None:
    """docker/ecs/*.json (the envsubst route) and the stack describe the same containers."""
    manual = ecs_json(f"task-definition-{name}.json")
    output = "GpuTaskDefinitionArn" if name == "gpu-run" else f"{logical}TaskDefinitionArn"
    ours, theirs = stack.container(output), container(manual)
    for key in ("name", "command", "portMappings", "resourceRequirements", "healthCheck"):
        assert (ours.get(key) or None) == (theirs.get(key) or None), key  # moto fills in []
    assert set(env_of(ours)) == set(env_of(theirs))
    assert set(secrets_of(ours)) == set(secrets_of(theirs))
    properties = stack.template["Resources"][f"{logical}TaskDefinition"]["Properties"]
    assert (properties["Cpu"], properties["Memory"]) == (manual["cpu"], manual["memory"])
    assert properties["RequiresCompatibilities"] == manual["requiresCompatibilities"]


def test_gpu_capacity_scales_from_zero_on_the_ecs_gpu_ami(stack: Stack) -> None:
    (group,) = stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack.physical["GpuAutoScalingGroup"]]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["DesiredCapacity"], group["Instances"]) == (0, 0, [])
    assert group["NewInstancesProtectedFromScaleIn"] is True  # managed termination protection
    assert group["VPCZoneIdentifier"].split(",") == stack.parameters["PrivateSubnetIds"].split(",")
    ec2 = stack.client("ec2")
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=group["LaunchTemplate"]["LaunchTemplateId"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    ami_parameter = stack.template["Parameters"]["GpuAmiId"]["Default"]
    assert ami_parameter.startswith("/aws/service/ecs/optimized-ami/") and "/gpu/" in ami_parameter
    public = stack.client("ssm").get_parameter(Name=ami_parameter)["Parameter"]["Value"]
    assert data["ImageId"] == public
    assert (
        f"ECS_CLUSTER={stack.outputs['ClusterName']}\n"
        in base64.b64decode(data["UserData"]).decode()
    )
    # moto has no capacity providers: their wiring is read from the template
    resources = stack.template["Resources"]
    provider = resources["GpuCapacityProvider"]["Properties"]["AutoScalingGroupProvider"]
    assert provider["AutoScalingGroupArn"] == {"Ref": "GpuAutoScalingGroup"}
    assert provider["ManagedScaling"]["Status"] == "ENABLED"
    assert provider["ManagedTerminationProtection"] == "ENABLED"
    association = resources["ClusterCapacityProviders"]["Properties"]
    assert association["CapacityProviders"] == ["FARGATE", {"Ref": "GpuCapacityProvider"}]
    assert association["Cluster"] == {"Ref": "Cluster"}
    assert stack.template["Outputs"]["GpuCapacityProviderName"]["Value"] == {
        "Ref": "GpuCapacityProvider"
    }


def test_services_run_and_reach_the_code_server_as_the_workspace_says(stack: Stack) -> None:
    ecs = stack.client("ecs")
    services = ecs.describe_services(
        cluster=stack.outputs["ClusterName"], services=["code", "daemon", "webserver"]
    )["services"]
    assert {s["serviceName"]: (s["desiredCount"], s["taskDefinition"]) for s in services} == {
        name: (1, stack.outputs[f"{name.capitalize()}TaskDefinitionArn"])
        for name in ("code", "daemon", "webserver")
    }
    (location,) = WORKSPACE["load_from"]
    grpc = location["grpc_server"]
    resources = stack.template["Resources"]
    code = resources["CodeService"]["Properties"]["ServiceConnectConfiguration"]
    (published,) = code["Services"]
    assert published["ClientAliases"] == [{"Port": grpc["port"], "DnsName": grpc["host"]}]
    assert (
        published["PortName"] == stack.container("CodeTaskDefinitionArn")["portMappings"][0]["name"]
    )
    for name in ("DaemonService", "WebserverService"):
        service = resources[name]
        assert service["Properties"]["ServiceConnectConfiguration"] == {
            "Enabled": True,
            "Namespace": code["Namespace"],
        }
        assert "CodeService" in service["DependsOn"]  # clients start after the server
    daemon = resources["DaemonService"]["Properties"]
    assert daemon["LaunchType"] == "FARGATE"  # copied by the launcher into CPU runs
    assert daemon["DeploymentConfiguration"]["MaximumPercent"] == 100  # never two daemons
    elb = stack.client("elbv2")
    (target,) = elb.describe_target_groups(
        TargetGroupArns=[stack.physical["WebserverTargetGroup"]]
    )["TargetGroups"]
    assert (target["Port"], target["TargetType"], target["HealthCheckPath"]) == (
        3000,
        "ip",
        "/server_info",
    )
    assert stack.container("WebserverTaskDefinitionArn")["portMappings"][0]["containerPort"] == 3000
    groups = stack.client("ec2").describe_security_groups(
        GroupIds=[stack.physical[n] for n in ("TaskSecurityGroup", "DatabaseSecurityGroup")]
    )
    ports = {
        g["GroupId"]: {
            (p["FromPort"], pair["GroupId"])
            for p in g["IpPermissions"]
            for pair in p["UserIdGroupPairs"]
        }
        for g in groups["SecurityGroups"]
    }
    task_sg, balancer_sg = (
        stack.physical["TaskSecurityGroup"],
        stack.physical["LoadBalancerSecurityGroup"],
    )
    assert ports[task_sg] == {(3000, balancer_sg), (4000, task_sg)}
    assert ports[stack.physical["DatabaseSecurityGroup"]] == {(5432, task_sg)}


def allowed(policy: IAMPolicy, action: str, resource: str) -> bool:
    return policy.is_action_permitted(action, resource) == PermissionResult.PERMITTED


def test_roles_grant_only_what_each_process_needs(stack: Stack) -> None:
    out = stack.outputs
    raw, store = "arn:aws:s3:::nightingale-ed-bwh-ecg", f"arn:aws:s3:::{out['StorageBucketName']}"
    run = stack.policy("RunTaskRole")
    assert allowed(run, "s3:GetObject", f"{raw}/ed-bwh-ecg/v1/ecg-waveforms-npz/00/a.npz")
    assert allowed(run, "s3:GetObject", f"{raw}/ed-bwh-ecg/holdout/b.npz")
    assert not allowed(run, "s3:GetObject", f"{raw}/other-study/c.npz")
    assert not any(
        allowed(run, a, f"{raw}/ed-bwh-ecg/v1/x") for a in ("s3:PutObject", "s3:DeleteObject")
    )
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(run, action, f"{store}/acs-pipeline/models/s4/acs/best.ckpt")
        assert not allowed(run, action, f"{store}/elsewhere/x")
    assert allowed(run, "s3:PutObject", f"{store}/dagster/compute-logs/run/step.out")
    daemon = stack.policy("DaemonTaskRole")
    for role in ("ExecutionRoleArn", "RunTaskRoleArn"):
        assert allowed(daemon, "iam:PassRole", out[role])
    assert not allowed(
        daemon, "iam:PassRole", f"arn:aws:iam::123456789012:role/{stack.physical['DaemonTaskRole']}"
    )
    family = f"{LAUNCHER['task_definition_prefix']}_1a2b3c_4d5e6f_7a8b9c"  # the launcher's
    task_definitions = f"arn:aws:ecs:{REGION}:123456789012:task-definition"
    assert allowed(daemon, "ecs:RunTask", f"{task_definitions}/{family}:3")
    # GPU runs start the stack's GPU task definition as the launcher derives it (its secrets
    # added, family `<GPU family>-launched`), never the stack's revision itself; registering it
    # passes the roles the GPU task definition names
    gpu_family, _ = out["GpuTaskDefinitionArn"].rsplit("/", 1)[1].split(":")
    assert allowed(daemon, "ecs:RunTask",
                   f"{task_definitions}/{gpu_family}{DERIVED_FAMILY_SUFFIX}:7")
    assert not allowed(daemon, "ecs:RunTask", out["GpuTaskDefinitionArn"])
    gpu = stack.template["Resources"]["GpuRunTaskDefinition"]["Properties"]
    assert {gpu["ExecutionRoleArn"]["Fn::GetAtt"][0], gpu["TaskRoleArn"]["Fn::GetAtt"][0]} == {
        "ExecutionRole", "RunTaskRole"}  # whose PassRole is checked above
    assert not allowed(daemon, "ecs:RunTask", f"{task_definitions}/someone-else:1")
    (run_task,) = [s for s in daemon._policy_json["Statement"] if s["Action"] == "ecs:RunTask"]
    (cluster,) = stack.client("ecs").describe_clusters(clusters=[out["ClusterName"]])["clusters"]
    assert run_task["Condition"] == {"ArnEquals": {"ecs:cluster": cluster["clusterArn"]}}
    assert allowed(
        daemon, "ecs:StopTask", f"arn:aws:ecs:{REGION}:123456789012:task/{stack.name}/abc"
    )
    assert not allowed(daemon, "ecs:StopTask", f"arn:aws:ecs:{REGION}:123456789012:task/other/abc")
    assert not allowed(daemon, "s3:GetObject", f"{raw}/ed-bwh-ecg/v1/x")
    execution = stack.policy("ExecutionRole")
    assert allowed(execution, "secretsmanager:GetSecretValue", out["DbSecretArn"])
    web = stack.policy("WebserverTaskRole")
    assert allowed(web, "s3:GetObject", f"{store}/dagster/compute-logs/run/step.err")
    assert not allowed(web, "s3:PutObject", f"{store}/dagster/compute-logs/run/step.err")
    assert not allowed(web, "ecs:RunTask", out["GpuTaskDefinitionArn"])


def test_storage_bucket_is_versioned_encrypted_and_private(stack: Stack) -> None:
    encryption = stack.client("s3").get_bucket_encryption(Bucket=stack.outputs["StorageBucketName"])
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto's CloudFormation does not apply the rest: read from the template
    resources = stack.template["Resources"]
    bucket = resources["StorageBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(bucket["Properties"]["PublicAccessBlockConfiguration"].values()) == {True}
    (deny,) = resources["StorageBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


def test_readme_uses_outputs_and_parameters_the_stack_has() -> None:
    template = load_template()
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Deploying on AWS") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    named = set(re.findall(r"\bout (\w+)", section))
    assert named and named <= set(template["Outputs"]), named - set(template["Outputs"])
    given = set(re.findall(r"\b(\w+)=", section[section.index("aws cloudformation deploy") :]))
    required = {k for k, v in template["Parameters"].items() if "Default" not in v}
    assert required <= given, required - given


def test_with_a_certificate_the_ui_is_https_and_http_redirects(stack: Stack) -> None:
    # a second stack in the same moto backend (the lookups above go by physical id)
    with created_stack("acs-https", certificate=True) as https:
        assert https.outputs["UiUrl"].startswith("https://")
        elb = https.client("elbv2")
        listeners = elb.describe_listeners(LoadBalancerArn=https.physical["LoadBalancer"])
        actions = {(x["Port"], x["Protocol"]): x["DefaultActions"] for x in listeners["Listeners"]}
        redirect = {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}
        assert actions[(80, "HTTP")] == [{"Type": "redirect", "RedirectConfig": redirect}]
        forward = {"Type": "forward", "TargetGroupArn": https.physical["WebserverTargetGroup"]}
        assert actions[(443, "HTTPS")] == [forward]
