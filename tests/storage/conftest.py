"""Fixtures for storage tests: a moto S3 server for the session and a new bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.helpers.moto import aws_environment, start_moto_server


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a moto server for the session and point the AWS variables at it.

    The variables (endpoint, fake credentials, region) stay set until the session ends,
    so subprocesses such as the ``backvault`` command inherit them too.
    """
    server = start_moto_server()
    config_directory = tmp_path_factory.mktemp("aws-config")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environment(server.endpoint_url, config_directory).items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        try:
            yield server.endpoint_url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    """A boto3 client of the moto server, for setting up and inspecting buckets."""
    return boto3.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """The name of a new, empty bucket on the moto server."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name
