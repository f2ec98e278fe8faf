"""The sandbox as the vendor calling *us*: simulate a customer adding / removing a pass and POST the
matching Skycore postback or Passmachine webhook to the configured callback URL.

``POST /_admin/callbacks/simulate`` with ``{"provider": "skycore", "pass_id": "SPRING1001",
"event": "uninstalled"}`` (optional: ``customer_id``, ``occurred_at``, ``event_id``, ``url``, and
``signing``: ``valid`` (default), ``wrong-secret``, ``stale``, ``token``, ``none``). The shared secret
comes from the environment variable named by ``callback_secret_env`` in the sandbox config, so it
never travels through the admin API. Bodies are those :mod:`passflow.callbacks.payloads` documents.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from passflow.callbacks.auth import TOKEN_HEADER, signed_headers
from passflow.providers.skycore.postbacks import SKYCORE_CODES

_SKYCORE_CODE = {event: code for code, event in SKYCORE_CODES.items()}
_PASSMACHINE_EVENT = {"added": "pass.added", "installed": "pass.added", "removed": "pass.removed",
                      "uninstalled": "pass.removed"}
STALE_BY_S = 3600  # a "stale" signature is this much older than now


class SimulatedCallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Literal["skycore", "passmachine"]
    pass_id: str = Field(min_length=1)
    event: Literal["generated", "failed", "installed", "uninstalled", "added", "removed"]
    customer_id: str | None = None
    occurred_at: str | None = Field(None, description="ISO 8601; default now")
    event_id: str | None = Field(None, description="vendor event id; default random")
    url: str | None = Field(None, description="overrides the configured callback URL")
    signing: Literal["valid", "wrong-secret", "stale", "token", "none"] = "valid"


def build_body(sim: SimulatedCallback, metadata: dict[str, Any] | None, now_iso: str) -> dict[str, Any]:
    """The vendor's callback body for a simulated wallet event."""
    event_id = sim.event_id or secrets.token_hex(8)
    occurred = sim.occurred_at or now_iso
    if sim.provider == "skycore":
        if sim.event not in _SKYCORE_CODE:
            raise ValueError(f"Skycore postbacks have no {sim.event!r} event; use {', '.join(_SKYCORE_CODE)}")
        body: dict[str, Any] = {
            "postback-id": f"pb-{event_id}",
            "status-code": _SKYCORE_CODE[sim.event],
            "status-info": sim.event.capitalize(),
            "pass-id": sim.pass_id,
            "timestamp": occurred,
        }
        if sim.customer_id:
            body["customer-id"] = sim.customer_id
        return body
    if sim.event not in _PASSMACHINE_EVENT:
        raise ValueError(f"Passmachine webhooks have no {sim.event!r} event; use added or removed")
    meta = dict(metadata or {})
    if sim.customer_id:
        meta.setdefault("registered", sim.customer_id)
    return {
        "id": f"wh-{event_id}",
        "event": _PASSMACHINE_EVENT[sim.event],
        "createdAt": occurred,
        "data": {"id": sim.pass_id, "metadata": meta},
    }


def auth_headers(signing: str, secret: str, raw: bytes) -> dict[str, str]:
    if signing == "none":
        return {"Content-Type": "application/json"}
    if signing == "token":
        return {TOKEN_HEADER: secret, "Content-Type": "application/json"}
    if signing == "wrong-secret":
        return signed_headers(secret + "-wrong", raw)
    if signing == "stale":
        return signed_headers(secret, raw, now=time.time() - STALE_BY_S)
    return signed_headers(secret, raw)


async def deliver(url: str, raw: bytes, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """POST the callback; report what the receiver answered (or why it could not be reached)."""
    body = json.loads(raw)
    try:
        # A plain-http target needs no CA bundle; loading one costs ~100 ms per simulated callback.
        async with httpx.AsyncClient(timeout=timeout_s, verify=not url.startswith("http://")) as client:
            response = await client.post(url, content=raw, headers=headers)
    except httpx.HTTPError as exc:
        return {"status": "unreachable", "error": type(exc).__name__, "sent": body}
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text[:500]
    return {"status": response.status_code, "response": answer, "sent": body}
