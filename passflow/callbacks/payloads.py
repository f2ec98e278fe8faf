"""Vendor callback bodies → :class:`ParsedCallback` (what happened to which pass, when).

Neither vendor publishes its callback format in the seeds, so these are the shapes passflow accepts
(and the sandbox sends); ``docs/sandbox-protocol.md`` and the README show them.

Skycore postback (``POST /callbacks/<campaign>/skycore``)::

    {"postback-id": "pb-1", "status-code": "N805", "status-info": "Uninstalled",
     "pass-id": "SPRING1001", "pass-template-id": "…", "timestamp": "2026-12-01T21:00:00Z",
     "customer-id": "1001"}                      # customer-id optional

``status-code``: N801 Generated, N802 Failed, N804 Installed, N805 Uninstalled.

Passmachine webhook (``POST /callbacks/<campaign>/passmachine``)::

    {"id": "wh-1", "event": "pass.added", "createdAt": "2026-12-01T21:00:00Z",
     "data": {"id": "<pass id>", "metadata": {"registered": "1001"}}}

``event``: ``pass.added`` / ``pass.removed`` (to / from a wallet).

Timestamps are ISO 8601 (without an offset they are taken as UTC) or unix seconds; a callback
without one gets the time it was received. Without a vendor event id, the id is a SHA-256 of the
body, so the same body delivered twice is recorded once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SKYCORE_CODES = {"N801": "generated", "N802": "failed", "N804": "installed", "N805": "uninstalled"}
PASSMACHINE_EVENTS = {"pass.added": "added", "pass.removed": "removed"}
MAX_BODY_BYTES = 64 * 1024
_ID_RE = re.compile(r"^[\w.:\-]{1,200}$")


class CallbackPayloadError(ValueError):
    """A callback body we cannot use; the reason goes back to the vendor (HTTP 400/422)."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ParsedCallback:
    event: str
    pass_id: str | None
    customer_id: str | None  # as echoed by the vendor; the ledger decides
    vendor_event_id: str
    occurred_at: datetime
    payload: dict[str, Any]


def _timestamp(value: Any, received_at: datetime, field: str) -> datetime:
    if value is None or value == "":
        return received_at
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            dt = None
        if dt is not None:
            return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise CallbackPayloadError(f"{field} must be an ISO 8601 time or unix seconds")


def _optional_id(value: Any, field: str, *, free_text: bool = False) -> str | None:
    """An id field: vendor ids are short tokens; customer ids are ours (any printable text)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if free_text and isinstance(value, str) and len(value) <= 255 and value.isprintable():
        return value
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise CallbackPayloadError(f"{field} must be a short id (letters, digits, . : _ -)")
    return value


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise CallbackPayloadError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CallbackPayloadError("body is not valid JSON", status=400) from None
    if not isinstance(doc, dict):
        raise CallbackPayloadError("body must be a JSON object", status=400)
    return doc


def _body_id(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_skycore(body: bytes, received_at: datetime) -> ParsedCallback:
    doc = _load(body)
    code = doc.get("status-code")
    if code not in SKYCORE_CODES:
        known = ", ".join(f"{c} ({e})" for c, e in SKYCORE_CODES.items())
        raise CallbackPayloadError(f"status-code must be one of {known}")
    pass_id = _optional_id(doc.get("pass-id"), "pass-id")
    customer_id = _optional_id(doc.get("customer-id"), "customer-id", free_text=True)
    if pass_id is None and customer_id is None:
        raise CallbackPayloadError("pass-id (or customer-id) is required")
    return ParsedCallback(
        event=SKYCORE_CODES[code],
        pass_id=pass_id,
        customer_id=customer_id,
        vendor_event_id=_optional_id(doc.get("postback-id"), "postback-id") or _body_id(body),
        occurred_at=_timestamp(doc.get("timestamp"), received_at, "timestamp"),
        payload=doc,
    )


def parse_passmachine(body: bytes, received_at: datetime, *, customer_key: str) -> ParsedCallback:
    doc = _load(body)
    kind = doc.get("event")
    if kind not in PASSMACHINE_EVENTS:
        raise CallbackPayloadError(f"event must be one of {', '.join(PASSMACHINE_EVENTS)}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise CallbackPayloadError("data must be a JSON object with the pass id")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    pass_id = _optional_id(data.get("id"), "data.id")
    customer_id = _optional_id(meta.get(customer_key), f"data.metadata.{customer_key}", free_text=True)
    if pass_id is None and customer_id is None:
        raise CallbackPayloadError(f"data.id (or data.metadata.{customer_key}) is required")
    return ParsedCallback(
        event=PASSMACHINE_EVENTS[kind],
        pass_id=pass_id,
        customer_id=customer_id,
        vendor_event_id=_optional_id(doc.get("id"), "id") or _body_id(body),
        occurred_at=_timestamp(doc.get("createdAt"), received_at, "createdAt"),
        payload=doc,
    )
