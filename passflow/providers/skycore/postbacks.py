"""Skycore postbacks (``POST /callbacks/<campaign>/skycore``) → :class:`ParsedCallback`.

The shape passflow accepts (and the sandbox sends)::

    {"postback-id": "pb-1", "status-code": "N805", "status-info": "Uninstalled",
     "pass-id": "SPRING1001", "pass-template-id": "…", "timestamp": "2026-12-01T21:00:00Z",
     "customer-id": "1001"}                      # customer-id optional

``status-code``: N801 Generated, N802 Failed, N804 Installed, N805 Uninstalled.
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

SKYCORE_CODES = {"N801": "generated", "N802": "failed", "N804": "installed", "N805": "uninstalled"}


def parse_postback(body: bytes, received_at: datetime, campaign: Campaign | None = None) -> ParsedCallback:
    doc = load_json_body(body)
    code = doc.get("status-code")
    if code not in SKYCORE_CODES:
        known = ", ".join(f"{c} ({e})" for c, e in SKYCORE_CODES.items())
        raise CallbackPayloadError(f"status-code must be one of {known}")
    pass_id = optional_id(doc.get("pass-id"), "pass-id")
    customer_id = optional_id(doc.get("customer-id"), "customer-id", free_text=True)
    if pass_id is None and customer_id is None:
        raise CallbackPayloadError("pass-id (or customer-id) is required")
    return ParsedCallback(
        event=SKYCORE_CODES[code],
        pass_id=pass_id,
        customer_id=customer_id,
        vendor_event_id=optional_id(doc.get("postback-id"), "postback-id") or body_id(body),
        occurred_at=timestamp_of(doc.get("timestamp"), received_at, "timestamp"),
        payload=doc,
    )
