"""Which flows are deployed, how: one :class:`FlowEntry` per flow. Adding a flow is one entry in
:data:`FLOWS`.

A *per-campaign* entry gets one deployment per campaign file (named after the campaign), scheduled
by the campaign's ``[schedule]`` (cron + IANA time zone; none → run by hand only) and with default
parameters that point at the campaign file. A *global* entry (the inbox) gets one deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Schedule

from flows.import_inbox import InboxRequest, import_inbox
from flows.issue_passes import PROJECT_ROOT, IssueRequest, issue_passes
from passflow.config import Campaign, load_campaign

CAMPAIGNS = PROJECT_ROOT / "data" / "campaigns"
INBOX_CRON = "* * * * *"  # the inbox is polled every minute; a file is taken at the second poll


@dataclass(frozen=True)
class FlowEntry:
    flow: Flow
    # (campaign file, campaign) -> default parameters; None: one deployment for all campaigns.
    campaign_parameters: Callable[[str, Campaign], dict[str, Any]] | None = None
    # Parameters and schedule of a global entry.
    parameters: Callable[[], dict[str, Any]] | None = None
    schedule: Callable[[], Schedule] | None = None
    name: str = ""
    tags: tuple[str, ...] = ("passflow",)


def campaign_schedule(campaign: Campaign) -> list[Schedule]:
    s = campaign.schedule
    return [Cron(s.cron, timezone=s.timezone, active=s.active)] if s else []


def _issue_parameters(path: str, campaign: Campaign) -> dict[str, Any]:
    dry_run = campaign.schedule.dry_run if campaign.schedule else False
    return {"request": IssueRequest(campaign=path, dry_run=dry_run).model_dump()}


FLOWS: list[FlowEntry] = [
    FlowEntry(flow=issue_passes, campaign_parameters=_issue_parameters),
    FlowEntry(
        flow=import_inbox,
        name="inbox",
        parameters=lambda: {"request": InboxRequest().model_dump()},
        schedule=lambda: Cron(INBOX_CRON, timezone="UTC"),
        tags=("passflow", "inbox"),
    ),
]


def _param_path(path: Path) -> str:
    # Relative to the project when inside it: the same default works on a worker's own checkout.
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path.resolve())


def build_deployments(
    campaigns: Path = CAMPAIGNS, *, inbox: dict[str, Any] | None = None, module_entrypoints: bool = False
) -> list[RunnerDeployment]:
    """Every deployment of :data:`FLOWS`. ``inbox`` overrides the inbox request's defaults;
    ``module_entrypoints`` makes workers import the flows from the installed package (``passflow
    deploy``) instead of from a file path on this machine."""
    kind = {"entrypoint_type": EntrypointType.MODULE_PATH} if module_entrypoints else {}
    loaded = [(p, load_campaign(p)) for p in sorted(Path(campaigns).glob("*.toml"))]
    out: list[RunnerDeployment] = []
    for entry in FLOWS:
        if entry.campaign_parameters is not None:
            for path, campaign in loaded:
                out.append(
                    entry.flow.to_deployment(
                        name=campaign.name,
                        description=campaign.campaign.description
                        or f"{entry.flow.name} for {campaign.name} ({campaign.provider})",
                        tags=[*entry.tags, campaign.provider],
                        parameters=entry.campaign_parameters(_param_path(path), campaign),
                        schedules=campaign_schedule(campaign),
                        **kind,
                    )
                )
        else:
            params = entry.parameters() if entry.parameters else {}
            if inbox and "request" in params and entry.flow is import_inbox:
                params = {"request": {**params["request"], **inbox}}
            out.append(
                entry.flow.to_deployment(
                    name=entry.name or entry.flow.name,
                    tags=list(entry.tags),
                    parameters=params,
                    schedules=[entry.schedule()] if entry.schedule else [],
                    **kind,
                )
            )
    return out


def register_with_pool(pool: str, campaigns: Path = CAMPAIGNS) -> list[str]:
    """Create the process work pool if needed and register every deployment with it. Workers import
    the flows from the installed ``passflow`` package, so any machine with it installed can run them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    names = []
    for d in build_deployments(campaigns, module_entrypoints=True):
        d.apply(work_pool_name=pool)
        names.append(f"{d.flow_name}/{d.name}")
    return names
