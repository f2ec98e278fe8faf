"""Which flows are deployed, how: one :class:`FlowEntry` per flow. Adding a flow is one entry in
:data:`FLOWS`.

A *per-campaign* entry gets one deployment per campaign file (named after the campaign), scheduled
by the campaign's ``[schedule]`` (cron + IANA time zone; none → run by hand only), with flat default
parameters whose campaign field is fixed to the campaign file, one run at a time (an overlapping run
queues), and manual runs that default to a dry run (``[schedule] manual_dry_run``). A *global* entry
(the inbox) gets one deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passflow.deployments.update_triggers import update_triggers
from passflow.flows.import_inbox import InboxRequest, import_inbox
from passflow.flows.issue_passes import PROJECT_ROOT, issue_passes
from passflow.flows.issue_sharded import issue_passes_shard, issue_passes_sharded
from passflow.flows.update_passes import update_passes
from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Schedule

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
    # Per-campaign entries: which campaigns get one (default: all), their schedule and event triggers.
    applies: Callable[[Campaign], bool] = lambda campaign: True
    campaign_schedule: Callable[[Campaign], list[Schedule]] | None = None
    triggers: Callable[[str, Campaign], list[Any]] | None = None


def _cron(s: Any) -> list[Schedule]:
    # The schedule carries its own dry_run: the deployment's default is the *manual* runs' one.
    return [Cron(s.cron, timezone=s.timezone, active=s.active, parameters={"dry_run": s.dry_run})] if s else []


def campaign_schedule(campaign: Campaign) -> list[Schedule]:
    return _cron(campaign.schedule)


def manual_dry_run(schedule: Any) -> bool:
    """A run started by hand (the UI's Run button, ``prefect deployment run``) is a dry run unless the
    campaign's ``[schedule] manual_dry_run = false``: a click should never issue by surprise."""
    return schedule.manual_dry_run if schedule is not None else True


def _issue_parameters(path: str, campaign: Campaign) -> dict[str, Any]:
    return {"campaign": path, "dry_run": manual_dry_run(campaign.schedule)}


def _update_parameters(path: str, campaign: Campaign) -> dict[str, Any]:
    # A scheduled update run reads the campaign's events source, else re-diffs the segment; a person
    # starting it from the UI picks another mode (customers + action) in the form.
    u = campaign.updates
    assert u is not None
    mode = "events" if u.events else "diff" if u.diff_action else "customers"
    return {"campaign": path, "mode": mode, "dry_run": manual_dry_run(u.schedule)}


# One run of a campaign's deployment at a time; an overlapping one (a schedule firing while a run
# is still going, a second click) waits in AwaitingConcurrencySlot instead of failing on the ledger's
# lock and setting off the failure automation.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def fix_campaign(deployment: RunnerDeployment, path: str) -> RunnerDeployment:
    """Show the campaign field read-only with its one allowed value (the server rejects another).
    ``prefect.utilities.annotations.freeze`` does this too, but from_flow sets the schema after the
    validator that applies it has run, so it is done here."""
    prop = deployment._parameter_openapi_schema.properties.get("campaign")
    if prop is not None:
        prop.update(readOnly=True, enum=[path], default=path)
    return deployment


FLOWS: list[FlowEntry] = [
    FlowEntry(flow=issue_passes, campaign_parameters=_issue_parameters, campaign_schedule=campaign_schedule),
    FlowEntry(
        flow=update_passes,
        campaign_parameters=_update_parameters,
        applies=lambda campaign: campaign.updates is not None,
        campaign_schedule=lambda campaign: _cron(campaign.updates.schedule if campaign.updates else None),
        triggers=lambda path, campaign: update_triggers(campaign, path),
    ),
    # Scale-out (flows/issue_sharded.py): the shard flow runs on a process work pool's workers, started
    # by the split flow; both take the campaign in the run form.
    FlowEntry(flow=issue_passes_shard, name="issue-passes-shard", tags=("passflow", "scale-out")),
    FlowEntry(flow=issue_passes_sharded, name="issue-passes-sharded", tags=("passflow", "scale-out")),
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
                if not entry.applies(campaign):
                    continue
                extra = dict(kind)
                if entry.triggers is not None:
                    extra["triggers"] = entry.triggers(_param_path(path), campaign)
                deployment = entry.flow.to_deployment(
                    name=campaign.name,
                    description=campaign.campaign.description
                    or f"{entry.flow.name} for {campaign.name} ({campaign.provider})",
                    tags=[*entry.tags, campaign.provider],
                    parameters=entry.campaign_parameters(_param_path(path), campaign),
                    schedules=entry.campaign_schedule(campaign) if entry.campaign_schedule else [],
                    concurrency_limit=ONE_AT_A_TIME,
                    **extra,
                )
                out.append(fix_campaign(deployment, _param_path(path)))
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
