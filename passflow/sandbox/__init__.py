"""Provider sandbox: a real HTTP server that behaves like Passmachine and Skycore as far as they are
documented, with limits, latency and injected faults, for tests, demos and benchmarks.

The wire protocol is ``docs/sandbox-protocol.md``. Typical use in a test::

    with start_sandbox_thread(SandboxConfig(max_in_flight=10)) as sandbox:
        ...  # point a campaign at sandbox.passmachine_url / sandbox.skycore_url
        assert sandbox.admin.stats()["duplicates"] == 0
"""

from passflow.sandbox.app import create_app
from passflow.sandbox.runner import (
    SandboxAdmin,
    SandboxHandle,
    serve,
    start_sandbox_process,
    start_sandbox_thread,
)
from passflow.sandbox.state import Account, FaultRule, SandboxConfig, SkycoreLinkConfig, max_in_window

__all__ = [
    "Account",
    "FaultRule",
    "SandboxAdmin",
    "SandboxConfig",
    "SandboxHandle",
    "SkycoreLinkConfig",
    "create_app",
    "max_in_window",
    "serve",
    "start_sandbox_process",
    "start_sandbox_thread",
]
