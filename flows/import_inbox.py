"""The ``import-inbox`` flow: analysts drop CSV files into ``data/inbox/``; each complete one is issued
(an ``issue-passes`` subflow run, with its own artifacts) and filed under ``processed/`` or
``rejected/`` with a report. The conventions are in :mod:`passflow.inbox`.

Scheduled every minute by the deployments (``passflow serve``). Ends Failed (loudly) when a file was
rejected or a run had failed rows, so a Prefect automation on "flow run failed" catches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passflow.flows.issue_passes import PROJECT_ROOT, issue_passes
from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field

from passflow.errors import PassflowError
from passflow.inbox import FileOutcome, Inbox
from passflow.sandbox.autostart import sandbox_for
from passflow.secrets import redact


class InboxRequest(BaseModel):
    """Where the inbox is. Campaign settings come from the campaign files."""

    model_config = ConfigDict(extra="forbid")

    inbox: str = Field(
        default="data/inbox",
        title="Inbox folder",
        description="Folder analysts drop CSV files into (relative paths: to the project). "
        "Files are named <campaign>--<anything>.csv; processed/ and rejected/ are created inside it.",
    )
    campaigns: str = Field(
        default="data/campaigns",
        title="Campaigns folder",
        description="Folder of campaign TOML files; a dropped file names its campaign by [campaign] name "
        "or by campaign file name",
    )
    settle_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        title="Settle time (s)",
        description="A file is taken only when unchanged since the previous poll and untouched this long "
        "(a NAME.csv.ready marker skips the wait)",
    )


DEFAULT_REQUEST = InboxRequest()


def _resolve(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _issue_subflow(campaign_path: Path, csv_path: Path) -> dict[str, Any]:
    from passflow.config import load_campaign

    loaded = load_campaign(campaign_path, overrides={"source.csv": str(csv_path)})
    with sandbox_for(loaded):
        state = issue_passes(campaign=str(campaign_path), segment=str(csv_path), return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        if isinstance(result, PassflowError):
            raise result
        raise PassflowError(redact(f"the run failed: {type(result).__name__}: {result}"))
    return result


def outcome_rows(outcomes: list[FileOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "file": o.file,
            "status": o.status,
            "campaign": o.campaign or "",
            "issued": (o.summary or {}).get("issued_new", 0),
            "rejected rows": (o.summary or {}).get("rejected", 0),
            "failed rows": (o.summary or {}).get("failed", 0),
            "reasons": "; ".join(o.reasons)[:500],
            "report": o.report or "",
        }
        for o in outcomes
    ]


@flow(name="import-inbox", persist_result=False)
def import_inbox(request: InboxRequest = DEFAULT_REQUEST) -> list[dict[str, Any]] | State:
    """Issue every complete CSV file in the inbox and file it away with a report.

    Args:
        request: Where the inbox and the campaign files are, and how long a file must be unchanged.
    """
    logger = get_run_logger()
    inbox = Inbox(_resolve(request.inbox), _resolve(request.campaigns), settle_seconds=request.settle_seconds)
    outcomes = inbox.poll(_issue_subflow)
    rows = outcome_rows(outcomes)
    for o in outcomes:
        logger.log(20 if o.ok else 40, "%s: %s%s", o.file, o.status, f" ({'; '.join(o.reasons)})" if o.reasons else "")
    if not outcomes:
        logger.info("inbox %s: nothing complete to take", inbox.dir)
        return rows
    create_table_artifact(key="inbox-files", table=rows, description=f"Files taken from {inbox.dir}")
    bad = [o for o in outcomes if not o.ok and o.status != "duplicate"]
    if bad:
        text = "\n".join(f"- **{o.file}**: {o.status} — {'; '.join(o.reasons)} (report: `{o.report}`)" for o in bad)
        create_markdown_artifact(key="inbox-failure", markdown=f"# Inbox: {len(bad)} file(s) need attention\n\n{text}\n")
        return Failed(message=f"{len(bad)} of {len(outcomes)} inbox files rejected or with failed rows", data=rows)
    return rows
