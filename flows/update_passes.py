"""The ``update-passes`` flow: for a campaign, update issued passes — a customer list with an action,
an events file/table mapped by rules, or the segment's changed customers (``--diff``) — and report.

Parameters are flat and typed (the flow builds a :class:`passflow.updates.UpdateRequest` from them), so
the Prefect UI renders a plain form and ``-p dry_run=true`` works; deployment triggers
(``deployments/update_triggers.py``) fill them from Prefect events.
Secrets are never parameters: the campaign file references them.
"""

# No `from __future__ import annotations`: a runner that loads this flow from its entrypoint builds
# the parameter model from the annotations, and string annotations may be unresolvable there.
from typing import Any, Literal

from passflow.flows.issue_passes import artifact_key, user_errors_as_failed
from passflow.flows.runinfo import headline, prefect_run_id, tag_dry_run, update_run_name
from passflow.tasks.update_tasks import plan_updates, send_updates
from passflow.tasks.vendor_limit import vendor_lease
from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from passflow.config import load_campaign
from passflow.errors import ConfigError, VendorError
from passflow.report import failure_markdown
from passflow.updates import UpdateRequest, UpdateRun
from passflow.updates.run import request_overrides

_SKIP = {"preview", "error_codes"}


@flow(name="update-passes", persist_result=False, flow_run_name=update_run_name)
def update_passes(
    campaign: str = "",
    mode: Literal["customers", "events", "diff"] = "customers",
    customer_ids: tuple[str, ...] = (),  # a tuple: an immutable default, still a plain list in the form
    action: str = "",
    events_file: str = "",
    event_key: str = "",
    segment: str = "",
    origin: str = "customers",
    dry_run: bool = False,
) -> dict[str, Any] | State:
    """Update issued passes of a campaign and record every attempt in the update history.

    Ends Failed (with a failure artifact) when rows failed at the vendor, so a failure automation
    fires for updates too. Parameters are flat: ``-p dry_run=true`` works on a deployment.

    Args:
        campaign: Path of the campaign TOML file (fixed by a campaign's deployment).
        mode: customers: the ids below get one action; events: the events source mapped by
            [updates.rules]; diff: rerun the segment and update the customers whose values changed.
        customer_ids: For mode=customers: the customer ids to update.
        action: For mode=customers: void, expire or an [updates.actions] name.
        events_file: For mode=events: a CSV instead of [updates.events].
        event_key: For mode=customers from an event (e.g. a Prefect event id): handled once per customer.
        segment: For mode=diff: a segment CSV instead of the campaign's [source].
        origin: Recorded in the update history (e.g. prefect-event).
        dry_run: Show what would be sent; send and write nothing.
    """
    request = UpdateRequest(
        campaign=campaign or None, mode=mode, customer_ids=list(customer_ids or []), action=action or None,
        events_file=events_file or None, event_key=event_key or None, segment=segment or None,
        origin=origin, dry_run=dry_run,
    )  # fmt: skip
    return user_errors_as_failed(_update, request)


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
        # One run per vendor account sends at a time (tasks/vendor_limit.py): an issue run of the
        # same account waits, and this one waits for it.
        with vendor_lease(campaign, active=bool(total) and not request.dry_run):
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
