"""Both cores for a big run: chunks are validated and prepared in worker processes while the run
reads the next chunk; after the reject gate, ledger batches are written by the workers while the
run plans and exports the next batch. Also the run's spool (prepared rows, one file per chunk).

Order is what makes this safe. Workers do only per-row work (``validate_chunk`` without the
duplicate check, ``issuer.prepare_rows``) and may finish in any order; the run applies their
results strictly in chunk order in the main process, where the run-wide checks live: duplicate
customer ids and duplicate pass ids are rejected there exactly as in a sequential run ("first seen
at row N"), by :func:`apply_run_checks`. A row that turns out to be a duplicate customer id never
reached ``prepare`` in the sequential order, so anything a worker found about it is dropped.

Data moves as Arrow IPC files in the run's work directory rather than through pipes: a worker
writes a chunk's prepared rows straight into a spool segment, and the run hands a ledger batch to
a worker the same way. Pickling 45 MB of links per 100k rows through a pipe cost more CPU than
preparing them.

Memory stays flat: at most ``MAX_IN_FLIGHT`` chunks are with the workers, and at most two ledger
batches (:class:`LedgerWriter`).

The pool costs a second or so of CPU to start (a forkserver importing pandas & co, then one fork per
worker), so only big sources use it (:func:`wants_pool`), and the run keeps staging chunks itself
until the workers are up. ``forkserver``, not ``fork``: the parent runs threads (Prefect's, the
exports' writer), and forking a threaded process can deadlock the child. Everything a worker needs
reaches it pickled (:class:`WorkerSpec`), so the code is spawn-safe too; unlike multiprocessing's
default, the workers do not import the parent's ``__main__`` (see ``_WORKER_NAME``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.util
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from passflow import tuning
from passflow.exports.limits import ValueLimits, reject_long_values
from passflow.providers.base import DeliveryContext, StagesInWorkers
from passflow.run.journal import RunLock
from passflow.seen import SeenKeys, hash_keys
from passflow.store.ledger import Ledger
from passflow.validate import ROW, FieldRules, Rejects, reject_duplicate_ids, validate_chunk

log = logging.getLogger("passflow")

POOL_MIN_CSV_BYTES = 20 << 20  # ~250k rows of a typical segment: below that the pool does not pay
POOL_MIN_ROWS = 200_000  # SQL sources (size unknown): start the pool once this many rows were read
MAX_IN_FLIGHT = 2  # chunks submitted and not yet applied (the run reads the next one meanwhile)


def pool_workers() -> int:
    """Worker processes for a run: one per core, two at most (the run itself reads the source)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(2, cores)


def wants_pool(issuer: Any, *, csv_path: str | None, rows_read: int) -> bool:
    """Whether a run should stage in worker processes: a big source, an issuer that can, two cores."""
    if not isinstance(issuer, StagesInWorkers) or pool_workers() < 2:
        return False
    if csv_path is not None:
        try:
            return Path(csv_path).stat().st_size >= POOL_MIN_CSV_BYTES
        except OSError:
            return False
    return rows_read >= POOL_MIN_ROWS


# Workers need passflow's modules only; processes named _WORKER_NAME skip the parent's __main__.
_WORKER_NAME = "passflow-worker"
tuning.skip_main_in_workers(_WORKER_NAME)


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"{_WORKER_NAME}-{self.name}"


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess  # type: ignore[assignment]


rss_bytes = tuning.rss_bytes
release_memory = tuning.release_memory  # (re-exported: the run and the tests call it from here)


# ------------------------------------------------------------------------------------ the spool


def write_arrow(path: Path | str, table: pa.Table) -> None:
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def read_arrow(path: Path | str, *, memory_map: bool = True) -> pa.Table:
    source = pa.memory_map(str(path)) if memory_map else pa.OSFile(str(path))
    with source:
        return ipc.open_file(source).read_all()


