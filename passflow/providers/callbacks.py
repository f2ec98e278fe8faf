"""What every provider's callback parser shares: :class:`ParsedCallback` (what happened to which pass,
when), the error a refused body raises, and the helpers for JSON bodies, times and ids.

The parsers themselves live with their providers (``passflow/providers/<name>/``, registered as the
provider's ``CallbackSupport``); the callbacks server (:mod:`passflow.callbacks.app`) calls them.
Timestamps are ISO 8601 (without an offset they are taken as UTC) or unix seconds; a callback without
one gets the time it was received. Without a vendor event id, the id is a SHA-256 of the body, so the
same body delivered twice is recorded once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def timestamp_of(value: Any, received_at: datetime, field: str) -> datetime:
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


def optional_id(value: Any, field: str, *, free_text: bool = False) -> str | None:
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


def load_json_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise CallbackPayloadError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CallbackPayloadError("body is not valid JSON", status=400) from None
    if not isinstance(doc, dict):
        raise CallbackPayloadError("body must be a JSON object", status=400)
    return doc


def body_id(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
