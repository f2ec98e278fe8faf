"""Process-level tuning: every knob that changes how the Python process itself behaves, in one place,
behind one switch.

``PASSFLOW_TUNING=off`` turns them all off (the plain interpreter's behaviour), for an A/B such as
``python bench/bench_engine.py --tuning``; ``PASSFLOW_TUNING=-gc_freeze,-release_memory`` turns off the
knobs listed. Each knob says what it buys, measured (``bench/README.md``, "Process tuning A/B"):

* ``switch_interval`` — while an I/O loop runs (API calls), a 0.5 ms GIL switch interval instead of
  5 ms: a request granted a start no longer waits up to 5 ms for the GIL behind pandas work before it
  goes out, and late sends cost rate (the limiter paces sends). API runs only.
* ``gc_freeze`` — what exists when a run, an I/O loop or a staging worker starts (~300k import-time
  objects) is moved out of garbage collection: each full collection walked them, 65–80 ms a time.
* ``release_memory`` — hand memory freed by past chunks back to the OS (Arrow's pool, glibc's
  ``malloc_trim``) once the process grew 128 MB since it last did, so RSS stays that of a chunk or two.
* ``writeback`` — start writing export pages to disk as they are written (``posix_fadvise``), so the
  commit's fsync finds little left to do.
* ``worker_main`` — staging workers skip re-importing the parent's ``__main__`` (seconds of CPU when
  that is Prefect's engine).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import pyarrow as pa

KNOBS = ("switch_interval", "gc_freeze", "release_memory", "writeback", "worker_main")
TUNING_ENV = "PASSFLOW_TUNING"


def _enabled_knobs() -> frozenset[str]:
    value = os.environ.get(TUNING_ENV, "on").strip().lower()
    if value in ("off", "0", "false", "none"):
        return frozenset()
    off = {k.strip().lstrip("-") for k in value.split(",") if k.strip().startswith("-")}
    unknown = off - set(KNOBS)
    if unknown:
        raise ValueError(f"{TUNING_ENV}: unknown knob(s) {', '.join(sorted(unknown))}; knobs: {', '.join(KNOBS)}")
    return frozenset(KNOBS) - off


ENABLED = _enabled_knobs()  # read once: worker processes inherit the environment


def enabled(knob: str) -> bool:
    return knob in ENABLED


# --- gc_freeze ---------------------------------------------------------------------------------
# Runs and loops may overlap (an update run inside an issuing process): the first to start freezes,
# the last to end unfreezes (cyclic garbage among those objects is then collected as usual).
_gc_lock = threading.Lock()
_gc_holders = 0


def gc_hold() -> None:
    """A job starts: freeze what exists now (if no other job did)."""
    global _gc_holders
    if not enabled("gc_freeze"):
        return
    with _gc_lock:
        if _gc_holders == 0:
            gc.freeze()
        _gc_holders += 1


def gc_release() -> None:
    """A job ended: the last one unfreezes."""
    global _gc_holders
    if not enabled("gc_freeze"):
        return
    with _gc_lock:
        if _gc_holders == 0:
            return  # released twice: nothing left to undo
        _gc_holders -= 1
        if _gc_holders == 0:
            gc.unfreeze()


def gc_freeze_for_good() -> None:
    """A process that lives for one job (a staging worker, the sandbox): its set-up is never garbage."""
    if enabled("gc_freeze"):
        gc.freeze()


# --- switch_interval ---------------------------------------------------------------------------
SWITCH_INTERVAL_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def io_loop_started() -> None:
    """An I/O loop starts: the first one shortens the switch interval; each holds the GC freeze."""
    global _switch_users, _switch_saved
    if enabled("switch_interval"):
        with _switch_lock:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL_S))
            _switch_users += 1
    gc_hold()


def io_loop_closed() -> None:
    """An I/O loop closed: the last one restores the switch interval."""
    global _switch_users
    gc_release()
    if enabled("switch_interval"):
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


# --- release_memory ----------------------------------------------------------------------------
# Memory a chunk freed is kept for the next chunk until the process has grown this much since it
# last handed memory back. Handing it back after every chunk made the next chunk fault every page in
# again: in a 1M-row run ~300k page faults, 60 % of all, for no lower peak.
RELEASE_AFTER_GROWTH = 128 << 20
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_rss_after_release: int | None = None  # this process's RSS right after its last release


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError, TypeError):
        return None


_malloc_trim = _load_malloc_trim()


def rss_bytes() -> int | None:
    """This process's resident set size now (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def release_memory(*, force: bool = False) -> bool:
    """Hand memory the last chunks freed back to the OS once the process has grown by
    ``RELEASE_AFTER_GROWTH`` since it last did (or now, with ``force``). Returns whether it released."""
    global _rss_after_release
    if not enabled("release_memory"):
        return False
    rss, last = rss_bytes(), _rss_after_release
    if not force and rss is not None and last is not None and rss - last < RELEASE_AFTER_GROWTH:
        return False
    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)
    _rss_after_release = rss_bytes()
    return True


# --- writeback ---------------------------------------------------------------------------------
# Linux: FADV_DONTNEED starts writeback without waiting for it.
_START_WRITEBACK = getattr(os, "POSIX_FADV_DONTNEED", None)


def start_writeback(file: BinaryIO) -> None:
    """Start writing ``file``'s pages to disk now (after a chunk was written to it)."""
    if _START_WRITEBACK is None or not enabled("writeback"):
        return
    file.flush()
    with contextlib.suppress(OSError):
        os.posix_fadvise(file.fileno(), 0, 0, _START_WRITEBACK)


# --- worker_main -------------------------------------------------------------------------------
def skip_main_in_workers(worker_name: str) -> None:
    """multiprocessing would import the parent's ``__main__`` in each worker whose name starts with
    ``worker_name``: seconds of CPU when that is prefect.engine, a failure for code read from stdin."""
    if not enabled("worker_main"):
        return
    from multiprocessing import spawn

    original = spawn.get_preparation_data
    if getattr(original, "__passflow_skip_main__", False):
        return

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if name.startswith(worker_name):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    preparation_data.__passflow_skip_main__ = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = preparation_data
