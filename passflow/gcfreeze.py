"""Keep the garbage collector off the objects a long job starts with.

A full collection walks every tracked object of the process: ~300k after importing pandas, pyarrow,
SQLAlchemy, httpx and Prefect, 65-80 ms each time, several times a run. What exists when a run or an
I/O loop starts (modules, the run's set-up) lives through it, so :func:`hold` moves it out of
collection (``gc.freeze``) until the matching :func:`release`. Runs and loops may overlap (an update
run inside an issuing process): the first to start freezes, the last to end unfreezes (cyclic
garbage among those objects is then collected as usual).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0


def hold() -> None:
    """A job starts: freeze what exists now (if no other job did)."""
    global _holders
    with _lock:
        if _holders == 0:
            gc.freeze()
        _holders += 1


def release() -> None:
    """A job ended: the last one unfreezes."""
    global _holders
    with _lock:
        if _holders == 0:
            return  # released twice: nothing left to undo
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()
