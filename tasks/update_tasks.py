"""Prefect tasks for an update run — thin wrappers over :class:`passflow.updates.UpdateRun`.

One task run per *chunk* of customers (``[updates] chunk_size``, default 1000), never per customer.
``NO_CACHE``: the input is a live run object, and re-running a chunk must really re-run it.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from passflow.updates import UpdateRun


@task(name="plan-updates", cache_policy=NO_CACHE, persist_result=False)
def plan_updates(run: UpdateRun) -> dict[str, int]:
    """Find the targets and their pass ids; render every request (config problems stop here)."""
    return run.plan()


@task(name="send-updates", cache_policy=NO_CACHE, persist_result=False)
def send_updates(run: UpdateRun, index: int) -> dict[str, int]:
    """Send one chunk of updates and record every attempt in the update history."""
    return run.send_chunk(index)
