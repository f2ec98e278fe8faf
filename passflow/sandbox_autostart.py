"""Start the provider sandbox for a run when the campaign points at it and nothing is listening.

This is what lets ``passflow issue data/campaigns/passmachine-loyalty.toml`` work on a fresh
machine: the campaign's API URL is the sandbox's loopback address, so the command starts the
sandbox, runs, and stops it. The sandbox's demo credentials are offered through the campaign's own
env-var references only when those variables are unset — real credentials always win, and a
campaign pointing at a real vendor never gets demo values.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from passflow.config import Campaign

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def sandbox_target(campaign: Campaign) -> tuple[str, int] | None:
    """(host, port) when the campaign talks to a sandbox on this machine, else None."""
    pm = campaign.passmachine
    if campaign.provider != "passmachine" or pm is None:
        return None
    parts = urlsplit(pm.api_base_url)
    if parts.hostname not in LOOPBACK or not parts.path.rstrip("/").endswith("/passmachine"):
        return None
    return parts.hostname or "127.0.0.1", parts.port or 80


@contextlib.contextmanager
def sandbox_for(campaign: Campaign, console: Any = None) -> Iterator[None]:
    target = sandbox_target(campaign)
    if target is None or _listening(*target):
        yield
        return
    from passflow.sandbox.runner import start_sandbox_thread
    from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN

    pm = campaign.passmachine
    assert pm is not None
    demo = {pm.public_token.env: DEMO_PUBLIC_TOKEN, pm.secret_token.env: DEMO_SECRET_TOKEN}
    added = [k for k in demo if k and not os.environ.get(k)]
    for k in added:
        os.environ[k] = demo[k]  # type: ignore[index]
    host, port = target
    if console is not None:
        console.print(f"starting the provider sandbox on http://{host}:{port} for this run", highlight=False)
    handle = start_sandbox_thread(host=host, port=port)
    try:
        yield
    finally:
        handle.stop()
        for k in added:
            os.environ.pop(k, None)
