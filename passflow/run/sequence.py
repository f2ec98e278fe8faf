"""The order of an issuance run, written once: stage → reject-rate gate → deliver → commit, or abort.

The CLI / library (:func:`run_issue`), the ``issue-passes`` flow and the ``issue-passes-shard`` flow
all run a campaign through :func:`run_sequence`; a flow passes its Prefect tasks as the steps. Under
SIGTERM the calls in flight finish and are recorded before the run stops (``graceful_stop``), and any
error aborts the run: partial exports removed, the ledger kept so the rerun resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from passflow.config import Campaign
from passflow.run.issue import IssueRun, RunResult
from passflow.shutdown import graceful_stop

Step = Callable[[IssueRun], Any]


def stage_all(run: IssueRun) -> None:
    for chunk in run.source_chunks():
        run.stage_chunk(chunk)


def end_staging(run: IssueRun) -> None:
    run.end_staging()


def deliver_all(run: IssueRun) -> None:
    for i in range(run.batch_count):
        run.deliver_batch(i)


def run_sequence(
    run: IssueRun,
    *,
    stage: Step = stage_all,
    check: Step = end_staging,
    deliver: Step = deliver_all,
    logger: Any = None,
) -> RunResult:
    """Run ``run`` to its end; ``stage``/``check``/``deliver`` default to doing it in this process."""
    try:
        with graceful_stop(logger or run.log):
            stage(run)
            check(run)
            deliver(run)
            return run.commit()
    except BaseException as exc:
        run.abort(exc)
        raise


def run_issue(campaign: Campaign, *, dry_run: bool = False, logger: Any = None, **kw: Any) -> RunResult:
    """Run a whole issuance without Prefect (tests, benchmarks, library use)."""
    return run_sequence(IssueRun(campaign, dry_run=dry_run, logger=logger, **kw))
