"""Prefect deployment triggers for the ``update-passes`` flow, so another system can ask for an update
without a file — register them with the deployment (``update_passes.to_deployment(...,
triggers=update_triggers(campaign, path))`` or ``.serve(triggers=…)``).

Events (resource labels carry the campaign; payload or labels carry the rest):

``passflow.update.requested``
    ``resource = {"prefect.resource.id": "passflow.campaign.<name>", "passflow.campaign": "<name>"}``,
    ``payload = {"customer_ids": [...], "action": "notify"}``. :func:`emit_update_request` emits it.
``passflow.pass.uninstalled``
    Emitted by the vendor-callbacks receiver with resource labels ``passflow.campaign``,
    ``passflow.customer_id`` and ``passflow.pass_id``: the pass is voided (the ``void`` action).

Each run records the Prefect event id as its event key, so an event delivered twice acts once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.events import DeploymentEventTrigger, emit_event

from passflow.config import Campaign

UPDATE_REQUESTED = "passflow.update.requested"
PASS_UNINSTALLED = "passflow.pass.uninstalled"


def update_triggers(campaign: Campaign, campaign_path: str | Path) -> list[DeploymentEventTrigger]:
    """The triggers that run ``update-passes`` for ``campaign`` (its file at ``campaign_path``)."""
    path = str(campaign_path)
    name = campaign.name
    return [
        DeploymentEventTrigger(
            name=f"{name}: update requested",
            expect={UPDATE_REQUESTED},
            match={"passflow.campaign": name},
            parameters={
                "campaign": path,
                "mode": "customers",
                "customer_ids": "{{ event.payload.customer_ids }}",
                "action": "{{ event.payload.action }}",
                "event_key": "prefect:{{ event.id }}",
                "origin": "prefect-event",
            },
        ),
        DeploymentEventTrigger(
            name=f"{name}: void on uninstall",
            expect={PASS_UNINSTALLED},
            match={"passflow.campaign": name},
            parameters={
                "campaign": path,
                "mode": "customers",
                "customer_ids": ["{{ event.resource['passflow.customer_id'] }}"],
                "action": "void",
                "event_key": "prefect:{{ event.id }}",
                "origin": "prefect-event",
            },
        ),
    ]


def emit_update_request(campaign: str, customer_ids: list[str], action: str) -> Any:
    """Ask for an update from any Python process connected to the Prefect API."""
    return emit_event(
        UPDATE_REQUESTED,
        resource={"prefect.resource.id": f"passflow.campaign.{campaign}", "passflow.campaign": campaign},
        payload={"customer_ids": list(customer_ids), "action": action},
    )
