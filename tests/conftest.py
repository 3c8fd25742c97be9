"""Shared fixtures: real local servers (moto's S3/EC2/CE/... in server mode), test data paths,
gpucost config files written from data (``write_config``) and the run manifests a lake holds
(``manifests``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import ConfigWriter, Manifests, read_manifests

TESTS = Path(__file__).parent
DATA = TESTS / "data"
REPO = TESTS.parent
SHARED_REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture
def write_config(tmp_path: Path) -> ConfigWriter:
    """Writes config files under ``tmp_path`` (see :class:`ConfigWriter`)."""
    return ConfigWriter(tmp_path)


@pytest.fixture
def manifests(tmp_path: Path) -> Manifests:
    """Reads the run manifests of the lake at ``tmp_path / "lake"`` (the written configs')."""
    return lambda: read_manifests(tmp_path / "lake")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port (``ThreadedMotoServer``, port 0), for the session.

    Polars' object-store reader talks HTTP to it like to S3; moto's in-process mock would be
    invisible to it.
    """
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def boto3_session_factory(moto_endpoint: str) -> Callable[[], Any]:
    """Builds boto3 sessions with test credentials; pair with ``endpoint_url=moto_endpoint``."""

    def factory() -> Any:
        return boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    return factory


@pytest.fixture
def s3_bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty bucket on the moto server; yields its name."""
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40].strip("-]")
    name = "".join(char for char in name if char.isalnum() or char == "-").strip("-")
    client.create_bucket(Bucket=name)
    yield name
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)
