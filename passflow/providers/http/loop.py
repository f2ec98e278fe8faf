"""An asyncio event loop on a background thread, alive for a whole run.

Prefect tasks are plain (sync) functions called once per chunk. The vendor client, its connection
pool and the rate limiter must outlive a chunk — the limit holds "across the chunks of one run" —
and asyncio objects are bound to one loop. So the run owns one loop on a thread and each chunk's
task submits a coroutine to it and waits for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from passflow import gcfreeze

T = TypeVar("T")


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The run's
# main thread records and exports with pandas while this loop sends requests; at the default, a
# request granted a start could wait up to 5 ms for the GIL before going out, and late sends cost
# rate (the limiter paces *sends*). Measured at 200/s: steady rate 0.944 → 0.976 of the limit.
_SWITCH_INTERVAL_S = 0.0005


# Both this and passflow.gcfreeze (a full collection walks ~300k import-time objects: 65-80 ms
# pauses every ~20 s at 500/s, each a gap in the sends) are process-wide, and loops may overlap (an
# update run inside an issuing process): the first loop to start changes them, the last one to close
# puts them back.
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def _start_io_tuning() -> None:
    """A loop starts: the first one shortens the switch interval; each holds the GC freeze."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, _SWITCH_INTERVAL_S))
        _switch_users += 1
    gcfreeze.hold()


def _end_io_tuning() -> None:
    """A loop closed: the last one restores the switch interval."""
    global _switch_users
    gcfreeze.release()
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            sys.setswitchinterval(_switch_saved)


class BackgroundLoop:
    def __init__(self, name: str = "passflow-io") -> None:
        _start_io_tuning()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it finishes (re-raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; ``.result()`` of the returned future waits for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
        _end_io_tuning()
