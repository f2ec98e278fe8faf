"""The ``issue-passes`` flow: a campaign's segment in, passes (links or API passes) out, attribute
exports and a report back.

Parameters are flat and typed (titles and descriptions for the Prefect UI form; a campaign's
deployment fixes the campaign). :class:`IssueRequest` is the same request as one object (CLI, inbox).
Secrets are never parameters: the campaign file references them (env vars / Secret blocks).
"""

# No `from __future__ import annotations`: the runner builds the parameter schema from the annotations.
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from passflow.flows.runinfo import campaign_label, headline, issue_run_name, prefect_run_id, tag_dry_run
from passflow.tasks.issue_tasks import deliver_segment, end_staging, stage_segment
from passflow.tasks.vendor_limit import needs_lease, vendor_lease
from prefect import State, flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field

from passflow.config import Campaign, load_campaign
from passflow.errors import ConfigError, PassflowError, RejectRateExceeded, SourceError, TemplateError
from passflow.paths import project_root, resolve_user_path
from passflow.report import failure_markdown, funnel_markdown, report_progress, summary_markdown, summary_rows
from passflow.run import IssueRun, RunResult, run_sequence
from passflow.secrets import redact


class IssueRequest(BaseModel):
    """What to issue. Everything else comes from the campaign file."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(
        title="Campaign file",
        description="Path of the campaign TOML file, e.g. data/campaigns/skycore-coupon.toml",
        examples=["data/campaigns/skycore-coupon.toml"],
    )
    segment: str | None = Field(
        default=None,
        title="Segment override",
        description="A CSV file path or a database URL to read instead of the campaign's [source]. "
        "Leave empty to use the campaign's segment.",
    )
    table: str | None = Field(
        default=None,
        title="Table (with a database URL)",
        description="Table to read when Segment is a database URL",
    )
    dry_run: bool = Field(
        default=False,
        title="Dry run",
        description="Validate and show what would be issued (first rows rendered); write no ledger rows or exports",
    )
    max_per_second: float | None = Field(
        default=None,
        gt=0,
        title="Max requests per second (override)",
        description="Overrides [limits] max_per_second",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        title="Max requests in flight (override)",
        description="Overrides [limits] max_in_flight",
    )
    preview_rows: int = Field(
        default=5, ge=0, le=100, title="Preview rows", description="Rows shown in a dry run"
    )

    def flow_parameters(self) -> dict[str, Any]:
        """The flat parameters of the ``issue-passes`` flow (empty / 0: the campaign's value)."""
        return {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "segment": self.segment or "",
            "table": self.table or "",
            "max_per_second": self.max_per_second or 0,
            "max_in_flight": self.max_in_flight or 0,
            "preview_rows": self.preview_rows,
        }

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.segment:
            if "://" in self.segment:
                out.update({"source.sql_url": self.segment, "source.csv": None})
                if self.table:
                    out.update({"source.table": self.table, "source.query": None})
            else:
                # Like the campaign path (working directory, then the project) — not against the
                # campaign's folder; absolute, so an error names the file that was looked for.
                out.update({"source.csv": str(resolve_user_path(self.segment).absolute())})
                out.update({"source.sql_url": None, "source.table": None, "source.query": None})
        if self.max_per_second:
            out["limits.max_per_second"] = self.max_per_second
        if self.max_in_flight:
            out["limits.max_in_flight"] = self.max_in_flight
        return out


PROJECT_ROOT = project_root()
PROGRESS_EVERY_S = 2.0  # minimum time between two progress-artifact updates of a run


def campaign_path(value: str) -> Path:
    """A relative campaign path is tried against the working directory, then the project directory —
    so a deployment's default ``data/campaigns/x.toml`` works from a worker started anywhere
    (:mod:`passflow.paths`)."""
    return resolve_user_path(value)


def artifact_key(name: str, suffix: str) -> str:
    # Artifact keys: lowercase letters, digits and dashes only.
    slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    return f"{slug}-{suffix}"[:100]


def failure_label(path: Path) -> str:
    """The name a failed run's artifact key is made from: the deployment's (a campaign's deployment is
    named after it), else the campaign file's ``[campaign] name`` — a typo in a file name must not
    start a new artifact key."""
    from prefect.runtime import deployment

    return (deployment.name if deployment.id else None) or campaign_label(str(path))


def publish_failure(campaign: str, exc: BaseException, run: IssueRun | None = None) -> None:
    """The loud part of a failure: a markdown artifact with the next step for this kind of error (the
    flow run itself ends Failed)."""
    issued = run.counts.issued if run is not None else 0
    reasons = dict(run.reasons) if run is not None else None
    rejects = run.rejects_file if run is not None else None
    create_markdown_artifact(
        key=artifact_key(campaign, "failure"),
        markdown=failure_markdown(
            campaign,
            exc,
            run=run.run_id if run is not None else prefect_run_id(),
            text=redact(f"{type(exc).__name__}: {exc}"),
            issued=issued,
            reasons=reasons,
            rejects_file=str(rejects) if rejects else None,
        ),
        description=f"FAILED: {campaign} · {issued} issued · {run.counts.rejected if run else 0} rejected",
    )


@flow(name="issue-passes", persist_result=False, flow_run_name=issue_run_name)
def issue_passes(
    campaign: str,
    dry_run: bool = False,
    segment: str = "",
    table: str = "",
    max_per_second: Annotated[float, Field(ge=0)] = 0,
    max_in_flight: Annotated[int, Field(ge=0)] = 0,
    preview_rows: Annotated[int, Field(ge=0, le=100)] = 5,
) -> dict[str, Any] | State:
    """Issue passes for a campaign's segment and write the attribute exports.

    Ends Failed (with a failure artifact) when the run fails or too many rows are rejected, and
    Failed with the summary as its result when some rows failed at the vendor. Parameters are flat
    (Prefect merges a run's parameters with the deployment's at the top level only, so
    ``prefect deployment run issue-passes/NAME -p dry_run=true`` works).

    Args:
        campaign: Path of the campaign TOML file, e.g. data/campaigns/skycore-coupon.toml (fixed by a
            campaign's deployment).
        dry_run: Validate and show what would be issued (a preview table); write no ledger rows or
            exports. Runs started by hand default to a dry run unless the campaign's [schedule] says
            manual_dry_run = false.
        segment: A CSV file path or a database URL to read instead of the campaign's [source]; empty:
            the campaign's segment. Relative paths: the working directory, then the project.
        table: Table to read when the segment is a database URL.
        max_per_second: Overrides [limits] max_per_second; 0: the campaign's value.
        max_in_flight: Overrides [limits] max_in_flight; 0: the campaign's value.
        preview_rows: Rows shown in a dry run's preview table.
    """
    request = IssueRequest(
        campaign=campaign,
        segment=segment or None,
        table=table or None,
        dry_run=dry_run,
        max_per_second=max_per_second or None,
        max_in_flight=max_in_flight or None,
        preview_rows=preview_rows,
    )
    return user_errors_as_failed(_issue, request)


USER_ERRORS = (ConfigError, SourceError, TemplateError, RejectRateExceeded)


class _NoUserErrorTracebacks(logging.Filter):
    """A runner (``passflow serve``, a worker) re-raises a Failed run's exception at the end and logs
    it with its traceback to the run's log ("Engine execution exited with unexpected exception"). For a
    user error that is noise under the one line the flow logged: drop it (other errors keep theirs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, USER_ERRORS) and "exited with unexpected exception" in str(record.msg))


# Installed when the flow module is imported — in the runner's subprocess too, before the run starts.
if not any(isinstance(f, _NoUserErrorTracebacks) for f in logging.getLogger("prefect.flow_runs").filters):
    logging.getLogger("prefect.flow_runs").addFilter(_NoUserErrorTracebacks())


def user_errors_as_failed(fn: Callable[[Any], Any], request: Any) -> Any:
    """A bad campaign file or input ends the run Failed with one log line: the failure artifact has
    the details and the next step, and two tracebacks in the UI log would only hide them. The
    exception stays the state's result (the CLI and the inbox read it)."""
    try:
        return fn(request)
    except USER_ERRORS as exc:
        text = redact(f"{type(exc).__name__}: {exc}")
        get_run_logger().error("%s", text)
        return Failed(message=text, data=exc)


def _issue(request: IssueRequest) -> dict[str, Any] | State:
    logger = get_run_logger()
    path = campaign_path(request.campaign)
    try:
        campaign = load_campaign(path, overrides=request.overrides())
    except PassflowError as exc:
        publish_failure(failure_label(path), exc)
        raise
    tag_dry_run(request.dry_run)
    run = IssueRun(
        campaign,
        run_id=prefect_run_id(),
        dry_run=request.dry_run,
        logger=logger,
        preview_rows=request.preview_rows,
    )
    logger.info(
        "run %s: campaign %s (%s), segment %s%s",
        run.run_id,
        campaign.name,
        campaign.provider,
        run.source_label,
        " — dry run" if request.dry_run else "",
    )
    progress = create_progress_artifact(
        0.0, key=artifact_key(campaign.name, "progress"), description=f"{campaign.name}: reading the segment"
    )
    last_update = time.monotonic()

    def delivered(done: int, total: int) -> None:
        nonlocal last_update
        report_progress("deliver", done, total)
        # Each update is an API call (server CPU a big link run competes with): at most one
        # every PROGRESS_EVERY_S; the last batch always reports.
        if done == total or time.monotonic() - last_update >= PROGRESS_EVERY_S:
            last_update = time.monotonic()
            update_progress_artifact(
                progress,
                100.0 * done / total,
                description=f"{campaign.name}: {done} of {total} batches delivered "
                f"({run.counts.read} rows read, {run.counts.rejected} rejected)",
            )

    def deliver(run: IssueRun) -> None:
        logger.info(
            "staged %d rows: %d ready, %d rejected", run.counts.read, run.counts.prepared, run.counts.rejected
        )
        report_progress("deliver", 0, run.batch_count)
        # One run per vendor account sends at a time (tasks/vendor_limit.py); the others wait here.
        with vendor_lease(run.campaign, active=needs_lease(run.campaign, dry_run=run.dry_run)) as lease:
            if lease:
                logger.info("holding the vendor account's slot %s", lease)
            deliver_segment(run, delivered)

    try:
        # Prefect's own SIGTERM handler would abort mid-call; the sequence's lets the calls in flight land first.
        result = run_sequence(run, stage=stage_segment, check=end_staging, deliver=deliver, logger=logger)
    except BaseException as exc:
        publish_failure(campaign.name, exc, run)
        # The progress card must not sit at 0 % looking busy: it says the run failed.
        update_progress_artifact(
            progress, 100.0, description=f"{campaign.name}: FAILED ({type(exc).__name__})"
        )
        raise
    update_progress_artifact(progress, 100.0, description=f"{campaign.name}: done")
    publish_report(result)
    if campaign.callbacks is not None and not request.dry_run:
        publish_funnel(campaign)
    summary = result.summary()
    logger.info("done: %s", ", ".join(f"{r['metric']} {r['value']}" for r in summary_rows(summary)[:9]))
    if result.counts.failed:
        message = f"{result.counts.failed} rows failed at the vendor (see {result.failures_file})"
        logger.error(message)
        return Failed(message=message, data=summary)
    return summary


def publish_funnel(campaign: Campaign) -> None:
    """issued → installed → uninstalled, from the ledger and the recorded vendor callbacks."""
    from passflow.callbacks.funnel import funnel_counts

    counts = funnel_counts(campaign.ledger.url, campaign.name)
    create_markdown_artifact(
        key=artifact_key(campaign.name, "funnel"),
        markdown=funnel_markdown(counts, campaign=campaign.name),
        description=f"Install funnel of {campaign.name}",
    )


def publish_report(result: RunResult) -> None:
    """Summary table, outputs, and in a dry run the preview table; descriptions start with the
    headline ("293 issued · 7 rejected · 0 failed") — the run id is on the run's page already."""
    summary = result.summary()
    head = headline(summary)
    create_table_artifact(
        key=artifact_key(result.campaign, "summary"),
        table=summary_rows(result),
        description=f"{head} — {result.campaign}" + (" (dry run)" if result.dry_run else ""),
    )
    create_markdown_artifact(
        key=artifact_key(result.campaign, "report"),
        markdown=summary_markdown(result),
        description=f"Outputs: {head}",
    )
    if result.dry_run and summary["preview"]:
        create_table_artifact(
            key=artifact_key(result.campaign, "preview"),
            table=summary["preview"],
            description=f"Would issue (first {len(summary['preview'])} rows) — {result.campaign}",
        )
