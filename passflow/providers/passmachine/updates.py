"""Passmachine pass updates: an RFC 6902 JSON Patch per pass (``replace /templateVariables/<name>``,
the seed's ``fieldValue`` / ``changeMessage`` notification), sent through the same client as
issuance: same token manager, limiter and retry rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from passflow.config import Campaign
from passflow.providers.passmachine.client import refusal
from passflow.providers.passmachine.connection import close_client, open_client
from passflow.providers.sender import Sender, SendResult

# --diff re-sends every template variable; "refresh" adds nothing to that by default.
BUILTIN_ACTIONS: dict[str, dict[str, str]] = {"refresh": {}}


def json_pointer(name: str) -> str:
    """RFC 6901 escaping of one path segment."""
    return name.replace("~", "~0").replace("/", "~1")


def update_request(campaign: Campaign, pass_id: str, data: Mapping[str, str], base: Mapping[str, Any] | None) -> str:
    """The JSON Patch for one pass: ``base`` (the issued template variables, for --diff), then the action's."""
    variables = {**(base or {}), **data}
    ops = [{"op": "replace", "path": f"/templateVariables/{json_pointer(k)}", "value": v} for k, v in variables.items()]
    return json.dumps(ops, ensure_ascii=False)


def issued_values(payload: str) -> dict[str, Any]:
    """The template variables a pass was issued with (from its prepared payload)."""
    return json.loads(payload)["templateVariables"]


def make_sender(campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None) -> Sender:
    return PassmachineSender(campaign, now, transport)


class PassmachineSender(Sender):
    """JSON Patch through a client like issuance's (:mod:`.connection`): same token manager, limiter and retry rules."""

    def __init__(
        self, campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(campaign, "Passmachine")
        self._loop, self._client = open_client(campaign, transport, name="passflow-updates")

    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        r = await self._client.patch_pass(pass_id, json.loads(body))
        if r.ok:
            return SendResult(True, attempts=r.attempts), None
        code = f"HTTP{r.status}" if r.status else "network"
        return SendResult(False, code, r.error, r.attempts, retryable=not r.permanent), refusal(r)

    def close(self) -> None:
        close_client(self._loop, self._client)


