"""Start and stop the sandbox: in a background thread (tests), in a subprocess (benchmarks, so the
server does not share the client's GIL), or in the foreground (``serve``, for the CLI).

All three bind the listening socket themselves before uvicorn starts, so ``port=0`` picks a free port
without races and the caller learns the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic_core import to_jsonable_python

from passflow.sandbox.app import create_app
from passflow.sandbox.state import SandboxConfig, SandboxState

READY_PREFIX = "passflow-sandbox listening on "


class _Server(uvicorn.Server):
    """uvicorn server that calls back once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def _uvicorn_config(app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # per-request logging costs more than the handler
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,  # slow faults keep handlers asleep; do not wait for them long
        backlog=2048,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say they are TCP, and
    # without it Nagle + delayed ACKs add ~40 ms to every response (headers and body are two writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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


def start_app_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0, name: str = "passflow-app"
) -> tuple[str, Callable[[], None]]:
    """Serve any ASGI app in a daemon thread (the sandbox, the callbacks server); returns (url, stop)."""
    sock = _bind(host, port)
    real_port = sock.getsockname()[1]
    started = threading.Event()
    server = _Server(_uvicorn_config(app), on_started=started.set)
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - reported to the starter below
            failure.append(exc)
        finally:
            # Handlers still asleep in slow faults: cancel them so the loop closes cleanly.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            started.set()

    thread = threading.Thread(target=run, name=f"{name}-{real_port}", daemon=True)
    thread.start()
    if not started.wait(timeout) or failure or not server.started:
        server.should_exit = True
        sock.close()
        raise RuntimeError(
            f"{name} did not start within {timeout} s: {failure[0] if failure else 'timeout'}"
        )

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return _url(host, real_port), stop


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


def serve_app(app: FastAPI, host: str, port: int, ready_prefix: str) -> None:
    """Serve an ASGI app in the foreground until SIGINT/SIGTERM; prints ``ready_prefix`` + URL once up."""
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])

    def announce() -> None:
        asyncio.get_running_loop().create_task(_freeze_survivors())
        print(f"{ready_prefix}{url}", flush=True)

    # Keep the server's clock honest: a full garbage collection walks every object the imports
    # created (FastAPI, pydantic, uvicorn) and stalled this process 120 ms, which made it read a
    # whole backlog of arrivals at once (an even 200/s looked like 201 in one second). Start-up
    # objects live forever: freeze them out of collection (the worst pause is then ~20 ms).
    gc.collect()
    gc.freeze()
    server = _Server(_uvicorn_config(app), on_started=announce)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its clean shutdown
        server.run(sockets=[sock])


# What the server keeps (passes, their index, counters) grows all run: 50k passes are ~300k objects
# for every full collection to walk again, and those pauses (tens of ms, more as the run goes on)
# bunch arrivals the same way. So every few seconds: collect what is garbage, freeze what survived.
_FREEZE_EVERY_S = 2.0


async def _freeze_survivors() -> None:
    while True:
        await asyncio.sleep(_FREEZE_EVERY_S)
        gc.collect()  # walks only what is not frozen yet: the last few seconds' objects
        gc.freeze()


def config_from_json(text: str) -> SandboxConfig:
    """``--config-json`` value: inline JSON or ``@path/to/file.json``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return SandboxConfig.model_validate(json.loads(text))
