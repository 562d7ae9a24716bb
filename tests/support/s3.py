"""An S3-compatible server on loopback for the tests of Kiln's multi-machine setup: moto's
server mode (from PyPI, as Docker images cannot be pulled where the tests run), speaking
the S3 protocol that MLflow's artifact store and DVC's remote use against MinIO or S3."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from tests.support.postgres import free_port
from tests.support.repo import BIN

BUCKET = "kiln"
# moto accepts any credentials; the clients need some to sign their requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "kiln-test", "AWS_SECRET_ACCESS_KEY": "kiln-test-secret"}
REGION = {"AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def server() -> Iterator[str]:
    """A server with an empty bucket `kiln`; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(endpoint, timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
                time.sleep(0.2)
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def keys(endpoint: str, prefix: str) -> list[str]:
    """Every object key in the bucket under `prefix`."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
