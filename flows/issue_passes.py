"""The ``issue-passes`` flow: a campaign's segment in, passes (links or API passes) out, attribute
exports and a report back.

Parameters are one pydantic model, so the Prefect UI renders a form with titles and descriptions.
Secrets are never parameters: the campaign file references them (env vars / Secret blocks).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from passflow.tasks.issue_tasks import deliver_segment, end_staging, stage_segment
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
from passflow.errors import PassflowError
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
        default=None, title="Table (with a database URL)", description="Table to read when Segment is a database URL"
    )
    dry_run: bool = Field(
        default=False,
        title="Dry run",
        description="Validate and show what would be issued (first rows rendered); write no ledger rows or exports",
    )
    max_per_second: float | None = Field(
        default=None, gt=0, title="Max requests per second (override)", description="Overrides [limits] max_per_second"
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, title="Max requests in flight (override)", description="Overrides [limits] max_in_flight"
    )
    preview_rows: int = Field(default=5, ge=0, le=100, title="Preview rows", description="Rows shown in a dry run")

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.segment:
            if "://" in self.segment:
                out.update({"source.sql_url": self.segment, "source.csv": None})
                if self.table:
                    out.update({"source.table": self.table, "source.query": None})
            else:
                out.update({"source.csv": self.segment, "source.sql_url": None, "source.table": None, "source.query": None})
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


def publish_failure(campaign: str, exc: BaseException, run_id: str | None = None) -> None:
    """The loud part of a failure: a markdown artifact (the flow run itself ends Failed)."""
    create_markdown_artifact(
        key=artifact_key(campaign, "failure"),
        markdown=failure_markdown(campaign, redact(f"{type(exc).__name__}: {exc}"), run=run_id),
        description=f"FAILED run of {campaign}",
    )


@flow(name="issue-passes", persist_result=False)
def issue_passes(request: IssueRequest) -> dict[str, Any] | State:
    """Issue passes for a campaign's segment and write the attribute exports.

    Ends Failed (with a failure artifact) when the run fails or too many rows are rejected, and
    Failed with the summary as its result when some rows failed at the vendor.

    Args:
        request: The campaign to run and optional overrides (segment, dry run, limits).
    """
    logger = get_run_logger()
    path = campaign_path(request.campaign)
    try:
        campaign = load_campaign(path, overrides=request.overrides())
    except PassflowError as exc:
        publish_failure(path.stem, exc)
        raise
    run = IssueRun(campaign, dry_run=request.dry_run, logger=logger, preview_rows=request.preview_rows)
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
        logger.info("staged %d rows: %d ready, %d rejected", run.counts.read, run.counts.prepared, run.counts.rejected)
        report_progress("deliver", 0, run.batch_count)
        deliver_segment(run, delivered)

    try:
        # Prefect's own SIGTERM handler would abort mid-call; the sequence's lets the calls in flight land first.
        result = run_sequence(run, stage=stage_segment, check=end_staging, deliver=deliver, logger=logger)
    except BaseException as exc:
        publish_failure(campaign.name, exc, run.run_id)
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
    create_table_artifact(
        key=artifact_key(result.campaign, "summary"),
        table=summary_rows(result),
        description=f"Run {result.run_id} of {result.campaign}",
    )
    create_markdown_artifact(
        key=artifact_key(result.campaign, "report"),
        markdown=summary_markdown(result),
        description=f"Outputs of run {result.run_id}",
    )
