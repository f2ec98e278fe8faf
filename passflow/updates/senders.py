"""Send rendered update requests to the vendor, a chunk at a time, with the same limiter, retries and
token handling as issuance. One sender per run: its event loop, HTTP pool and limiter outlive the
chunks, so the vendor's limit holds across the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

import httpx

from passflow.asyncloop import BackgroundLoop
from passflow.config import Campaign
from passflow.limiter import RateLimiter
from passflow.providers.http_retry import RetryPolicy
from passflow.providers.skycore_api import SkycoreApiClient
from passflow.secrets import resolve_secret


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    retryable: bool = False


class Sender(ABC):
    """Sends ``(pass_id, request JSON)`` pairs; results in the same order."""

    calls = 0  # HTTP attempts made

    @abstractmethod
    def send(self, items: list[tuple[str, str]]) -> list[SendResult]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client and its loop."""


class SkycoreSender(Sender):
    def __init__(self, campaign: Campaign, transport: httpx.AsyncBaseTransport | None = None) -> None:
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

    def send(self, items: list[tuple[str, str]]) -> list[SendResult]:
        async def one(body: str) -> SendResult:
            r = await self._client.update_pass(self.pass_type, json.loads(body))
            self.calls += r.attempts
            return SendResult(r.ok, r.error_code, r.error, r.attempts, r.retryable)

        async def run() -> list[SendResult]:
            return list(await asyncio.gather(*(one(body) for _, body in items)))

        return self._loop.run(run())

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

        self._issuer = PassmachineIssuer(campaign, now)
        self._issuer.transport = transport
        self._loop, self._client = self._issuer._ensure_client()

    def send(self, items: list[tuple[str, str]]) -> list[SendResult]:
        async def one(pass_id: str, ops: str) -> SendResult:
            r = await self._client.patch_pass(pass_id, json.loads(ops))
            self.calls += r.attempts
            if r.ok:
                return SendResult(True, attempts=r.attempts)
            code = f"HTTP{r.status}" if r.status else "network"
            return SendResult(False, code, r.error, r.attempts, retryable=not r.permanent)

        async def run() -> list[SendResult]:
            return list(await asyncio.gather(*(one(p, ops) for p, ops in items)))

        return self._loop.run(run())

    def close(self) -> None:
        self._issuer.close()


def make_sender(campaign: Campaign, now: datetime, transport: httpx.AsyncBaseTransport | None = None) -> Sender:
    if campaign.provider == "skycore":
        return SkycoreSender(campaign, transport)
    return PassmachineSender(campaign, now, transport)
