"""How a flow run is found again: its id (Prefect's flow-run id is passflow's run id, so ledger rows
and export names link to the Prefect run), its name (campaign + mode + date instead of a random
name), a ``dry-run`` tag, and artifact descriptions that start with a headline of counts.

Every helper works outside a flow run too (plain calls in tests): it then falls back quietly.
"""

from __future__ import annotations

import logging
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passflow.paths import resolve_user_path

log = logging.getLogger("passflow.flows")
DRY_RUN_TAG = "dry-run"


def prefect_run_id() -> str | None:
    """The current flow run's id (a UUID string), or None outside a flow run."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def campaign_label(path: str | None) -> str:
    """The campaign's ``[campaign] name`` read cheaply from its file, else the file's stem: a run name
    must never fail the run (the flow reports a bad file properly)."""
    if not path:
        return "campaign"
    try:
        with resolve_user_path(path).open("rb") as f:
            name = tomllib.load(f).get("campaign", {}).get("name")
        if isinstance(name, str) and name:
            return name
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    return Path(path).stem or "campaign"


def run_name(campaign: str | None, mode: str, dry_run: bool, when: datetime | None = None) -> str:
    """``spring-coupon-2026-issue-dry-run-2026-12-07-0642``: what a list of runs should show."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%d-%H%M")
    return f"{campaign_label(campaign)}-{mode}{'-dry-run' if dry_run else ''}-{stamp}"


def issue_run_name() -> str:
    """``flow_run_name`` of ``issue-passes`` (reads the run's parameters)."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return run_name(p.get("campaign"), "issue", bool(p.get("dry_run")))


def update_run_name() -> str:
    """``flow_run_name`` of ``update-passes``."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return run_name(p.get("campaign"), f"update-{p.get('mode') or 'customers'}", bool(p.get("dry_run")))


def tag_dry_run(dry_run: bool) -> None:
    """Add the ``dry-run`` tag to the current flow run (tags are set when a run is created; a dry run
    chosen in the form is only known here). Best effort: a failed tag never fails the run."""
    if not dry_run:
        return
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if not ctx or not ctx.flow_run or DRY_RUN_TAG in (ctx.flow_run.tags or []):
        return
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, tags=[*(ctx.flow_run.tags or []), DRY_RUN_TAG])
    except Exception as exc:  # noqa: BLE001 - the tag is a convenience
        log.warning("could not tag the run %s: %s", ctx.flow_run.id, type(exc).__name__)


def headline(summary: dict[str, Any]) -> str:
    """``293 issued · 7 rejected · 0 failed`` (issue runs) or ``12 sent · 0 failed`` (update runs)."""
    if "issued_new" in summary:
        issued = sum(
            int(summary.get(k) or 0) for k in ("issued_new", "reissued_changed", "retried", "reconciled")
        )
        if summary.get("dry_run"):
            text = f"dry run: {int(summary.get('read') or 0) - int(summary.get('rejected') or 0)} would be issued"
        else:
            text = f"{issued} issued"
        return f"{text} · {summary.get('rejected', 0)} rejected · {summary.get('failed', 0)} failed"
    sent = int(summary.get("sent") or 0)
    text = (
        f"dry run: {summary.get('would_send', 0)} would be sent" if summary.get("dry_run") else f"{sent} sent"
    )
    return f"{text} · {summary.get('failed', 0)} failed"
