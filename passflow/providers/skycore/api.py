"""Async client for Skycore's Mobile Wallet API v3 as published: every call is ``POST`` to the
account's one API URL (Skycore API Settings; ``[skycore] api_url``) with a JSON body whose mandatory
``action`` picks the function (``updatepassdata``, ``generatepass``, ``getpassdata``, ``getPassIds``,
``getPassTemplates``). The key travels as header ``X-Api-Key`` (since April 2021) or, for accounts on
the older scheme, as body field ``api-key`` (``[skycore] api_key_in = "body"``).

Skycore answers ``{"status": "success", ...}`` or ``{"status": "failure", "error-code": "E104",
"error-info": ...}``; a failure body is a failed call **even on HTTP 200**, classified by
:mod:`passflow.providers.skycore.errors`: throttling codes (E106, E113) are retried with backoff and
widen the limiter's margin; every other code is the vendor's answer and is returned as is. HTTP-level
trouble (429, 5xx, timeouts, connection errors) is retried with
:class:`~passflow.providers.http.retry.RetryPolicy`, each attempt taking one slot of the shared
:class:`~passflow.providers.http.limiter.RateLimiter`, backoff sleeping outside the slot.

The API key is never part of a result, a log line or an error text (every text is scrubbed of it).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from passflow.errors import ConfigError
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.pool_shards import ShardedPoolTransport
from passflow.providers.http.retry import RetryPolicy
from passflow.providers.skycore.errors import classify
from passflow.secrets import redact, register_secret

__all__ = ["ACTIONS", "CallResult", "SkycoreApiClient", "UpdateResult"]

#: the v3 functions passflow calls (the body's ``action``)
ACTIONS = frozenset({"updatepassdata", "generatepass", "getpassdata", "getPassIds", "getPassTemplates"})


@dataclass(frozen=True)
class CallResult:
    """The result of one API call (all its attempts). ``error`` and ``error_code`` never hold secrets;
    ``retryable``: the failure was transient, so a later run may try again."""

    ok: bool
    status: int | None
    error_code: str | None
    error: str | None
    attempts: int
    retryable: bool = False
    data: dict[str, Any] | None = None


UpdateResult = CallResult  # the name callers used before every action shared one result type


class SkycoreApiClient:
    """One pooled HTTP client for one Skycore account. Use as ``async with SkycoreApiClient(...)``."""

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str,
        limiter: RateLimiter,
        api_key_in: Literal["header", "body"] = "header",
        policy: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("the Skycore API key must not be empty", key="skycore.api_key")
        self.limiter = limiter
        self._key = api_key
        self._key_in = api_key_in
        register_secret(api_key)
        self._url = api_url
        self._policy = policy or RetryPolicy()
        self._rng = rng
        if transport is None:  # the same pools and send-time feedback to the limiter as Passmachine's
            transport = ShardedPoolTransport(limiter.max_in_flight)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": "passflow"},
        )

    def __repr__(self) -> str:  # never the key
        return f"SkycoreApiClient(api_url={self._url!r}, limiter={self.limiter!r})"

    async def __aenter__(self) -> SkycoreApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def request(self, action: str, fields: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """Headers and body of one call (what the contract fixtures pin down)."""
        body: dict[str, Any] = {"action": action, **fields}
        headers = {"Content-Type": "application/json"}
        if self._key_in == "body":
            body["api-key"] = self._key
        else:
            headers["X-Api-Key"] = self._key
        return headers, json.dumps(body, ensure_ascii=False).encode()

    async def update_pass(self, body: dict[str, Any]) -> CallResult:
        """``updatepassdata``: ``pass-id``, ``pass-template-id``, ``pass-data``, optional ``priority``."""
        return await self.call("updatepassdata", body)

    async def get_pass_templates(self) -> CallResult:
        return await self.call("getPassTemplates", {})

    async def get_pass_data(self, pass_id: str, template_id: str | None = None) -> CallResult:
        fields = {"pass-id": pass_id} | ({"pass-template-id": template_id} if template_id else {})
        return await self.call("getpassdata", fields)

    async def get_pass_ids(self, template_id: str) -> CallResult:
        return await self.call("getPassIds", {"pass-template-id": template_id})

    async def generate_pass(self, body: dict[str, Any]) -> CallResult:
        """``generatepass`` — not idempotent (a reused ``pass-id`` is refused): reconcile with
        ``getpassdata`` before retrying a call whose outcome was lost."""
        return await self.call("generatepass", body)

    async def call(self, action: str, fields: dict[str, Any]) -> CallResult:
        """One API call; see the module docstring for how outcomes are classified."""
        headers, content = self.request(action, fields)
        policy, attempts, last = self._policy, 0, "no attempt"
        status: int | None = None
        while attempts < policy.max_attempts:
            attempts += 1
            async with self.limiter.slot():
                try:
                    response: httpx.Response | BaseException = await self._http.post(
                        self._url, content=content, headers=headers
                    )
                except httpx.RequestError as exc:
                    response = exc
            outcome = policy.classify(response, reauthed=True)  # no token to refresh: a 401 is final
            status = outcome.status
            retry_after = outcome.retry_after
            if outcome.kind == "ok":
                data = outcome.data or {}
                if data.get("status") == "success":
                    return CallResult(True, status, None, None, attempts, data=data)
                code = data.get("error-code")
                info = data.get("error-info") or "no error-info"
                code = code if isinstance(code, str) and code else "unknown"
                text = redact(f"{code}: {info}"[:300])
                row = classify(code)
                if row is None or row.cls != "throttle":
                    return CallResult(False, status, code, text, attempts, data=data)
                # E106 / E113: the account's rate was exceeded; slow the whole run and try again.
                self.limiter.refused()
                last = text
                if attempts >= policy.max_attempts:
                    return CallResult(
                        False,
                        status,
                        code,
                        f"gave up after {attempts} attempts: {text}",
                        attempts,
                        retryable=True,
                        data=data,
                    )
                await asyncio.sleep(policy.delay(attempts, None, self._rng))
                continue
            last = redact(outcome.reason)
            if outcome.kind == "permanent":
                return CallResult(False, status, f"HTTP{status}" if status else "error", last, attempts)
            if status == 429:
                self.limiter.refused()  # the vendor counted more than we did: widen the margin
            if retry_after is not None:
                self.limiter.pause_for(retry_after)
            if attempts < policy.max_attempts:
                await asyncio.sleep(policy.delay(attempts, retry_after, self._rng))
        code = f"HTTP{status}" if status else "network"
        return CallResult(
            False, status, code, f"gave up after {attempts} attempts: {last}", attempts, retryable=True
        )
