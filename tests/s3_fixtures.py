"""A real S3-protocol server on 127.0.0.1 for the object-storage tests: moto's standalone server, as Ray's
own storage tests use it, started by the test itself and stopped by it (no mock inside the code under test).

``s3_server`` yields an ``S3Server`` whose ``uri(prefix)`` is a ``pyarrow.fs`` URI of a fresh bucket with the
server's endpoint in its query options, e.g.
``s3://gs-test/sweeps?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1``; the credentials are
moto's test ones, in the environment (so Ray's workers, started from this process's environment, see them).
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from dataclasses import dataclass

import pyarrow.fs
import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now: all are held bound until the last is
    chosen (ports probed one after the other can repeat: the kernel may hand a just-closed one out again)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@dataclass
class S3Server:
    """A running moto server on ``127.0.0.1:port``."""

    port: int

    def uri(self, prefix: str) -> str:
        """The URI of ``prefix`` in a bucket created for the caller (one bucket per call)."""
        bucket = f"gs-{uuid.uuid4().hex[:12]}"
        query = f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"
        filesystem, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{bucket}?{query}&allow_bucket_creation=true")
        filesystem.create_dir(bucket)
        return f"s3://{bucket}/{prefix}?{query}"


@pytest.fixture
def s3_server(monkeypatch):
    """Start moto's S3 server on a free local port for one test, then stop it."""
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(port=port)
    finally:
        server.stop()
