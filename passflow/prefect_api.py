"""A temporary Prefect API server for one CLI run that dies with the process that started it.

With no ``PREFECT_API_URL`` Prefect starts an ephemeral API server in a subprocess and stops it when
the run ends normally. After ``kill -9`` of ``passflow issue`` nothing stops it: it was reparented
to PID 1 and kept running. So the CLI starts the same server itself — uvicorn serving Prefect's
``create_app`` with Prefect's ephemeral-mode settings — in a child that watches its parent and exits
as soon as the parent is gone, and points the run at it with ``temporary_settings``.

``python -m passflow.prefect_api PORT PARENT_PID`` is that child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx

from passflow.errors import PassflowError

# What Prefect's own ephemeral server runs with (prefect.server.api.server.SubprocessASGIServer).
_EPHEMERAL_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
_PARENT_POLL_SECONDS = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_prefect_api() -> Iterator[str | None]:
    """Serve a temporary Prefect API for the block when none is configured; yields its URL (None: a
    configured API is used as is, or Prefect's ephemeral mode is off)."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        yield None
        return
    port = _free_port()
    env = {**os.environ, **settings.to_environment_variables(exclude_unset=True), **_EPHEMERAL_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "passflow.prefect_api", str(port), str(os.getpid())], env=env
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(proc, url, settings.server.ephemeral.startup_timeout_seconds)
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        _flush_to_api()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _flush_to_api() -> None:
    """Send the run's queued logs and events while the server is still there to take them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise PassflowError(
                    f"the temporary Prefect API server exited with code {proc.returncode} at start"
                )
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PassflowError(
                    f"the temporary Prefect API server did not answer within {timeout:g} s; "
                    "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL"
                )
            time.sleep(0.2)


def _exit_when_orphaned(parent: int) -> None:
    """Stop this server once the process that started it is gone (reparenting changes our ppid)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down on SIGTERM


def main(port: int, parent: int) -> None:
    import uvicorn

    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    uvicorn.run(
        "prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
        log_level="error", lifespan="on",
    )  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
