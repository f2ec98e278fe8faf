"""Prefect tasks for an issuance run — thin wrappers over :class:`passflow.run.IssueRun`.

A task run covers whole chunks of rows (thousands), never single rows, and keeps working through
chunks until it has worked ``TASK_MIN_SECONDS``: a task run costs ~55 ms of Prefect API work
(``bench/bench_overhead.py``), so a 1M-row link run (20 chunks of ~0.1 s each) has a handful of
task runs instead of 40, while an API run, whose batches take seconds, keeps one task run per batch.
``NO_CACHE`` because the inputs are a live run object and the segment's chunks: hashing them for a
cache key would cost more than the work, and re-running a chunk must really re-run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from passflow.report import report_progress
from passflow.run import IssueRun
from passflow.validate import ROW

TASK_MIN_SECONDS = 1.0  # a task run's share of Prefect overhead stays under ~5 %


class _Chunks:
    """The segment's chunks, with a look at the next one (a task run is named after its first row)."""

    def __init__(self, chunks: Iterator[pd.DataFrame]) -> None:
        self._chunks = chunks
        self._next: pd.DataFrame | None = None

    def peek(self) -> pd.DataFrame | None:
        if self._next is None:
            self._next = next(self._chunks, None)
        return self._next

    def __iter__(self) -> Iterator[pd.DataFrame]:
        while (chunk := self.peek()) is not None:
            self._next = None
            yield chunk


@task(name="stage-chunks", cache_policy=NO_CACHE, persist_result=False)
def stage_chunks(run: IssueRun, chunks: _Chunks) -> dict[str, int]:
    """Validate, render and sign/build source chunks (rows go to the run's spool or rejects) until
    ``TASK_MIN_SECONDS`` have passed or the segment ends."""
    started, totals = time.monotonic(), {"rows": 0, "prepared": 0, "rejected": 0}
    for chunk in chunks:
        for key, value in run.stage_chunk(chunk).items():
            totals[key] = totals.get(key, 0) + value
        report_progress("read", run.counts.read)
        if time.monotonic() - started >= TASK_MIN_SECONDS:
            break
    return totals


@task(name="check-rejects", cache_policy=NO_CACHE, persist_result=False)
def end_staging(run: IssueRun) -> None:
    """Write the rejects file; fail the run here, before issuing, if too many rows were rejected."""
    run.end_staging()


@task(name="deliver-batches", cache_policy=NO_CACHE, persist_result=False)
def deliver_batches(run: IssueRun, start: int) -> int:
    """Plan batches against the ledger, issue what is needed, record them and append them to the
    exports, from batch ``start`` until ``TASK_MIN_SECONDS`` have passed; returns the next batch."""
    started, index = time.monotonic(), start
    while index < run.batch_count:
        run.deliver_batch(index)
        index += 1
        if time.monotonic() - started >= TASK_MIN_SECONDS:
            break
    return index


@task(name="finish-deliveries", cache_policy=NO_CACHE, persist_result=False)
def finish_deliveries(run: IssueRun) -> dict[str, int]:
    """Record and export the last batch (an API run sends each batch while it records the previous one)."""
    return run.finish_deliveries()


def stage_segment(run: IssueRun) -> None:
    """Read and stage the whole segment, in task runs of ``TASK_MIN_SECONDS`` or more."""
    chunks = _Chunks(run.source_chunks())
    while (chunk := chunks.peek()) is not None:
        first = int(chunk[ROW].iloc[0]) if ROW in chunk.columns and len(chunk) else 0
        stage_chunks.with_options(task_run_name=f"stage-from-row-{first}")(run, chunks)


def deliver_segment(run: IssueRun, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Deliver every staged batch, in task runs of ``TASK_MIN_SECONDS`` or more, then the last one
    still being sent; ``on_progress(batches done, batches)`` after each task run."""
    index, total = 0, run.batch_count
    while index < total:
        name = f"deliver-from-batch-{index + 1}-of-{total}"
        index = deliver_batches.with_options(task_run_name=name)(run, index)
        if on_progress is not None:
            on_progress(index, total)
    finish_deliveries(run)  # the last batch is still being sent (batches overlap)
