"""Graceful stop on SIGTERM, and crash points for the crash-safety tests.

SIGTERM (an operator, systemd, Kubernetes, a Prefect cancellation) asks the run to stop: no new
chunk is read and no new vendor call is started; calls already in flight finish and are recorded in
the ledger; the run then fails with :class:`RunStopped` (no export is committed) and a rerun resumes.
A second SIGTERM stops at once (``KeyboardInterrupt``; the ledger still makes the rerun safe).

``PASSFLOW_CRASH_AT=point[:n]`` kills the process with SIGKILL the ``n``-th time (default 1) it
passes ``crash_point(point)``: the tests use it to land a ``kill -9`` in a chosen phase.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from passflow.errors import RunStopped

CRASH_ENV = "PASSFLOW_CRASH_AT"

_stop = threading.Event()
_hits: Counter[str] = Counter()
_hits_lock = threading.Lock()


def stop_requested() -> bool:
    return _stop.is_set()


def check_stop(where: str) -> None:
    """Raise :class:`RunStopped` if a stop was requested (call between units of work)."""
    if _stop.is_set():
        raise RunStopped(
            f"stopped by SIGTERM {where}: calls in flight finished and are recorded in the ledger; "
            "no export was written. Run the same command again to finish the campaign."
        )


@contextlib.contextmanager
def graceful_stop(logger: Any = None) -> Iterator[None]:
    """While active (main thread only), SIGTERM requests a graceful stop instead of killing the run."""
    log = logger or logging.getLogger("passflow")
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if _stop.is_set():
            raise KeyboardInterrupt("second SIGTERM: stopping now")
        _stop.set()
        log.warning("SIGTERM received: finishing the calls in flight, then stopping (send again to stop now)")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _stop.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop.clear()


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process here when ``PASSFLOW_CRASH_AT`` names this point."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    with _hits_lock:
        _hits[name] += 1
        hit = _hits[name]
    if hit == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
