"""The update sender contract: send rendered update requests to the vendor, a chunk at a time, with
the same limiter, retries and token handling as issuance. One sender per run: its event loop, HTTP
pool and limiter outlive the chunks, so the vendor's limit holds across the whole run. Each
provider's package has its sender (``passflow/providers/<name>/updates.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from passflow.providers.http.failstop import FailureStop
from passflow.providers.http.loop import BackgroundLoop

if TYPE_CHECKING:  # annotations only: the campaign model imports the provider registry
    from passflow.config import Campaign


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
        # Subclasses set ``self._loop`` (the run's background loop their client lives on).
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


