"""Skycore pass updates: the rendered request per pass, and the sender that posts it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from passflow.config import Campaign
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.loop import BackgroundLoop
from passflow.providers.http.retry import RetryPolicy
from passflow.providers.sender import Sender, SendResult
from passflow.providers.skycore.api import SkycoreApiClient
from passflow.secrets import resolve_secret

# Skycore refusing the API key (E101), on HTTP 200 or as an HTTP 401/403.
SKYCORE_REFUSED = frozenset({"E101", "HTTP401", "HTTP403"})

#: built-in actions (a campaign's [updates.actions.<name>] overrides them)
BUILTIN_ACTIONS = {"void": {"pass-status": "voided"}, "expire": {"pass-status": "expired"}}


def update_request(campaign: Campaign, pass_id: str, data: Mapping[str, str], base: Mapping[str, Any] | None) -> str:
    """The pass update API's body for one pass."""
    template_id = campaign.updates.pass_template_id if campaign.updates else None
    return json.dumps({"pass-id": pass_id, "pass-template-id": template_id, "pass-data": dict(data)}, ensure_ascii=False)


def check_updates(campaign: Campaign) -> None:
    """Skycore updates need the API's URL, key and the pass template."""
    from passflow.errors import ConfigError

    cfg = campaign.updates
    for key in ("api_base_url", "api_key", "pass_template_id"):
        if cfg is None or not getattr(cfg, key):
            raise ConfigError(
                "Skycore updates need api_base_url, api_key = { env = \"SKYCORE_API_KEY\" } and "
                "pass_template_id under [updates]",
                file=str(campaign.path) if campaign.path else None,
                key=f"updates.{key}",
            )


def make_sender(campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None) -> Sender:
    return SkycoreSender(campaign, transport)


class SkycoreSender(Sender):
    def __init__(self, campaign: Campaign, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(campaign, "Skycore")
        cfg = campaign.updates
        assert cfg is not None and cfg.api_base_url and cfg.api_key
        key = resolve_secret(cfg.api_key, file=str(campaign.path), key="updates.api_key").get_secret_value()
        self.pass_type = campaign.campaign.pass_type
        lim = campaign.limits
        self._loop = BackgroundLoop("passflow-updates")

        async def make() -> SkycoreApiClient:
            return SkycoreApiClient(
                cfg.api_base_url or "",
                api_key=key,
                limiter=RateLimiter(max_in_flight=lim.max_in_flight, max_per_second=lim.max_per_second),
                policy=RetryPolicy(max_attempts=lim.max_attempts),
                timeout_s=lim.timeout_s,
                transport=transport,
            )

        self._client = self._loop.run(make())

    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        r = await self._client.update_pass(self.pass_type, json.loads(body))
        refused = r.error if r.error_code in SKYCORE_REFUSED else None
        return SendResult(r.ok, r.error_code, r.error, r.attempts, r.retryable), refused

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must not mask the run's own error
            self._loop.run(self._client.aclose())
        self._loop.close()


