"""Prefect tasks for an issuance run — thin wrappers over :class:`passflow.engine.IssueRun`.

One task run per *chunk* of rows (thousands), never per row: a Prefect task run costs milliseconds.
``NO_CACHE`` because the inputs are a live run object and a DataFrame: hashing them for a cache key
would cost more than the work, and re-running a chunk must really re-run it.
"""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from passflow.engine import IssueRun


@task(name="stage-chunk", cache_policy=NO_CACHE, persist_result=False)
def stage_chunk(run: IssueRun, chunk: pd.DataFrame) -> dict[str, int]:
    """Validate, render and sign/build one source chunk (rows go to the run's spool or rejects)."""
    return run.stage_chunk(chunk)


@task(name="check-rejects", cache_policy=NO_CACHE, persist_result=False)
def end_staging(run: IssueRun) -> None:
    """Write the rejects file; fail the run here, before issuing, if too many rows were rejected."""
    run.end_staging()


@task(name="deliver-batch", cache_policy=NO_CACHE, persist_result=False)
def deliver_batch(run: IssueRun, index: int) -> dict[str, int]:
    """Plan one batch against the ledger, issue what is needed, record it and append it to the exports."""
    return run.deliver_batch(index)


@task(name="finish-deliveries", cache_policy=NO_CACHE, persist_result=False)
def finish_deliveries(run: IssueRun) -> dict[str, int]:
    """Record and export the last batch (an API run sends each batch while it records the previous one)."""
    return run.finish_deliveries()
