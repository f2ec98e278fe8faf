"""The ``update-passes`` flow: for a campaign, update issued passes — a customer list with an action,
an events file/table mapped by rules, or the segment's changed customers (``--diff``) — and report.

Parameters are one pydantic model (:class:`passflow.updates.UpdateRequest`), so the Prefect UI renders
a form; deployment triggers (``deployments/update_triggers.py``) fill it from Prefect events.
Secrets are never parameters: the campaign file references them.
"""

# No `from __future__ import annotations`: a runner that loads this flow from its entrypoint builds
# the parameter model from the annotations, and a string "UpdateRequest" is unresolvable there.
from typing import Any

from passflow.flows.issue_passes import artifact_key
from passflow.tasks.update_tasks import plan_updates, send_updates
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.updates import UpdateRequest, UpdateRun
from passflow.updates.run import request_overrides

_SKIP = {"preview", "error_codes"}


@flow(name="update-passes", persist_result=False)
def update_passes(request: UpdateRequest) -> dict[str, Any]:
    """Update issued passes of a campaign and record every attempt in the update history."""
    logger = get_run_logger()
    if not request.campaign:
        raise ConfigError("the request names no campaign file", key="campaign")
    campaign = load_campaign(request.campaign, overrides=request_overrides(request))
    run = UpdateRun(campaign, request, logger=logger)
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
        description=f"Update run {run.run_id} of {campaign.name} ({request.mode})",
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
    return summary
