"""Passmachine webhooks (``POST /callbacks/<campaign>/passmachine``) → :class:`ParsedCallback`.

Passmachine publishes no webhook format; this is the shape passflow accepts (and the sandbox sends),
an assumption documented in ``docs/sandbox-protocol.md``::

    {"id": "wh-1", "event": "pass.added", "createdAt": "2026-12-01T21:00:00Z",
     "data": {"id": "<pass id>", "metadata": {"registered": "1001"}}}

``event``: ``pass.added`` / ``pass.removed`` (to / from a wallet). The customer id is read from the
metadata key the campaign puts it in (``[passmachine] lookup_metadata_key``).
"""

from __future__ import annotations

from datetime import datetime

from passflow.config import Campaign
from passflow.providers.callbacks import (
    CallbackPayloadError,
    ParsedCallback,
    body_id,
    load_json_body,
    optional_id,
    timestamp_of,
)

PASSMACHINE_EVENTS = {"pass.added": "added", "pass.removed": "removed"}


def parse_webhook(body: bytes, received_at: datetime, campaign: Campaign | None = None) -> ParsedCallback:
    customer_key = campaign.settings.lookup_metadata_key if campaign is not None else "registered"
    doc = load_json_body(body)
    kind = doc.get("event")
    if kind not in PASSMACHINE_EVENTS:
        raise CallbackPayloadError(f"event must be one of {', '.join(PASSMACHINE_EVENTS)}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise CallbackPayloadError("data must be a JSON object with the pass id")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    pass_id = optional_id(data.get("id"), "data.id")
    customer_id = optional_id(meta.get(customer_key), f"data.metadata.{customer_key}", free_text=True)
    if pass_id is None and customer_id is None:
        raise CallbackPayloadError(f"data.id (or data.metadata.{customer_key}) is required")
    return ParsedCallback(
        event=PASSMACHINE_EVENTS[kind],
        pass_id=pass_id,
        customer_id=customer_id,
        vendor_event_id=optional_id(doc.get("id"), "id") or body_id(body),
        occurred_at=timestamp_of(doc.get("createdAt"), received_at, "createdAt"),
        payload=doc,
    )
