"""A real S3 API server on the loopback address for the remote tests (moto's server mode).

``s3_server`` starts moto's ``ThreadedMotoServer`` on 127.0.0.1 with a free port once per test
module, and stops it at the end. ``s3_bucket`` gives each test its own fresh bucket on that server,
with dummy credentials set in the environment for that test only (nothing reaches beyond
127.0.0.1: the endpoint is always given explicitly and the AWS config/credentials files are
pointed at nothing, so no profile on this machine is read).

What moto does and does not enforce (checked against moto 5.2): ``If-None-Match: *`` on
PutObject and CompleteMultipartUpload is enforced (412); multipart COMPOSITE SHA256 checksums
are computed by the server from the parts' bytes; the ChecksumSHA256 of a single PutObject is
echoed back as sent, not recomputed from the body (real S3 rejects a mismatch with BadDigest), so
the tests that need a wrong object on the remote write it directly, as a tamperer would.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/assetkit-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/assetkit-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Bucket:
    """One bucket on the loopback server: where it is and a raw boto3 client (the tamperer's)."""

    endpoint_url: str
    bucket: str
    client: object

    def url(self, prefix: str = "team") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on 127.0.0.1 (free port), stopped at the end."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket on the loopback server; dummy credentials in the environment for this test."""
    import boto3

    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"assetkit-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Bucket(endpoint_url=s3_server, bucket=bucket, client=client)