def spool_table(prepared: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(prepared[schema.names], schema=schema, preserve_index=False)


class Spool:
    """A run's prepared rows: one Arrow IPC file per staged chunk (written by whoever staged it, a
    worker or the run), read back one batch per chunk, in chunk order."""

    def __init__(self, directory: Path, schema: pa.Schema) -> None:
        self.directory = directory
        self.schema = schema
        self._segments: list[Path] = []
        self._names = 0

    def reserve(self) -> Path:
        """A file name for the next chunk's rows (to write, then :meth:`add`)."""
        self._names += 1
        return self.directory / f"spool-{self._names:06d}.arrow"

    def add(self, path: Path) -> None:
        self._segments.append(path)

    def write(self, prepared: pd.DataFrame) -> None:
        path = self.reserve()
        write_arrow(path, spool_table(prepared, self.schema))
        self.add(path)

    @property
    def num_record_batches(self) -> int:
        return len(self._segments)

    def get_batch(self, index: int) -> pa.Table:
        return read_arrow(self._segments[index])

    def path(self, index: int) -> Path:
        return self._segments[index]


# --------------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, pickled: how to build the issuer (campaign, ``now``, resolved salt),
    the validation rules and the spool's schema."""

    make_issuer: Callable[[], Any]
    rules: FieldRules
    spool_schema: pa.Schema
    value_limits: ValueLimits = ValueLimits({})  # CRM limits on exported values (passflow.exports.limits)


@dataclass
class StagedChunk:
    """One chunk as a worker left it: per-row checks done, run-wide checks still to do."""

    rejects: Rejects  # validation, template and pass-id-syntax rejects
    valid: pd.DataFrame  # ROW and customer_id of the rows that passed validation
    valid_hashes: np.ndarray  # hash_keys(valid["customer_id"])
    segment: Path | None  # spool file with the rows that passed prepare_rows as well (None: none did)
    segment_rows: np.ndarray  # their ROW values
    pass_id_hashes: np.ndarray | None  # hash_keys of their pass ids, if the issuer claims pass ids


class _Worker:
    def __init__(self, spec: WorkerSpec, write_lock: Any) -> None:
        self.spec = spec
        self.issuer = spec.make_issuer()
        self.write_lock = write_lock  # one ledger writer at a time, across the workers
        self._ledgers: dict[str, Ledger] = {}
        self._checkpoint: threading.Thread | None = None

    def ledger(self, url: str) -> Ledger:
        if url not in self._ledgers:
            ledger = self._ledgers[url] = Ledger(url, bulk_writer=True)
            multiprocessing.util.Finalize(ledger, self._close, args=(ledger,), exitpriority=10)
        return self._ledgers[url]

    def checkpoint_soon(self, ledger: Ledger) -> None:
        """Copy the WAL into the database in a thread while the next batch is written (sqlite3 runs
        the whole checkpoint without the GIL)."""
        if self._checkpoint is not None:
            self._checkpoint.join()
        self._checkpoint = threading.Thread(target=ledger.checkpoint, name="passflow-checkpoint", daemon=True)
        self._checkpoint.start()

    def _close(self, ledger: Ledger) -> None:
        if self._checkpoint is not None:
            self._checkpoint.join()
        ledger.close()


_worker: _Worker | None = None  # this process's state, when it is a pool worker


def _init_worker(spec: WorkerSpec, write_lock: Any) -> None:
    global _worker
    _worker = _Worker(spec, write_lock)
    tuning.gc_freeze_for_good()  # a worker lives for one run: its imports and set-up are never garbage


def _ping() -> int:
    return os.getpid()


def _stage(chunk: pd.DataFrame, segment: Path) -> StagedChunk:
    assert _worker is not None, "not a staging worker"
    issuer = _worker.issuer
    rejects = Rejects()
    good = validate_chunk(chunk, _worker.spec.rules, None, rejects)
    prepared = issuer.prepare_rows(good, rejects) if len(good) else None
    if prepared is not None:
        prepared = reject_long_values(prepared, _worker.spec.value_limits, rejects)
    staged = StagedChunk(
        rejects=rejects,
        valid=good[[ROW, "customer_id"]],
        valid_hashes=hash_keys(good["customer_id"]),
        segment=None,
        segment_rows=np.empty(0, dtype=np.int64),
        pass_id_hashes=None,
    )
    if prepared is not None and len(prepared):
        write_arrow(segment, spool_table(prepared, _worker.spec.spool_schema))
        staged.segment = segment
        staged.segment_rows = prepared[ROW].to_numpy(dtype=np.int64)
        if issuer.claims_pass_ids:
            staged.pass_id_hashes = hash_keys(prepared["pass_id"])
    del good, prepared
    release_memory()
    return staged


@dataclass(frozen=True)
class _SpooledBatch:
    """A batch whose outcomes are the issuer's ``deliver`` of every row of a spool file, at ``now``."""

    path: str
    now: datetime


def _record(url: str, lock: RunLock, campaign: str, provider: str, batch: pd.DataFrame | str | _SpooledBatch) -> float:
    """Record one batch (a frame, the Arrow file holding it, or a spooled batch to deliver again)
    and refresh the run's lock (the run's own key: a shard's, for one shard of a split run), in a
    worker. Returns the seconds it took."""
    run_id = lock.run_id
    assert _worker is not None, "not a staging worker"
    t0 = time.perf_counter()
    if isinstance(batch, _SpooledBatch):
        issuer = _worker.issuer
        # memory-mapped, and pandas' `str` columns keep the Arrow strings: nothing is copied here
        prepared = read_arrow(batch.path).select(issuer.delivered_columns).to_pandas()
        ctx = DeliveryContext(run_id=run_id, campaign=campaign, now=batch.now, log=None)
        rows = issuer.for_ledger(issuer.deliver(prepared, ctx))
        del prepared
    elif isinstance(batch, str):
        rows = read_arrow(batch, memory_map=False).to_pandas()
        os.unlink(batch)
    else:
        rows = batch
    ledger = _worker.ledger(url)
    try:
        statements = ledger.record_statements(campaign, provider, rows, run_id)  # while the other writes
        del rows
        # Binds the rows while the other worker may be merging its batch; merges under the lock.
        ledger.write(statements, serialize=_worker.write_lock)
        with _worker.write_lock:
            lock.heartbeat(ledger)
    except sa.exc.DBAPIError as exc:
        # The same error without its parameters: they are the whole batch (customer data, and too
        # big to send back to the run).
        raise type(exc)(
            exc.statement,
            None,
            exc.orig,
            hide_parameters=True,
            connection_invalidated=exc.connection_invalidated,
        ) from None
    _worker.checkpoint_soon(ledger)
    del statements
    release_memory()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------- run side


def apply_run_checks(
    staged: StagedChunk, seen: SeenKeys, issuer: Any, rejects: Rejects, schema: pa.Schema
) -> tuple[Path | None, int]:
    """Finish a worker's chunk in the run, in chunk order: the duplicate customer id check (last
    step of validation), then the issuer's run-wide pass id check. Rejects go to ``rejects``.

    Returns the spool segment to keep (rewritten without the rows rejected here; None if no row is
    left) and its number of rows.
    """
    valid_rows = staged.valid[ROW].to_numpy(dtype=np.int64)
    first = seen.check_and_add_hashes(staged.valid_hashes, valid_rows)
    frames = staged.rejects.frames
    keep = np.ones(staged.segment_rows.shape[0], dtype=bool)
    dup = first >= 0
    if dup.any():
        dup_rows = valid_rows[dup]
        # In a sequential run a duplicate never reaches prepare: forget what the worker found about it.
        frames = [f.loc[~f["row"].isin(dup_rows).to_numpy()] for f in frames]
        reject_duplicate_ids(staged.valid, first, rejects)
        keep = ~np.isin(staged.segment_rows, dup_rows)
    rejects.frames.extend(f for f in frames if len(f))
    if staged.segment is None:
        return None, 0
    pass_first = None
    if staged.pass_id_hashes is not None:
        pass_first = issuer.pass_id_conflicts(staged.segment_rows[keep], staged.pass_id_hashes[keep])
    if keep.all() and (pass_first is None or not (pass_first >= 0).any()):
        return staged.segment, int(keep.shape[0])
    # Rare: rows to drop. Rewrite the segment without them.
    prepared = read_arrow(staged.segment, memory_map=False).to_pandas().loc[keep]
    if pass_first is not None:
        prepared = issuer.reject_pass_id_conflicts(prepared, pass_first, rejects)
    if prepared.empty:
        staged.segment.unlink()
        return None, 0
    write_arrow(staged.segment, spool_table(prepared, schema))
    return staged.segment, len(prepared)


@dataclass
class StagePool:
    """The run's worker processes. Start with :meth:`start`; chunks go in with :meth:`submit` and
    come back, in order, from it and from :meth:`drain`."""

    spec: WorkerSpec
    workers: int
    _executor: ProcessPoolExecutor | None = None
    _pending: deque[Future[StagedChunk]] = field(default_factory=deque)
    _up: threading.Event = field(default_factory=threading.Event)
    failed: BaseException | None = None

    def start(self) -> StagePool:
        # Preloading in the forkserver makes each worker a cheap fork of a process that already
        # imported pandas, pyarrow and passflow. (Ignored if this process's forkserver already runs.)
        issuer_module = getattr(getattr(self.spec.make_issuer, "func", None), "__module__", None)
        multiprocessing.forkserver.set_forkserver_preload(
            [__name__, *([issuer_module] if issuer_module else [])]
        )
        context = _WorkerContext()
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.spec, context.Lock()),
        )
        # Starting the workers blocks until the forkserver is up: do it off the run's thread.
        threading.Thread(target=self._warm_up, name="passflow-pool-start", daemon=True).start()
        return self

    def _warm_up(self) -> None:
        assert self._executor is not None
        try:
            for future in [self._executor.submit(_ping) for _ in range(self.workers)]:
                future.result()
        except BaseException as exc:  # noqa: BLE001 - reported by the run, which then stages alone
            self.failed = exc
        self._up.set()

    @property
    def ready(self) -> bool:
        """Workers are up (until then the run stages chunks itself)."""
        return self._up.is_set() and self.failed is None

    def submit(self, chunk: pd.DataFrame, segment: Path) -> list[StagedChunk]:
        """Hand a chunk to the workers (its prepared rows go to ``segment``); return the chunks
        finished so far, oldest first. Blocks while more than ``MAX_IN_FLIGHT`` chunks are out."""
        assert self._executor is not None
        self._pending.append(self._executor.submit(_stage, chunk, segment))
        done = []
        while self._pending and (len(self._pending) > MAX_IN_FLIGHT or self._pending[0].done()):
            done.append(self._pending.popleft().result())
        return done

    def drain(self) -> list[StagedChunk]:
        done = []
        while self._pending:
            done.append(self._pending.popleft().result())
        return done

    def ledger_writer(self, url: str, directory: Path, lock: RunLock) -> LedgerWriter:
        assert self._executor is not None
        return LedgerWriter(self._executor, url, directory, lock)

    def close(self) -> None:
        if self._executor is not None:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class LedgerWriter:
    """Records ledger batches in the pool's workers while the run plans and exports the next batch.
    (A thread would not do: the sqlite3 module takes the GIL back for every row, and the run's
    pandas work holds it in between.)

    Two batches are out at a time, one per worker: one is written while the other one is read and
    turned into parameters, and a lock shared by the workers lets only one of them write (a SQLite
    ledger takes one writer anyway). Batches hold distinct customers, so their order does not
    matter. ``record`` first waits for the batch before the previous one, so a failed write stops
    the run a batch or two later at the latest; :meth:`wait` (called before the exports are
    committed) settles every batch. The workers also refresh the run's lock after each batch.
    """

    IN_FLIGHT = 2

    def __init__(self, executor: ProcessPoolExecutor, url: str, directory: Path, lock: RunLock) -> None:
        self._executor = executor
        self._url = url
        self._lock = lock  # the run's lock row: each recorded batch refreshes it
        self._directory = directory
        self._batches = 0
        self._pending: deque[Future[float]] = deque()
        self.write_s = 0.0  # time the workers spent on the batches
        self.wait_s = 0.0  # time the run waited for them

    def record(self, campaign: str, provider: str, rows: pd.DataFrame) -> None:
        while len(self._pending) >= self.IN_FLIGHT:
            self._settle(self._pending.popleft())
        self._batches += 1
        path = self._directory / f"ledger-{self._batches:06d}.arrow"
        batch: pd.DataFrame | str = rows
        try:
            write_arrow(path, pa.Table.from_pandas(rows, preserve_index=False))
            batch = str(path)
        except (pa.ArrowException, TypeError, ValueError):  # a column Arrow cannot hold: pickle it
            path.unlink(missing_ok=True)
        self._pending.append(self._executor.submit(_record, self._url, self._lock, campaign, provider, batch))

    def record_spooled(self, campaign: str, provider: str, spooled: Path, now: datetime) -> None:
        """Record every row of a spooled batch as the issuer's ``deliver`` at ``now`` makes it (an
        issuer that ``delivers_from_spool``): the worker reads the spool file the batch was staged
        into, and nothing is written again."""
        while len(self._pending) >= self.IN_FLIGHT:
            self._settle(self._pending.popleft())
        batch = _SpooledBatch(str(spooled), now)
        self._pending.append(self._executor.submit(_record, self._url, self._lock, campaign, provider, batch))

    def wait(self) -> None:
        """Block until every batch handed over is in the ledger; raise the first error."""
        try:
            while self._pending:
                self._settle(self._pending.popleft())
        finally:
            for future in self._pending:  # after an error: let the others finish, ignore them
                with contextlib.suppress(BaseException):
                    future.result()
            self._pending.clear()

    def _settle(self, future: Future[float]) -> None:
        t0 = time.perf_counter()
        self.write_s += future.result()
        self.wait_s += time.perf_counter() - t0


def same_sqlite_file(url_a: str, url_b: str) -> bool:
    """Whether two SQLAlchemy URLs are the same SQLite file (whose writes would queue on one lock)."""
    a, b = make_url(url_a), make_url(url_b)
    if a.get_backend_name() != "sqlite" or b.get_backend_name() != "sqlite":
        return False
    if not a.database or not b.database or ":memory:" in (a.database, b.database):
        return False
    return Path(a.database).resolve() == Path(b.database).resolve()
