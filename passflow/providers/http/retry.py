"""Shared HTTP retry policy for vendor clients: classify an outcome, back off, honour ``Retry-After``.

Vendor clients (Passmachine now, a Skycore update client later) send one HTTP attempt at a time and
ask :meth:`RetryPolicy.classify` what to do with the result:

========== ======================================================================================
kind        when
========== ======================================================================================
ok          2xx with a JSON object body (or an empty body)
retry       408, 429, 5xx; timeouts; connection errors; a 2xx whose body is not a JSON object
reauth      401, the first time (the caller refreshes its token and tries again)
permanent   any other 4xx (with the vendor's message), a second 401, 3xx, an unusable URL
========== ======================================================================================

Besides the kind, an :class:`Outcome` says whether the vendor **may have acted** on the request
(``maybe_processed``). That matters only for calls that are not idempotent (creating a pass): a
read timeout, a connection dropped after the request was sent, a 500/502/504, or a 2xx we cannot
read may all hide a created pass, while a 429, a 408, a 503 with ``Retry-After``, a 401 or a failure
to *connect* prove that nothing happened. The caller decides what to do (reconcile first, or report).

Messages in an :class:`Outcome` never include request headers (only exception text, status codes and
the vendor's own error message), so credentials cannot leak through them; clients still redact
their secrets from any text they surface, as defence in depth.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

__all__ = [
    "MAX_RETRY_AFTER_S",
    "Outcome",
    "OutcomeKind",
    "RetryPolicy",
    "vendor_message",
    "parse_retry_after",
]

MAX_RETRY_AFTER_S = 300.0
OutcomeKind = Literal["ok", "retry", "reauth", "permanent"]

# Exceptions raised before any byte of the request left: the vendor cannot have acted.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def parse_retry_after(
    value: str | None, now: datetime | None = None, *, max_delay: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (``"120"``, ``"1.5"``) or an HTTP
    date (``"Wed, 21 Oct 2026 07:28:00 GMT"``). Clamped to ``[0, max_delay]``; garbage → None.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # older Pythons returned None for some garbage
            return None
        if when.tzinfo is None:  # "-0000" means UTC with unknown origin (RFC 5322)
            when = when.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), max_delay)


def vendor_message(response: httpx.Response, limit: int = 200) -> str:
    """The vendor's own error text: JSON ``error`` / ``error.message`` / ``message`` / ``error-info``
    (Skycore, with its ``error-code``), else the first ``limit`` characters of the body."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("code")
            if isinstance(msg, str) and msg:
                return msg[:limit]
        if isinstance(err, str) and err:
            return err[:limit]
        msg = body.get("message")
        if isinstance(msg, str) and msg:
            return msg[:limit]
        info = body.get("error-info")
        if isinstance(info, str) and info:
            code = body.get("error-code")
            return (f"{code}: {info}" if isinstance(code, str) and code else info)[:limit]
        detail = body.get("detail")  # FastAPI-style validation errors
        if detail:
            return (detail if isinstance(detail, str) else json.dumps(detail))[:limit]
    try:
        text = response.text.strip()
    except (UnicodeDecodeError, LookupError):
        text = ""
    return text[:limit] or (response.reason_phrase or "no message")


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt means for the caller."""

    kind: OutcomeKind
    reason: str  # short, human-readable, secret-free ("HTTP 429", "ReadTimeout: timed out")
    status: int | None = None
    data: dict[str, Any] | None = None  # parsed JSON object of a 2xx
    retry_after: float | None = None  # seconds, from a Retry-After header of a retryable answer
    maybe_processed: bool = False  # the vendor may have acted on the request (see module docstring)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a cap on attempts, and outcome classification."""

    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 20.0
    max_retry_after: float = MAX_RETRY_AFTER_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay after failed attempt number ``attempt`` (1-based):
        uniform in ``[0, min(max_delay, base_delay * 2**(attempt-1))]``. Jitter spreads retries of
        many concurrent requests so they do not hit the vendor again in lockstep."""
        cap = min(self.max_delay, self.base_delay * (2 ** max(attempt - 1, 0)))
        return (rng or random).uniform(0.0, cap)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Delay before the next attempt: the backoff, but never less than the vendor's Retry-After."""
        wait = self.backoff(attempt, rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait

    def classify(
        self,
        outcome: httpx.Response | BaseException,
        *,
        reauthed: bool = False,
        now: datetime | None = None,
    ) -> Outcome:
        """Classify a response or the exception an attempt raised.

        ``reauthed``: the token was already refreshed once for this call, so another 401 is final.
        Exceptions that are not ``httpx.RequestError`` are programming errors and are classified
        ``permanent`` (callers normally let them propagate instead).
        """
        if isinstance(outcome, BaseException):
            return self._classify_exception(outcome)
        return self._classify_response(outcome, reauthed=reauthed, now=now)

    # -- internals ----------------------------------------------------------------------------

    def _classify_exception(self, exc: BaseException) -> Outcome:
        name = type(exc).__name__
        text = str(exc).strip()
        reason = f"{name}: {text[:200]}" if text else name
        if isinstance(exc, httpx.UnsupportedProtocol):
            return Outcome("permanent", reason)  # a bad base URL: retrying cannot help
        if isinstance(exc, _NOT_SENT):
            return Outcome("retry", reason, maybe_processed=False)
        if isinstance(exc, (httpx.TransportError, httpx.DecodingError)):
            # ReadTimeout, WriteTimeout, ReadError, RemoteProtocolError (dropped connection), ...:
            # the request may have been received and acted on.
            return Outcome("retry", reason, maybe_processed=True)
        if isinstance(exc, httpx.RequestError):  # TooManyRedirects and the like
            return Outcome("permanent", reason, maybe_processed=True)
        return Outcome("permanent", reason, maybe_processed=True)

    def _classify_response(
        self, response: httpx.Response, *, reauthed: bool, now: datetime | None
    ) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            if not response.content.strip():
                return Outcome("ok", f"HTTP {status}", status=status)
            try:
                body = response.json()
            except (ValueError, UnicodeDecodeError):
                body = None
            if isinstance(body, dict):
                return Outcome("ok", f"HTTP {status}", status=status, data=body)
            # The vendor answered success but we cannot read what it did: it did act, so for a create
            # this must be reconciled, never blindly repeated.
            return Outcome(
                "retry", f"HTTP {status} with an unreadable body", status=status, maybe_processed=True
            )

        if status == 401:
            msg = vendor_message(response)
            if reauthed:
                return Outcome("permanent", f"HTTP 401 after a token refresh: {msg}", status=status)
            return Outcome("reauth", f"HTTP 401: {msg}", status=status)

        retry_after = parse_retry_after(
            response.headers.get("retry-after"), now, max_delay=self.max_retry_after
        )
        if status in (408, 429):
            return Outcome("retry", f"HTTP {status}", status=status, retry_after=retry_after)
        if status >= 500:
            # A 503 with Retry-After is the vendor shedding load before doing anything; other 5xx
            # (500 crash mid-way, 502/504 from a gateway that may have forwarded the request) may hide
            # a completed action.
            not_acted = status == 503 and retry_after is not None
            return Outcome(
                "retry",
                f"HTTP {status}: {vendor_message(response, 120)}",
                status=status,
                retry_after=retry_after,
                maybe_processed=not not_acted,
            )
        if 300 <= status < 400:
            where = response.headers.get("location", "")
            return Outcome(
                "permanent", f"HTTP {status}: unexpected redirect {where[:120]}".rstrip(), status=status
            )
        return Outcome("permanent", f"HTTP {status}: {vendor_message(response)}", status=status)
