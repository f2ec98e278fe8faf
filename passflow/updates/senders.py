"""Send rendered update requests to the vendor, a chunk at a time, with the same limiter, retries and
token handling as issuance. One sender per run: its event loop, HTTP pool and limiter outlive the
chunks, so the vendor's limit holds across the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

import httpx

from passflow.asyncloop import BackgroundLoop
from passflow.config import Campaign
from passflow.failstop import FailureStop
from passflow.limiter import RateLimiter
from passflow.providers.http_retry import RetryPolicy
from passflow.providers.skycore_api import SkycoreApiClient
from passflow.secrets import resolve_secret

# Skycore refusing the API key (E101), on HTTP 200 or as an HTTP 401/403.
SKYCORE_REFUSED = frozenset({"E101", "HTTP401", "HTTP403"})


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    retryable: bool = False


NOT_SENT = "not_sent"


class Sender(ABC):
    """Sends ``(pass_id, request JSON)`` pairs; results in the same order.

    Stops sending once :attr:`stop` has a reason (refused credentials, or the campaign's
    ``[limits] failure_threshold``); the rest get ``NOT_SENT`` results, retryable by a later run.
    Until one call has succeeded, the first of a batch goes alone: with a wrong key only it is sent.
    """

    calls = 0  # HTTP attempts made

    def __init__(self, campaign: Campaign, vendor: str) -> None:
        self.stop = FailureStop(campaign.limits, vendor)
        self._gate = asyncio.Semaphore(campaign.limits.max_in_flight)
        self._proven = False
        self._loop: BackgroundLoop

    @property
    def stop_reason(self) -> str | None:
        return self.stop.reason

    @abstractmethod
    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        """One update (all its attempts): the result and, when the vendor refused the credentials,
        its message."""

    async def _guarded(self, pass_id: str, body: str) -> SendResult:
        async with self._gate:  # checked when a call could start, not when it was queued
            if self.stop.reason:
                why = "not sent: " + self.stop.reason.split(":")[0]
                return SendResult(False, NOT_SENT, why, 0, retryable=True)
            result, refused = await self._one(pass_id, body)
            self.stop.record(result.ok, refused=refused)  # before the next call may start
        self.calls += result.attempts
        self._proven = self._proven or result.ok
        # Refused credentials say nothing about the pass: a later run with the right ones retries it.
        return dataclasses.replace(result, retryable=True) if refused else result

    def send(self, items: list[tuple[str, str]]) -> list[SendResult]:
        async def run() -> list[SendResult]:
            head: list[SendResult] = []
            rest = items
            if not self._proven and items:
                head, rest = [await self._guarded(*items[0])], items[1:]
            return head + list(await asyncio.gather(*(self._guarded(p, b) for p, b in rest)))

        return self._loop.run(run())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client and its loop."""


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


class PassmachineSender(Sender):
    """JSON Patch through the issuer's own client: same token manager, limiter and retry rules."""

    def __init__(
        self, campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        from passflow.issuers.passmachine import PassmachineIssuer

        super().__init__(campaign, "Passmachine")
        self._issuer = PassmachineIssuer(campaign, now)
        self._issuer.transport = transport
        self._loop, self._client = self._issuer._ensure_client()

    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        from passflow.issuers.passmachine import refusal

        r = await self._client.patch_pass(pass_id, json.loads(body))
        if r.ok:
            return SendResult(True, attempts=r.attempts), None
        code = f"HTTP{r.status}" if r.status else "network"
        return SendResult(False, code, r.error, r.attempts, retryable=not r.permanent), refusal(r)

    def close(self) -> None:
        self._issuer.close()


def make_sender(campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None) -> Sender:
    if campaign.provider == "skycore":
        return SkycoreSender(campaign, transport)
    return PassmachineSender(campaign, now, transport)
