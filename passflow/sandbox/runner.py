"""Start and stop the sandbox: in a background thread (tests), in a subprocess (benchmarks, so the
server does not share the client's GIL), or in the foreground (``serve``, for the CLI).

All three bind the listening socket themselves before uvicorn starts, so ``port=0`` picks a free port
without races and the caller learns the real one.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from pydantic_core import to_jsonable_python

from passflow.httpserver import serve_app, start_app_thread
from passflow.sandbox.app import create_app
from passflow.sandbox.state import SandboxConfig, SandboxState

READY_PREFIX = "passflow-sandbox listening on "


class SandboxAdmin:
    """A tiny sync client for ``/_admin``."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.Client(base_url=f"{base_url}/_admin", timeout=30.0)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        response = self._client.request(method, path, **kw)
        response.raise_for_status()
        return response.json()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Replace the given config fields (``faults=[FaultRule(...) or dict, …]``, ``max_in_flight=…``)."""
        return self._call("POST", "/config", json=to_jsonable_python(changes))

    def config(self) -> dict[str, Any]:
        return self._call("GET", "/config")

    def stats(self, *, per_customer: bool = True) -> dict[str, Any]:
        return self._call("GET", "/stats", params={"per_customer": per_customer})

    def arrivals(self) -> list[float]:
        """Accepted arrival times (sandbox monotonic clock) at the limited endpoints."""
        return self._call("GET", "/arrivals")["accepted"]

    def reset(self, *, keep_config: bool = False) -> None:
        self._call("POST", "/reset", params={"keep_config": keep_config})

    def revoke_tokens(self, account: str | None = None) -> int:
        params = {"account": account} if account else None
        return self._call("POST", "/revoke-tokens", params=params)["revoked"]

    def passes(self, account: str | None = None) -> list[dict[str, Any]]:
        params = {"account": account} if account else None
        return self._call("GET", "/passmachine/passes", params=params)["data"]

    def register_skycore_passes(self, pass_ids: Iterable[str]) -> int:
        return self._call("POST", "/skycore/passes", json=list(pass_ids))["registered"]

    def skycore_passes(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/skycore/passes")

    def skycore_updates(self) -> list[dict[str, Any]]:
        return self._call("GET", "/skycore/updates")["updates"]

    def simulate_callback(self, **fields: Any) -> dict[str, Any]:
        """Make the sandbox POST a vendor callback (see ``passflow.sandbox.postbacks``); its outcome."""
        return self._call("POST", "/callbacks/simulate", json=fields)

    def close(self) -> None:
        self._client.close()


class SandboxHandle:
    """A running sandbox. ``state`` is the live :class:`SandboxState` for a thread sandbox, else None."""

    def __init__(
        self, url: str, stop: Callable[[], None], state: SandboxState | None = None, pid: int | None = None
    ) -> None:
        self.url = url
        self.pid = pid  # of a sandbox process (None in a thread)
        self.admin = SandboxAdmin(url)
        self.state = state
        self._stop = stop
        self._stopped = False

    @property
    def passmachine_url(self) -> str:
        return f"{self.url}/passmachine"

    @property
    def skycore_url(self) -> str:
        return f"{self.url}/skycore"

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.admin.close()
            self._stop()

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_sandbox_thread(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0
) -> SandboxHandle:
    """Run the sandbox in a daemon thread with its own event loop; returns once it accepts connections."""
    app = create_app(config)
    url, stop = start_app_thread(app, host, port, timeout=timeout, name="passflow-sandbox")
    return SandboxHandle(url, stop, app.state.sandbox)


def start_sandbox_process(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    config: SandboxConfig | None = None,
    timeout: float = 30.0,
    **config_fields: Any,
) -> SandboxHandle:
    """Run ``python -m passflow.sandbox`` in a subprocess; returns once it answers ``/_admin/health``.

    Config comes from ``config`` or from keyword fields (``latency_ms=100, max_in_flight=10``).
    """
    cfg = config or SandboxConfig.model_validate(config_fields)
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding the passflow package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "passflow.sandbox", "--host", host, "--port", str(port)]
    cmd += ["--config-json", cfg.model_dump_json()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps reading so the child can never block on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="passflow-sandbox-stdout", daemon=True).start()

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            stop()
            raise RuntimeError(f"sandbox process did not start within {timeout} s") from None
        if line is None:
            raise RuntimeError(f"sandbox process exited with code {proc.wait()} before it was ready")
        if line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX) :].strip()
    httpx.get(f"{url}/_admin/health", timeout=max(1.0, deadline - time.monotonic())).raise_for_status()
    return SandboxHandle(url, stop, pid=proc.pid)


def serve(host: str = "127.0.0.1", port: int = 8765, config: SandboxConfig | None = None) -> None:
    """Run the sandbox in the foreground until SIGINT/SIGTERM. Prints one ready line with the URL."""
    serve_app(create_app(config), host, port, READY_PREFIX)


def config_from_json(text: str) -> SandboxConfig:
    """``--config-json`` value: inline JSON or ``@path/to/file.json``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return SandboxConfig.model_validate(json.loads(text))
