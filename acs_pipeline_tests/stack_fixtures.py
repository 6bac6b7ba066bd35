"""The AWS stack `docker/aws/stack.template` created in moto's CloudFormation, for test_stack.py.

moto (5.2) creates most resource types of the stack, but not Secrets Manager secrets, ECS
capacity providers and their cluster association, the Service Connect namespace or bucket
policies, and it ignores some properties of the types it creates (bucket versioning and public
access block, the roles and network mode of task definitions). The stack is therefore created from
a copy without those resources, a reference to one replaced by a stand-in: the database secret is
created through moto's Secrets Manager API as the template describes it, the others become
`moto-unsupported:<name>` strings. test_stack.py checks what moto cannot hold on the template.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cfnlint.decode import decode_str
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map
from moto.iam.access_control import IAMPolicy

from acs_pipeline_tests.s3_fixtures import AWS_ENV_TO_CLEAR, FAKE_AWS_ENV

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "docker" / "aws" / "stack.template"
INSTANCE = yaml.safe_load((ROOT / "docker" / "dagster.aws.yaml").read_text())
LAUNCHER = INSTANCE["run_launcher"]["config"]
WORKSPACE = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
REGION = "eu-west-1"
STACK = "acs-pipeline"
UNSUPPORTED = "moto-unsupported:"
IMAGES = {
    "DagsterImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/acs-dagster:aws-abc1234",
    "CodeImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/acs-pipeline:cpu-abc1234",
    "GpuImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/acs-pipeline:gpu-abc1234",
}


def load_template(text: str | None = None) -> dict[str, Any]:
    """The template as plain JSON-able data (short-form intrinsics expanded by cfn-lint)."""
    template, problems = decode_str(TEMPLATE.read_text() if text is None else text)
    assert not problems, problems
    return json.loads(json.dumps(template))


def moto_copy(template: dict[str, Any], stand_ins: dict[str, str]) -> dict[str, Any]:
    """`template` without the resource types moto cannot create; references to them replaced."""
    supported = set(get_model_map())
    dropped = {k for k, r in template["Resources"].items() if r["Type"] not in supported}

    def stand_in(name: str) -> str:
        return stand_ins.get(name, f"{UNSUPPORTED}{name}")

    def sub(text: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(1)
            return stand_in(name) if name.split(".")[0] in dropped else match.group(0)

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if list(node) == ["Ref"] and node["Ref"] in dropped:
            return stand_in(node["Ref"])
        if list(node) == ["Fn::GetAtt"] and node["Fn::GetAtt"][0] in dropped:
            return stand_in(".".join(node["Fn::GetAtt"]))
        if list(node) == ["Fn::Sub"]:
            body = node["Fn::Sub"]
            return {
                "Fn::Sub": sub(body) if isinstance(body, str) else [sub(body[0]), walk(body[1])]
            }
        return {key: walk(value) for key, value in node.items()}

    resources = {}
    for name, resource in template["Resources"].items():
        if name in dropped:
            continue
        resource = walk(resource)
        needs = resource.pop("DependsOn", [])
        needs = [d for d in ([needs] if isinstance(needs, str) else needs) if d not in dropped]
        resources[name] = resource | ({"DependsOn": needs} if needs else {})
    return {**template, "Resources": resources, "Outputs": walk(template["Outputs"])}


@dataclass
class Stack:
    name: str
    template: dict[str, Any]
    parameters: dict[str, str]
    outputs: dict[str, str]
    physical: dict[str, str]  # logical id -> physical id
    session: boto3.Session

    def client(self, name: str) -> Any:
        return self.session.client(name)

    def container(self, output: str) -> dict[str, Any]:
        arn = self.outputs[output]
        (only,) = self.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"][
            "containerDefinitions"
        ]
        return only

    def policy(self, logical_role: str) -> IAMPolicy:
        iam = self.client("iam")
        role = self.physical[logical_role]
        (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto's CloudFormation stores str(dict), not JSON
            document = ast.literal_eval(document)
        return IAMPolicy(json.dumps(document))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("environment", [])}


def secrets_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["valueFrom"] for item in container.get("secrets", [])}


@contextmanager
def created_stack(name: str = STACK, certificate: bool = False) -> Iterator[Stack]:
    """The stack created in moto (mock_aws active until the context exits), fake credentials;
    with `certificate`, an ACM certificate made in moto is passed as CertificateArn."""
    template = load_template()
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for variable in AWS_ENV_TO_CLEAR:
            patch.delenv(variable, raising=False)
        for variable, value in FAKE_AWS_ENV.items():
            patch.setenv(variable, value)
        session = boto3.Session(region_name=REGION)
        ec2 = session.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}"
            )["Subnet"]["SubnetId"]
            for i, az in enumerate("abab")
        ]
        # the secret as its GenerateSecretString describes it, through the Secrets Manager API
        spec = template["Resources"]["DatabaseSecret"]["Properties"]
        generate = spec["GenerateSecretString"]
        secrets = session.client("secretsmanager")
        password = secrets.get_random_password(
            PasswordLength=generate["PasswordLength"],
            ExcludeCharacters=generate["ExcludeCharacters"],
        )["RandomPassword"]
        value = json.loads(generate["SecretStringTemplate"]) | {
            generate["GenerateStringKey"]: password
        }
        secret = secrets.create_secret(
            Name=spec["Name"]["Fn::Sub"].replace("${AWS::StackName}", name),
            SecretString=json.dumps(value),
        )
        parameters = IMAGES | {
            "VpcId": vpc,
            "PublicSubnetIds": ",".join(subnets[:2]),
            "PrivateSubnetIds": ",".join(subnets[2:]),
            "UiAllowedCidr": "203.0.113.7/32",
            "RawBucketName": "nightingale-ed-bwh-ecg",
        }
        if certificate:
            acm = session.client("acm")
            certificate_arn = acm.request_certificate(DomainName="dagster.example.org")
            parameters["CertificateArn"] = certificate_arn["CertificateArn"]
        cloudformation = session.client("cloudformation")
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(moto_copy(template, {"DatabaseSecret": secret["ARN"]})),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        cloudformation.get_waiter("stack_create_complete").wait(
            StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        (described,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
        physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
        }
        yield Stack(name, template, parameters, outputs, physical, session)
