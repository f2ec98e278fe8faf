"""Serving an ASGI app on a socket passflow binds itself (so ``port=0`` picks a free port without races
and the caller learns the real one): in a background thread (tests, the CLI's embedded sandbox) or
in the foreground until SIGINT/SIGTERM. Used by the callbacks server and the sandbox alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from passflow import tuning


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


def serve_app(app: FastAPI, host: str, port: int, ready_prefix: str) -> None:
    """Serve an ASGI app in the foreground until SIGINT/SIGTERM; prints ``ready_prefix`` + URL once up."""
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])

    def announce() -> None:
        if tuning.enabled("gc_freeze"):
            asyncio.get_running_loop().create_task(_freeze_survivors())
        print(f"{ready_prefix}{url}", flush=True)

    # Keep the server's clock honest: a full garbage collection walks every object the imports
    # created (FastAPI, pydantic, uvicorn) and stalled this process 120 ms, which made it read a
    # whole backlog of arrivals at once (an even 200/s looked like 201 in one second). Start-up
    # objects live forever: freeze them out of collection (the worst pause is then ~20 ms).
    gc.collect()
    tuning.gc_freeze_for_good()
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


