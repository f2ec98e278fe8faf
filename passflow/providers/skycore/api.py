"""Async client for Skycore's pass update APIs (coupon, gift card, loyalty card, event ticket, boarding
pass): ``POST {base}/api/passes/{pass_type}/update`` with header ``X-Api-Key`` and a JSON body
``{"pass-id", "pass-template-id", "pass-data": {...}}`` (e.g. ``pass-update-notification``, or
``"pass-status": "voided"`` / ``"expired"``).

Skycore answers ``{"status": "success", ...}`` or ``{"status": "failure", "error-code": "E104",
"error-info": ...}`` — a failure body is a failed call with its error code **even on HTTP 200**, and is
never retried (the vendor answered; repeating it gives the same answer). HTTP-level trouble (429, 5xx,
timeouts, connection errors) is retried with :class:`~passflow.providers.http.retry.RetryPolicy`, each
attempt taking one slot of the shared :class:`~passflow.providers.http.limiter.RateLimiter`, backoff sleeps outside
the slot, ``Retry-After`` pausing the whole limiter. An update sets values, so repeating one after an
ambiguous failure is safe (at worst the holder sees a notification twice).

The API key travels only in the request header; it is never part of a result, a log line or an
error text (every text is scrubbed of it as defence in depth).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from passflow.errors import ConfigError
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.pool_shards import ShardedPoolTransport
from passflow.providers.http.retry import RetryPolicy
from passflow.secrets import redact, register_secret

__all__ = ["SKYCORE_UPDATE_TYPES", "SkycoreApiClient", "UpdateResult"]

SKYCORE_UPDATE_TYPES = frozenset({"coupon", "giftcard", "loyaltycard", "eventticket", "boardingpass"})


@dataclass(frozen=True)
class UpdateResult:
    """The result of one update (all its attempts). ``error`` and ``error_code`` never hold secrets;
    ``retryable``: the failure was transient (HTTP-level), so a later run may try again."""

    ok: bool
    status: int | None
    error_code: str | None
    error: str | None
    attempts: int
    retryable: bool = False
    data: dict[str, Any] | None = None


class SkycoreApiClient:
    """One pooled HTTP client for one Skycore account. Use as ``async with SkycoreApiClient(...)``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        limiter: RateLimiter,
        policy: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("the Skycore API key must not be empty", key="updates.api_key")
        self.limiter = limiter
        self._key = api_key
        register_secret(api_key)
        self._policy = policy or RetryPolicy()
        self._rng = rng
        if transport is None:  # the same pools and send-time feedback to the limiter as Passmachine's
            transport = ShardedPoolTransport(limiter.max_in_flight)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": "passflow"},
        )

    def __repr__(self) -> str:  # never the key
        return f"SkycoreApiClient(base_url={str(self._http.base_url)!r}, limiter={self.limiter!r})"

    async def __aenter__(self) -> SkycoreApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def update_pass(self, pass_type: str, body: dict[str, Any]) -> UpdateResult:
        """Send one pass update; see the module docstring for how outcomes are classified."""
        if pass_type not in SKYCORE_UPDATE_TYPES:
            return UpdateResult(False, None, "E102", f"unknown pass type {pass_type!r}", 0)
        path = f"/api/passes/{quote(pass_type, safe='')}/update"
        content = json.dumps(body, ensure_ascii=False).encode()
        headers = {"X-Api-Key": self._key, "Content-Type": "application/json"}
        policy, attempts, last = self._policy, 0, "no attempt"
        status: int | None = None
        while attempts < policy.max_attempts:
            attempts += 1
            async with self.limiter.slot():
                try:
                    response: httpx.Response | BaseException = await self._http.post(
                        path, content=content, headers=headers
                    )
                except httpx.RequestError as exc:
                    response = exc
            outcome = policy.classify(response, reauthed=True)  # no token to refresh: a 401 is final
            status = outcome.status
            if outcome.kind == "ok":
                data = outcome.data or {}
                if data.get("status") == "success":
                    return UpdateResult(True, status, None, None, attempts, data=data)
                code = data.get("error-code")
                info = data.get("error-info") or "no error-info"
                code = code if isinstance(code, str) and code else "unknown"
                return UpdateResult(False, status, code, redact(f"{code}: {info}"[:300]), attempts, data=data)
            last = redact(outcome.reason)
            if outcome.kind == "permanent":
                return UpdateResult(False, status, f"HTTP{status}" if status else "error", last, attempts)
            if status == 429:
                self.limiter.refused()  # the vendor counted more than we did: widen the margin
            if outcome.retry_after is not None:
                self.limiter.pause_for(outcome.retry_after)
            if attempts < policy.max_attempts:
                await asyncio.sleep(policy.delay(attempts, outcome.retry_after, self._rng))
        code = f"HTTP{status}" if status else "network"
        return UpdateResult(False, status, code, f"gave up after {attempts} attempts: {last}", attempts, retryable=True)
