"""Prefect events for recorded callbacks: ``passflow.pass.<event>`` (installed, uninstalled, …).

The resource labels are an interface — the update path's deployment trigger matches
``passflow.pass.uninstalled`` on them::

    {"prefect.resource.id": "passflow.pass.<campaign>.<customer_id>", "passflow.campaign": …,
     "passflow.customer_id": …, "passflow.pass_id": …}

The event id is derived from (provider, vendor event id), so even a re-emission is one event to
Prefect. Emission runs after the callback is committed: a failure here is logged and counted, never
a lost callback (the events table still has it, and the file/SQL events source reads that table).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from passflow.store.events import PassEvent

log = logging.getLogger(__name__)
EVENT_PREFIX = "passflow.pass."
_NAMESPACE = uuid.UUID("5b0f4c2e-8a53-4a4e-9a59-2f6c1f0e7d11")  # passflow callback event ids

Emitter = Callable[..., Any]


def event_resource(campaign: str, customer_id: str, pass_id: str | None) -> dict[str, str]:
    return {
        "prefect.resource.id": f"passflow.pass.{campaign}.{customer_id}",
        "passflow.campaign": campaign,
        "passflow.customer_id": customer_id,
        "passflow.pass_id": pass_id or "",
    }


def event_id(provider: str, vendor_event_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{provider}:{vendor_event_id}")


def prefect_api_configured() -> bool:
    """Whether events have somewhere to go. Without ``PREFECT_API_URL`` Prefect would start a
    throw-away in-process server that no trigger ever sees, so we do not emit at all."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _prefect_emit(**kwargs: Any) -> Any:
    if not prefect_api_configured():
        return None
    from prefect.events import emit_event

    return emit_event(**kwargs)


def emit_pass_event(ev: PassEvent, emitter: Emitter | None = None) -> bool:
    """Emit ``passflow.pass.<event>`` for a recorded callback; True when Prefect took it.

    ``emit_event`` returns None when this process has no Prefect API to send events to.
    """
    try:
        sent = (emitter or _prefect_emit)(
            event=EVENT_PREFIX + ev.event,
            resource=event_resource(ev.campaign, ev.customer_id, ev.pass_id),
            occurred=ev.occurred_at,
            payload={"provider": ev.provider, "vendor_event_id": ev.vendor_event_id},
            id=event_id(ev.provider, ev.vendor_event_id),
        )
    except Exception as exc:  # noqa: BLE001 - the callback is recorded; emission is best effort
        log.warning("could not emit %s%s for %s/%s: %s", EVENT_PREFIX, ev.event, ev.campaign, ev.customer_id,
                    type(exc).__name__)
        return False
    if sent is None:
        log.debug("no Prefect API configured (PREFECT_API_URL): %s%s not emitted", EVENT_PREFIX, ev.event)
        return False
    return True
