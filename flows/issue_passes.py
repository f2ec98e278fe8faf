"""The ``issue-passes`` flow: a campaign's segment in, passes (links or API passes) out, attribute
exports and a report back.

Parameters are one pydantic model, so the Prefect UI renders a form with titles and descriptions.
Secrets are never parameters: the campaign file references them (env vars / Secret blocks).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, ConfigDict, Field

from passflow.config import load_campaign
from passflow.engine import IssueRun, RunResult
from passflow.report import summary_markdown, summary_rows
from tasks.issue_tasks import deliver_batch, end_staging, finish_deliveries, stage_chunk


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


def _artifact_key(name: str, suffix: str) -> str:
    # Artifact keys: lowercase letters, digits and dashes only.
    slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    return f"{slug}-{suffix}"[:100]


@flow(name="issue-passes", persist_result=False)
def issue_passes(request: IssueRequest) -> dict[str, Any]:
    """Issue passes for a campaign's segment and write the attribute exports."""
    logger = get_run_logger()
    campaign = load_campaign(request.campaign, overrides=request.overrides())
    run = IssueRun(campaign, dry_run=request.dry_run, logger=logger, preview_rows=request.preview_rows)
    logger.info(
        "run %s: campaign %s (%s), segment %s%s",
        run.run_id,
        campaign.name,
        campaign.provider,
        run.source_label,
        " — dry run" if request.dry_run else "",
    )
    progress = create_progress_artifact(0.0, description=f"{campaign.name}: batches delivered")
    try:
        for chunk in run.source_chunks():
            first, last = int(chunk["__row__"].iloc[0]), int(chunk["__row__"].iloc[-1])
            stage_chunk.with_options(task_run_name=f"stage-rows-{first}-{last}")(run, chunk)
        end_staging(run)
        logger.info(
            "staged %d rows: %d ready, %d rejected", run.counts.read, run.counts.prepared, run.counts.rejected
        )
        total = run.batch_count
        for i in range(total):
            deliver_batch.with_options(task_run_name=f"deliver-batch-{i + 1}-of-{total}")(run, i)
            update_progress_artifact(progress, 100.0 * (i + 1) / total)
        finish_deliveries(run)
        result = run.commit()
    except BaseException as exc:
        run.abort(exc)
        raise
    update_progress_artifact(progress, 100.0)
    publish_report(result)
    logger.info("done: %s", ", ".join(f"{r['metric']} {r['value']}" for r in summary_rows(result)[:9]))
    return result.summary()


def publish_report(result: RunResult) -> None:
    create_table_artifact(
        key=_artifact_key(result.campaign, "summary"),
        table=summary_rows(result),
        description=f"Run {result.run_id} of {result.campaign}",
    )
    create_markdown_artifact(
        key=_artifact_key(result.campaign, "report"),
        markdown=summary_markdown(result),
        description=f"Outputs of run {result.run_id}",
    )
