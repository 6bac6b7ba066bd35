"""Pytest fixtures for a real S3 server on loopback (moto's ThreadedMotoServer), fake credentials.

Import into ``conftest.py``: ``from acs_pipeline_tests.s3_fixtures import s3_bucket, s3_server``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Anything that could point boto3 at real credentials, profiles or endpoints.
AWS_ENV_TO_CLEAR = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def s3_client(endpoint: str) -> Any:
    """A plain boto3 S3 client for test set-up against ``endpoint``."""
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=16)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


def upload_tree(endpoint: str, bucket: str, prefix: str, local_dir: str | Path) -> list[str]:
    """Upload every file under ``local_dir`` to ``s3://bucket/prefix/<relative path>``.

    Returns the uploaded keys, sorted.
    """
    local_dir = Path(local_dir)
    client = s3_client(endpoint)
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    keys = [base + p.relative_to(local_dir).as_posix() for p in files]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda pk: client.put_object(Bucket=bucket, Key=pk[1], Body=pk[0].read_bytes()),
                zip(files, keys, strict=True),
            )
        )
    return sorted(keys)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start an S3 server on a free loopback port for the session; yields its endpoint URL.

    Sets fake credentials and points the shared AWS files at nonexistent paths for the session,
    so nothing reaches a developer's real AWS configuration.
    """
    missing = tmp_path_factory.mktemp("no-aws")
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_ENV_TO_CLEAR:
            mp.delenv(name, raising=False)
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing / "credentials"))
        mp.setenv("AWS_CONFIG_FILE", str(missing / "config"))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, uniquely named, empty bucket on the test server."""
    name = f"acs-test-{uuid.uuid4().hex[:16]}"
    s3_client(s3_server).create_bucket(Bucket=name)
    return name
