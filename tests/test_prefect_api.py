"""The CLI's temporary Prefect API server dies with the process that started it (kill -9 left
Prefect's own ephemeral server running, reparented to PID 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

PARENT = """
import os, sys, time
from passflow.prefect_api import temporary_prefect_api
with temporary_prefect_api() as url:
    print(url, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_temporary_api_server_dies_when_its_parent_is_killed(tmp_path) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        url = parent.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as f:
            [server] = [int(p) for p in f.read().split()]
        assert _alive(server)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(server):
            assert time.monotonic() < deadline, "the API server outlived its parent"
            time.sleep(0.2)
    finally:
        if parent.poll() is None:
            parent.kill()
