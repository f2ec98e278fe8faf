"""The ``update-passes`` flow: for a campaign, update issued passes — a customer list with an action,
an events file/table mapped by rules, or the segment's changed customers (``--diff``) — and report.

Parameters are flat and typed (the flow builds a :class:`passflow.updates.UpdateRequest` from them), so
the Prefect UI renders a plain form and ``-p dry_run=true`` works; deployment triggers
(``deployments/update_triggers.py``) fill them from Prefect events.
Secrets are never parameters: the campaign file references them.
"""

# No `from __future__ import annotations`: a runner that loads this flow from its entrypoint builds
# the parameter model from the annotations, and string annotations may be unresolvable there.
from typing import Annotated, Any, Literal

from passflow.flows.issue_passes import artifact_key
from passflow.flows.runinfo import headline, prefect_run_id, tag_dry_run, update_run_name
from passflow.tasks.update_tasks import plan_updates, send_updates
from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from pydantic import Field

from passflow.config import load_campaign
from passflow.errors import ConfigError, VendorError
from passflow.report import failure_markdown
from passflow.updates import UpdateRequest, UpdateRun
from passflow.updates.run import request_overrides

_SKIP = {"preview", "error_codes"}


@flow(name="update-passes", persist_result=False, flow_run_name=update_run_name)
def update_passes(
    campaign: Annotated[
        str,
        Field(
            title="Campaign file",
            description="Path of the campaign TOML file (fixed by a campaign's deployment)",
        ),
    ] = "",
    mode: Annotated[
        Literal["customers", "events", "diff"],
        Field(
            title="Source of updates",
            description="customers: the ids below get one action; events: the events source mapped by "
            "[updates.rules]; diff: rerun the segment and update the customers whose values changed",
        ),
    ] = "customers",
    customer_ids: Annotated[list[str], Field(title="Customer ids", description="For mode=customers")] = [],  # noqa: B006 - Prefect copies defaults
    action: Annotated[
        str,
        Field(title="Action", description="For mode=customers: void, expire or an [updates.actions] name"),
    ] = "",
    events_file: Annotated[
        str, Field(title="Events CSV", description="For mode=events: a CSV instead of [updates.events]")
    ] = "",
    event_key: Annotated[
        str,
        Field(
            title="Event key",
            description="For mode=customers from an event (e.g. a Prefect event id): once per customer",
        ),
    ] = "",
    segment: Annotated[
        str,
        Field(
            title="Segment CSV (diff)", description="For mode=diff: a CSV instead of the campaign's [source]"
        ),
    ] = "",
    origin: Annotated[
        str, Field(title="Origin", description="Recorded in the history (e.g. prefect-event)")
    ] = "customers",
    dry_run: Annotated[
        bool, Field(title="Dry run", description="Show what would be sent; send and write nothing")
    ] = False,
) -> dict[str, Any] | State:
    """Update issued passes of a campaign and record every attempt in the update history.

    Ends Failed (with a failure artifact) when rows failed at the vendor, so a failure automation
    fires for updates too. Parameters are flat: ``-p dry_run=true`` works on a deployment.
    """
    request = UpdateRequest(
        campaign=campaign or None, mode=mode, customer_ids=list(customer_ids), action=action or None,
        events_file=events_file or None, event_key=event_key or None, segment=segment or None,
        origin=origin, dry_run=dry_run,
    )  # fmt: skip
    return _update(request)


def _update(request: UpdateRequest) -> dict[str, Any] | State:
    logger = get_run_logger()
    if not request.campaign:
        raise ConfigError("the request names no campaign file", key="campaign")
    tag_dry_run(request.dry_run)
    campaign = load_campaign(request.campaign, overrides=request_overrides(request))
    run = UpdateRun(campaign, request, logger=logger, run_id=prefect_run_id())
    try:
        plan_updates(run)
        total = run.chunk_count
        for i in range(total):
            send_updates.with_options(task_run_name=f"send-updates-{i + 1}-of-{total}")(run, i)
    except BaseException as exc:
        run.abort(exc)
        raise
    summary = run.finish()
    create_table_artifact(
        key=artifact_key(campaign.name, "updates"),
        table=[{"metric": k, "value": str(v)} for k, v in summary.items() if k not in _SKIP]
        + [{"metric": f"error {code}", "value": str(n)} for code, n in summary["error_codes"].items()],
        description=f"{headline(summary)} — {campaign.name} ({request.mode}"
        + (", dry run)" if request.dry_run else ")"),
    )
    if summary["preview"]:
        lines = [f"- `{p['customer_id']}` → {p['action']}: `{p['request']}`" for p in summary["preview"]]
        create_markdown_artifact(
            key=artifact_key(campaign.name, "update-preview"),
            markdown="### Would send (first rows)\n" + "\n".join(lines),
        )
    logger.info(
        "update run %s done: %s", run.run_id,
        ", ".join(f"{k} {v}" for k, v in summary.items() if k not in _SKIP and isinstance(v, int) and v),
    )  # fmt: skip
    if summary.get("failed"):
        message = f"{summary['failed']} updates failed at the vendor (codes: {summary['error_codes']})"
        create_markdown_artifact(
            key=artifact_key(campaign.name, "update-failure"),
            markdown=failure_markdown(campaign.name, VendorError(message), run=run.run_id, text=message),
            description=f"FAILED: {headline(summary)} — {campaign.name} ({request.mode})",
        )
        logger.error(message)
        return Failed(message=message, data=summary)
    return summary
