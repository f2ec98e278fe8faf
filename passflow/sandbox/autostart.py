"""Start the provider sandbox for a run when the campaign points at it and nothing is listening.

This is what lets ``passflow issue data/campaigns/passmachine-loyalty.toml`` work on a fresh
machine: the campaign's API URL is the sandbox's loopback address, so the command starts the
sandbox, runs, and stops it. Which campaigns point at a sandbox, and which demo credentials it
offers, is each provider's ``SandboxHook``. The demo values are offered through the campaign's own
env-var references only when those variables are unset — real credentials always win, and a
campaign pointing at a real vendor never gets demo values.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from passflow.config import Campaign
from passflow.providers import provider_of


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def sandbox_target(campaign: Campaign) -> tuple[str, int] | None:
    """(host, port) when the campaign talks to a sandbox on this machine, else None."""
    hook = provider_of(campaign).sandbox
    return hook.target(campaign) if hook is not None else None


@contextlib.contextmanager
def sandbox_for(campaign: Campaign, console: Any = None) -> Iterator[None]:
    target = sandbox_target(campaign)
    if target is None or _listening(*target):
        yield
        return
    from passflow.sandbox.runner import start_sandbox_thread

    hook = provider_of(campaign).sandbox
    assert hook is not None
    demo = hook.demo_env(campaign)
    added = [k for k in demo if not os.environ.get(k)]
    for k in added:
        os.environ[k] = demo[k]
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
