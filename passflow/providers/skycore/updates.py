"""Skycore pass updates: the ``updatepassdata`` request per pass, and the sender that posts it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from passflow.config import Campaign
from passflow.errors import ConfigError
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.loop import BackgroundLoop
from passflow.providers.http.retry import RetryPolicy
from passflow.providers.sender import Sender, SendResult
from passflow.providers.skycore.api import CallResult, SkycoreApiClient
from passflow.providers.skycore.errors import classify
from passflow.secrets import SecretRef, resolve_secret

# HTTP-level refusals of the key (Skycore documents failure bodies, but a proxy may answer these).
_HTTP_REFUSED = frozenset({"HTTP401", "HTTP403"})

#: built-in actions (a campaign's [updates.actions.<name>] overrides them). Skycore documents only
#: ``expired`` as a pass-status value, so ``void`` sends it too.
BUILTIN_ACTIONS = {"void": {"pass-status": "expired"}, "expire": {"pass-status": "expired"}}


def api_target(campaign: Campaign) -> tuple[str | None, SecretRef | None, str]:
    """The account's API URL, key reference and where the key goes, with the keys they came from:
    ``[skycore] api_url`` / ``api_key`` first, the older ``[updates] api_base_url`` / ``api_key``
    as a fallback."""
    sky = campaign.settings
    upd = campaign.updates
    url = getattr(sky, "api_url", None) or (upd.api_base_url if upd else None)
    key = getattr(sky, "api_key", None) or (upd.api_key if upd else None)
    return url, key, getattr(sky, "api_key_in", "header")


def update_request(
    campaign: Campaign, pass_id: str, data: Mapping[str, str], base: Mapping[str, Any] | None
) -> str:
    """The ``updatepassdata`` body for one pass (``action`` and key are added by the client)."""
    template_id = campaign.updates.pass_template_id if campaign.updates else None
    return json.dumps(
        {"pass-id": pass_id, "pass-template-id": template_id, "pass-data": dict(data)}, ensure_ascii=False
    )


def check_updates(campaign: Campaign) -> None:
    """Skycore updates need the account's API URL, key and the pass template."""
    url, key, _ = api_target(campaign)
    missing = [
        k
        for k, v in (
            ("skycore.api_url", url),
            ("skycore.api_key", key),
            ("updates.pass_template_id", campaign.updates and campaign.updates.pass_template_id),
        )
        if not v
    ]
    if missing:
        raise ConfigError(
            "Skycore updates need [skycore] api_url (the API URL from Skycore API Settings), "
            'api_key = { env = "SKYCORE_API_KEY" } and [updates] pass_template_id',
            file=str(campaign.path) if campaign.path else None,
            key=missing[0],
        )


def refusal(r: CallResult) -> str | None:
    """The message that stops the run, when the result says the account (not the pass) is the
    problem: configuration/auth codes and the account's request limit (both resumable)."""
    if r.ok:
        return None
    if r.error_code in _HTTP_REFUSED:
        return f"{r.error}; fix: check [skycore] api_key against Skycore API Settings"
    row = classify(r.error_code)
    if row is not None and row.cls in ("config", "limit"):
        said = r.error or r.error_code or ""
        meaning = "" if row.meaning.lower() in said.lower() else f" ({row.meaning})"
        return f"{said}{meaning}; fix: {row.fix}"
    return None


def make_sender(
    campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None
) -> Sender:
    return SkycoreSender(campaign, transport)


def make_client(campaign: Campaign, transport: httpx.AsyncBaseTransport | None = None) -> SkycoreApiClient:
    """The campaign's API client (call inside the event loop that will use it)."""
    url, ref, key_in = api_target(campaign)
    assert url and ref, "check_updates first"
    key = resolve_secret(ref, file=str(campaign.path), key="skycore.api_key").get_secret_value()
    lim = campaign.limits
    return SkycoreApiClient(
        url,
        api_key=key,
        api_key_in=key_in,  # type: ignore[arg-type]
        limiter=RateLimiter(max_in_flight=lim.max_in_flight, max_per_second=lim.max_per_second),
        policy=RetryPolicy(max_attempts=lim.max_attempts),
        timeout_s=lim.timeout_s,
        transport=transport,
    )


class SkycoreSender(Sender):
    def __init__(self, campaign: Campaign, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(campaign, "Skycore")
        self._loop = BackgroundLoop("passflow-updates")

        async def make() -> SkycoreApiClient:
            return make_client(campaign, transport)

        self._client = self._loop.run(make())

    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        r = await self._client.update_pass(json.loads(body))
        return SendResult(r.ok, r.error_code, r.error, r.attempts, r.retryable), refusal(r)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must not mask the run's own error
            self._loop.run(self._client.aclose())
        self._loop.close()
