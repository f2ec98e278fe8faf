"""An asyncio event loop on a background thread, alive for a whole run.

Prefect tasks are plain (sync) functions called once per chunk. The vendor client, its connection
pool and the rate limiter must outlive a chunk — the limit holds "across the chunks of one run" —
and asyncio objects are bound to one loop. So the run owns one loop on a thread and each chunk's
task submits a coroutine to it and waits for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from passflow import tuning

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self, name: str = "passflow-io") -> None:
        tuning.io_loop_started()  # switch interval, GC freeze (passflow.tuning)
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
        tuning.io_loop_closed()
