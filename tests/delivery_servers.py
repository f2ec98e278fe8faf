"""Real delivery destinations on loopback for the tests: an S3-compatible server (moto in server
mode) and an SFTP server (asyncssh), each started in a thread of the test process.

Both need test-only packages (``moto[s3]`` with flask, ``asyncssh``): without them the tests skip
with the reason locally, and fail in CI (``CI=true``), where they are always installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

S3_KEY, S3_SECRET, S3_REGION = "passflow-test-key", "passflow-test-secret", "us-east-1"
SFTP_USER, SFTP_PASSWORD = "crm", "sftp-test-password-1"


def require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = f"delivery test servers need {', '.join(missing)} (pip install -c constraints.txt -e '.[dev]')"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class S3Server:
    endpoint: str
    client: Any  # boto3 S3 client

    def objects(self, bucket: str) -> dict[str, bytes]:
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = self.client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    require("moto", "flask", "s3fs", "boto3")
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name=S3_REGION
    )
    try:
        yield S3Server(endpoint=endpoint, client=client)
    finally:
        server.stop()


@dataclass
class SftpServer:
    host: str
    port: int
    root: Path  # the server's chroot: "/drop" on the server is root / "drop" here
    known_hosts: Path


@contextlib.contextmanager
def running_sftp_server(base: Path) -> Iterator[SftpServer]:
    require("asyncssh", "sshfs")
    import asyncssh

    class _Server(asyncssh.SSHServer):  # type: ignore[misc]
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == SFTP_USER and password == SFTP_PASSWORD

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return username == SFTP_USER and key.export_public_key() == CLIENT_KEY.export_public_key()

    root = base / "root"
    root.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()

    async def listen() -> Any:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            server_factory=_Server,
            sftp_factory=functools.partial(asyncssh.SFTPServer, chroot=str(root).encode()),
        )

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(30)
    port = server.sockets[0].getsockname()[1]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}", encoding="utf-8")
    try:
        yield SftpServer(host="127.0.0.1", port=port, root=root, known_hosts=known_hosts)
    finally:

        async def shut_down() -> None:
            server.close()
            await server.wait_closed()
            # sessions of killed clients: end them here rather than warn at interpreter exit
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _client_key() -> Any:
    try:
        import asyncssh
    except ImportError:
        return None
    return asyncssh.generate_private_key("ssh-ed25519")


CLIENT_KEY = _client_key()  # the key the SFTP server accepts (besides the password)
