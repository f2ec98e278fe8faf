"""Async Passmachine client: bearer token, create / look up / get / patch passes, safe retries.

Wire protocol: ``docs/sandbox-protocol.md`` (the sandbox implements it; the real base URL is
``https://api.passmachine.cz``). One :class:`PassmachineClient` owns one pooled
``httpx.AsyncClient`` and shares a :class:`~passflow.providers.http.limiter.RateLimiter` with everything else that
talks to the same account. Every pass call attempt takes one limiter slot for exactly the duration of
that attempt; backoff sleeps happen *outside* the slot. Token fetches do not take a slot: all queued
requests wait for the token at the head of the limiter's line, so the fetch must not queue behind
them; it is rare, and the vendor's throughput limit is about pass calls (the sandbox does not count
``/authenticate`` either).

Tokens
------
:class:`TokenManager` gets a bearer token from ``GET /authenticate?validTo=…`` (credentials as HTTP
Basic or as ``X-Public-Token``/``X-Secret-Token`` headers: ``ClientSettings.auth_style``), and
refreshes it ``refresh_margin_s`` before it expires (the vendor's ``validTo`` answer wins over the
one we asked for) and once when a call gets a 401. Refreshes are single-flight: every caller that
needs one awaits the same fetch (a shared task), and each token carries a generation number so a
401 for an *old* token, arriving after someone already refreshed, just picks up the new token
instead of fetching another. The token is read when the request gets its limiter slot, not when it
starts queueing, so after a revocation only the requests already in flight see a 401, not the whole
queue. A second 401 within one call is final only if the refreshed token never worked; a token that
worked and then fails was revoked or expired meanwhile and is refreshed again (within
``max_attempts``).

Retries (see :mod:`passflow.providers.http.retry` for the classification)
--------------------------------------------------------------------------
* 429 / 503 with ``Retry-After``: the whole limiter is paused for that long (the limit is shared by
  all requests), and this request waits at least that long too.
* A read/write timeout keeps its limiter slot for another ``timeout_s`` (released in the
  background): the vendor is most likely still working on it and counting it as in flight.
* 408, 429, 5xx, timeouts, connection errors, unreadable 2xx: exponential backoff with full jitter,
  at most ``max_attempts`` HTTP attempts per call; then ``CallResult(ok=False, permanent=False,
  error="gave up after N attempts: <last reason>")``.
* 401: refresh the token once and retry; a second 401 is permanent (unless that token had worked).
* Other 4xx: permanent, ``error`` carries the vendor's message; never retried.

Idempotency of ``create_pass``
------------------------------
Creating a pass is not idempotent and the vendor has no (public) idempotency key, so a blind retry
can issue a customer two passes. ``create_pass`` therefore separates outcomes by whether the vendor
*may have acted*:

* **Provably not acted** — 429, 408, 503 with ``Retry-After``, 401, a failure to connect (connect
  error/timeout, pool timeout): retried like any other call.
* **Ambiguous** — read/write timeout, connection dropped after sending, 500/502/504, a 2xx we cannot
  read (or without ``data.id``): the request may have created the pass. With ``reconcile=True``
  (default) the client waits ``reconcile_delay_s`` (default ``timeout_s``, so a slow original
  request can finish; the wait holds no limiter slot), looks the pass up by
  ``metadata[lookup_metadata_key]`` (``GET …/passes?metadata.registered=…``) and, if a pass with the
  same template and metadata exists, returns it (``reconciled=True``) instead of creating another;
  only if none exists does it create again. With ``reconcile=False``, or when the lookup key is
  missing from the metadata, or the lookup itself fails, it returns at once with ``ambiguous=True``
  and never re-creates — the caller keeps the row pending and reconciles later.

A residual race remains: a vendor that takes longer than ``timeout_s + reconcile_delay_s`` to finish
the original request can still create a duplicate after our lookup found nothing. A final result
whose last attempt was ambiguous keeps ``ambiguous=True``; callers should reconcile such rows (and
count duplicates with :meth:`PassmachineClient.find_passes`) at the end of a run. Reconciliation can
only tell campaigns apart by what is in the metadata, so put a campaign key there.

Secrets
-------
The public/secret tokens and bearer tokens are held in :class:`Secret` wrappers whose ``repr``/``str``
are masked; no ``repr`` in this module shows them, and request headers are never formatted into a
message. Every error text that leaves the client is additionally scrubbed of every secret value.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from passflow.errors import ConfigError, VendorError
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.pool_shards import ShardedPoolTransport
from passflow.providers.http.retry import MAX_RETRY_AFTER_S, Outcome, RetryPolicy
from passflow.secrets import Secret, redact, register_secret

__all__ = [
    "AuthenticationError",
    "BearerToken",
    "CallResult",
    "PassmachineClient",
    "PassmachineError",
    "ClientSettings",
    "Secret",
    "TokenManager",
    "pass_id_of",
    "pass_link_of",
]

log = logging.getLogger(__name__)

# JSON Patch operations that give the same document when applied twice (``add``/``copy`` only when
# they set an object member, not when they append to an array with "/-").
_IDEMPOTENT_PATCH_OPS = {"replace", "test", "add", "copy"}


# --------------------------------------------------------------------------------------------------
# Settings, results, errors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Where and how the client talks to Passmachine. Holds no secrets (those are passed to the client).
    A campaign's come from :meth:`from_campaign`; the rest are connection tuning."""

    base_url: str
    account: str
    auth_style: Literal["basic", "headers"] = "basic"  # how /authenticate gets the public/secret tokens
    token_field: str = "token"  # JSON field of the token in /authenticate's answer
    token_ttl_s: int = 3600
    refresh_margin_s: int = 60
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_attempts: int = 6
    backoff_base_s: float = 0.2
    backoff_max_s: float = 20.0
    lookup_metadata_key: str = "registered"
    max_retry_after_s: float = MAX_RETRY_AFTER_S  # longer Retry-After values are clamped to this
    # Wait after an ambiguous create before looking the pass up; None = timeout_s (a request that
    # timed out after timeout_s has most likely finished at the vendor within another timeout_s).
    reconcile_delay_s: float | None = None

    @classmethod
    def from_campaign(cls, section: Any, limits: Any) -> ClientSettings:
        """From the campaign's ``[passmachine]`` section and ``[limits]``."""
        return cls(
            base_url=section.api_base_url,
            account=section.account,
            auth_style=section.auth_style,
            token_field=section.token_field,
            token_ttl_s=section.token_ttl_s,
            timeout_s=limits.timeout_s,
            max_attempts=limits.max_attempts,
            lookup_metadata_key=section.lookup_metadata_key,
        )

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url must start with http:// or https://, got {self.base_url!r}", key="base_url"
            )
        if not self.account:
            raise ConfigError("account must not be empty", key="account")
        if self.auth_style not in ("basic", "headers"):
            raise ConfigError(
                f"auth_style must be 'basic' or 'headers', got {self.auth_style!r}", key="auth_style"
            )
        if self.token_ttl_s <= 0 or self.refresh_margin_s < 0:
            raise ConfigError("token_ttl_s must be > 0 and refresh_margin_s >= 0", key="token_ttl_s")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("timeouts must be > 0", key="timeout_s")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1", key="max_attempts")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.backoff_base_s,
            max_delay=self.backoff_max_s,
            max_retry_after=self.max_retry_after_s,
        )


@dataclass
class CallResult:
    """The result of one client call (all its HTTP attempts). ``error`` never contains secrets.

    ``ambiguous``: the vendor may have acted although we have no answer (only for non-idempotent
    calls); the caller must reconcile before repeating. ``reconciled``: an ambiguous create was
    resolved by finding the pass the vendor had created; ``data`` is that pass (``{"data": {...}}``).
    """

    ok: bool
    status: int | None
    data: dict[str, Any] | None
    error: str | None
    attempts: int
    permanent: bool = False
    ambiguous: bool = False
    reconciled: bool = False


class PassmachineError(VendorError):
    """A Passmachine call failed (raised by the list-returning :meth:`PassmachineClient.find_passes`
    and by token fetches). The message is secret-free."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


class AuthenticationError(PassmachineError):
    """``/authenticate`` refused the credentials (permanent) or kept failing (transient)."""


def pass_id_of(data: Mapping[str, Any] | None) -> str | None:
    """``data.id`` of a create/get answer (``{"data": {"id": …}}``), or None."""
    doc = data.get("data") if isinstance(data, Mapping) else None
    pid = doc.get("id") if isinstance(doc, Mapping) else None
    return pid if isinstance(pid, str) and pid else None


def pass_link_of(data: Mapping[str, Any] | None) -> str | None:
    """``data.ro.microsite.url`` of a create/get answer (the pass download link), or None."""
    node: Any = data
    for key in ("data", "ro", "microsite", "url"):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, str) and node else None


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------


# Credentials are held in passflow.secrets.Secret and every derived one is registered there, so
# passflow.secrets.redact scrubs them from any text (the one redaction mechanism).


# --------------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BearerToken:
    """One bearer token; ``generation`` counts fetches, so a 401 can name the token it rejected."""

    value: Secret = field(repr=False)
    generation: int
    expires_at: float  # wall clock (unix seconds)
    refresh_at: float
    # Last moment a request may start with it. A fixed 1 s guard would make a token the vendor
    # grants for ≤ 1 s unusable from the start (every request would refetch forever).
    usable_until: float = 0.0


class TokenManager:
    """Bearer token for one account: fetched lazily, refreshed before expiry and once on a 401,
    single-flight (concurrent callers share one ``/authenticate`` call)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: ClientSettings,
        *,
        public_token: Secret,
        secret_token: Secret,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._settings = settings
        self._public = public_token
        self._secret = secret_token
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._token: BearerToken | None = None
        self._generation = 0
        self._inflight: asyncio.Future[BearerToken] | None = None
        self._proven: set[int] = set()  # generations the vendor has accepted at least once
        self._fatal: AuthenticationError | None = None  # credentials refused: no point asking again
        self.fetches = 0  # successful /authenticate calls
        self.auth_requests = 0  # HTTP attempts to /authenticate

    @property
    def generation(self) -> int:
        return self._generation

    def __repr__(self) -> str:
        state = f"generation={self._generation}"
        if self._token is not None:
            state += f", expires_in={self._token.expires_at - self._clock():.0f}s"
        return f"TokenManager(account={self._settings.account!r}, auth_style={self._settings.auth_style!r}, {state})"

    async def get(self) -> BearerToken:
        """A token that is valid for at least the refresh margin."""
        tok = self._token
        if tok is not None and self._clock() < tok.refresh_at and self.current() is tok:
            return tok
        if self._fatal is not None:
            raise self._fatal
        return await self._refresh()

    def current(self) -> BearerToken | None:
        """The installed token if it is still usable, without waiting (None while it is being replaced)."""
        tok = self._token
        if tok is not None and self._clock() < tok.usable_until:
            return tok
        return None

    def confirm(self, generation: int) -> None:
        """The vendor accepted this token (a 2xx was answered to a request carrying it)."""
        self._proven.add(generation)

    def proven(self, generation: int) -> bool:
        """Whether this token ever worked: a 401 for a proven token means it was revoked or expired,
        not that our credentials or account are wrong."""
        return generation in self._proven

    async def refresh_after_401(self, generation: int) -> BearerToken:
        """The vendor rejected the token of ``generation``: replace it, unless that already happened."""
        tok = self._token
        if tok is not None and tok.generation != generation and self._clock() < tok.refresh_at:
            return tok  # someone refreshed since that request started
        if tok is not None and tok.generation == generation:
            self._token = None  # rejected: never hand it out again
        if self._fatal is not None:
            raise self._fatal
        return await self._refresh()

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    # -- internals ----------------------------------------------------------------------------

    async def _refresh(self) -> BearerToken:
        if self._inflight is None:
            task = asyncio.ensure_future(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        # shield: a cancelled caller must not cancel the fetch the other callers are waiting for.
        return await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Future[BearerToken]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved; the waiters got it

    async def _fetch(self) -> BearerToken:
        s = self._settings
        attempts = 0
        last = "no attempt"
        while attempts < self._policy.max_attempts:
            now = self._clock()
            asked_valid_to = int(now) + s.token_ttl_s
            headers = {"Accept": "application/json"}
            auth: httpx.Auth | None = None
            if s.auth_style == "basic":
                auth = httpx.BasicAuth(self._public.reveal(), self._secret.reveal())
            else:
                headers["X-Public-Token"] = self._public.reveal()
                headers["X-Secret-Token"] = self._secret.reveal()
            # Not through the limiter: every queued request is waiting for this token (so it must not
            # queue behind them), it is rare, and the vendor's throughput limit is on pass calls.
            result: httpx.Response | httpx.RequestError
            try:
                result = await self._http.get(
                    "/authenticate",
                    headers=headers,
                    params={"validTo": str(asked_valid_to)},
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=self._timeout,
                )
            except httpx.RequestError as exc:
                result = exc
            attempts += 1
            self.auth_requests += 1
            out = self._policy.classify(result, now=datetime.fromtimestamp(now, UTC))
            if out.kind == "ok":
                try:
                    return self._install(out, asked_valid_to)
                except AuthenticationError as exc:
                    self._fatal = exc
                    raise
            if out.kind != "retry":
                # "reauth" here is a 401 from /authenticate itself: the credentials are wrong.
                hint = " (check the public/secret tokens and auth_style)" if out.kind == "reauth" else ""
                self._fatal = AuthenticationError(
                    redact(f"Passmachine authentication failed: {out.reason}{hint}"),
                    permanent=True,
                    status=out.status,
                )
                raise self._fatal
            last = out.reason
            log.debug("GET /authenticate attempt %d: %s", attempts, redact(out.reason))
            if attempts < self._policy.max_attempts:
                await asyncio.sleep(self._policy.delay(attempts, out.retry_after, self._rng))
        raise AuthenticationError(
            redact(f"Passmachine authentication gave up after {attempts} attempts: {last}"),
            permanent=False,
        )

    def _install(self, out: Outcome, asked_valid_to: int) -> BearerToken:
        s = self._settings
        data = out.data or {}
        value = data.get(s.token_field)
        if not isinstance(value, str) or not value:
            fields = ", ".join(sorted(str(k) for k in data)) or "none"
            raise AuthenticationError(
                f"Passmachine /authenticate answer has no string field {s.token_field!r} "
                f"(fields: {fields}); set token_field",
                permanent=True,
                status=out.status,
            )
        register_secret(value, transient=True)
        now = self._clock()
        valid_to = data.get("validTo")
        # The vendor may shorten the lifetime we asked for; believe its answer.
        expires_at = (
            float(valid_to)
            if isinstance(valid_to, (int, float)) and not isinstance(valid_to, bool) and valid_to > now
            else float(asked_valid_to)
        )
        lifetime = expires_at - now
        # A margin larger than half the lifetime would refresh on every call.
        refresh_at = expires_at - min(float(s.refresh_margin_s), lifetime / 2)
        self._generation += 1
        usable_until = expires_at - min(1.0, lifetime / 4)
        tok = BearerToken(Secret(value), self._generation, expires_at, refresh_at, usable_until)
        self._token = tok
        self.fetches += 1
        log.info("Passmachine token fetched (generation %d, valid for %.0f s)", tok.generation, lifetime)
        return tok


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------


class PassmachineClient:
    """Async Passmachine API client for one account. Use as ``async with PassmachineClient(...)``."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        public_token: str,
        secret_token: str,
        limiter: RateLimiter,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not public_token or not secret_token:
            raise ConfigError("Passmachine public and secret tokens must not be empty", key="credentials")
        self.settings = settings
        self.limiter = limiter
        self._clock = clock
        self._rng = rng
        self._policy = settings.retry_policy()
        register_secret(public_token)
        register_secret(secret_token)
        register_secret(base64.b64encode(f"{public_token}:{secret_token}".encode()).decode("ascii"))
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        # One pooled client; at most max_in_flight pass calls run at once, plus one token fetch.
        # Many small pools instead of one big one: far less CPU per request (see pool_shards).
        if transport is None:
            transport = ShardedPoolTransport(limiter.max_in_flight + 1)
        self._transport = transport
        self._timeout_ext = self._timeout.as_dict()  # what httpcore reads; the same for every pass call
        self._pass_call_base = settings.base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            headers={"User-Agent": "passflow"},
        )
        self.tokens = TokenManager(
            self._http,
            settings,
            public_token=Secret(public_token),
            secret_token=Secret(secret_token),
            policy=self._policy,
            clock=clock,
            rng=rng,
        )
        self._held: set[asyncio.TimerHandle] = set()  # slots kept for timed-out requests
        account = quote(settings.account, safe="")
        self._passes_path = f"/accounts/{account}/passes"

    def __repr__(self) -> str:
        return (
            f"PassmachineClient(base_url={self.settings.base_url!r}, account={self.settings.account!r}, "
            f"auth_style={self.settings.auth_style!r}, limiter={self.limiter!r})"
        )

    async def __aenter__(self) -> PassmachineClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for handle in list(self._held):  # give back slots still held for timed-out requests
            handle.cancel()
            self.limiter.release()
        self._held.clear()
        await self.tokens.aclose()
        await self._http.aclose()

    # -- API ----------------------------------------------------------------------------------

    async def create_pass(
        self,
        *,
        template_id: str,
        template_variables: dict[str, Any],
        metadata: dict[str, Any],
        reconcile: bool = True,
    ) -> CallResult:
        """Create one pass. ``data`` is the vendor's answer: use :func:`pass_id_of` / :func:`pass_link_of`.

        Never creates blindly after an ambiguous failure; see the module docstring.
        """
        body = {"templateId": template_id, "templateVariables": template_variables, "metadata": metadata}
        key = self.settings.lookup_metadata_key
        can_reconcile = reconcile and metadata.get(key) not in (None, "")

        async def find_existing() -> CallResult | None:
            return await self._find_created(template_id, metadata)

        return await self._call(
            "POST",
            self._passes_path,
            content=json.dumps(body).encode(),
            content_type="application/json",
            idempotent=False,
            require_pass=True,
            find_existing=find_existing if can_reconcile else None,
        )

    async def find_passes(self, key: str, value: str) -> list[dict[str, Any]]:
        """Every pass whose ``metadata[key] == value`` (reconciliation lookup).

        Raises :class:`PassmachineError` when the lookup fails (after retries)."""
        result = await self._call(
            "GET", self._passes_path, params={f"metadata.{key}": str(value)}, idempotent=True
        )
        if not result.ok:
            raise PassmachineError(
                f"Passmachine lookup failed: {result.error}", permanent=result.permanent, status=result.status
            )
        items = (result.data or {}).get("data")
        if not isinstance(items, list):
            raise PassmachineError(
                "Passmachine lookup answer has no 'data' list", permanent=True, status=result.status
            )
        return [item for item in items if isinstance(item, dict)]

    async def get_pass(self, pass_id: str) -> CallResult:
        """``GET`` one pass (``data`` is ``{"data": {...}}``); unknown id → permanent 404."""
        return await self._call("GET", self._pass_path(pass_id), idempotent=True)

    async def patch_pass(self, pass_id: str, operations: list[dict[str, Any]]) -> CallResult:
        """Apply an RFC 6902 JSON Patch (e.g. ``replace /templateVariables/fieldValue``).

        Retried after ambiguous failures only when every operation is idempotent (replace, test,
        add/copy to an object member); otherwise an ambiguous failure returns ``ambiguous=True``."""
        idempotent = all(
            isinstance(op, dict)
            and op.get("op") in _IDEMPOTENT_PATCH_OPS
            and not str(op.get("path", "")).endswith("/-")
            for op in operations
        )
        return await self._call(
            "PATCH",
            self._pass_path(pass_id),
            content=json.dumps(operations).encode(),
            content_type="application/json-patch+json",
            idempotent=idempotent,
            require_pass=True,  # a 200 without the patched pass (an error body) is no success
        )

    # -- internals ----------------------------------------------------------------------------

    def _pass_path(self, pass_id: str) -> str:
        return f"{self._passes_path}/{quote(pass_id, safe='')}"

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        idempotent: bool,
        require_pass: bool = False,
        find_existing: Callable[[], Awaitable[CallResult | None]] | None = None,
    ) -> CallResult:
        """All attempts of one call: token, limiter slot, classification, backoff, reconciliation."""
        policy = self._policy
        what = f"{method} {path}"
        attempts = 0
        reauthed = False
        unresolved = False  # an attempt may have acted and no lookup has ruled that out since
        last_reason = "no attempt"
        last_status: int | None = None
        stale_spins = 0
        while attempts < policy.max_attempts:
            try:
                token, result = await self._attempt(
                    method, path, params=params, content=content, content_type=content_type
                )
            except PassmachineError as exc:  # no usable token (credentials refused, or /authenticate down)
                return self._token_failure(exc, attempts, unresolved and not idempotent)
            if token is None or result is None:
                # Defensive: the token vanished between the head-of-line check and the start (not
                # expected, as nothing awaits in between). No request was sent; try again.
                stale_spins += 1
                if stale_spins > 100:
                    return CallResult(
                        ok=False, status=None, data=None, error="no usable bearer token", attempts=attempts
                    )
                continue
            attempts += 1
            if isinstance(result, httpx.Response) and result.is_success:
                self.tokens.confirm(token.generation)
            # A second 401 is final only if the refreshed token never worked; a token that worked and
            # then fails was revoked or expired in the meantime, and deserves another refresh.
            out = policy.classify(
                result, reauthed=reauthed and not self.tokens.proven(token.generation), now=self._now_dt()
            )
            if out.kind == "ok" and require_pass and pass_id_of(out.data) is None:
                # Success without a pass id: the pass probably exists, but we cannot record it.
                out = Outcome(
                    "retry", f"HTTP {out.status} without data.id", status=out.status, maybe_processed=True
                )
            reason = redact(out.reason)
            log.debug("%s attempt %d: %s", what, attempts, reason)

            if out.kind == "ok":
                return CallResult(ok=True, status=out.status, data=out.data, error=None, attempts=attempts)
            if out.kind == "permanent":
                log.warning("%s failed permanently: %s", what, reason)
                return CallResult(
                    ok=False, status=out.status, data=None, error=reason, attempts=attempts, permanent=True
                )
            last_reason, last_status = reason, out.status
            if out.kind == "reauth":
                reauthed = True
                try:
                    await self.tokens.refresh_after_401(token.generation)
                except PassmachineError as exc:
                    return self._token_failure(exc, attempts, unresolved and not idempotent)
                continue

            # retry
            if out.status == 429:
                self.limiter.refused()  # the vendor counted more than we did: widen the margin
            if out.retry_after is not None and out.status in (429, 503):
                self.limiter.pause_for(out.retry_after)  # the limit is shared: everyone waits
            delay = policy.delay(attempts, out.retry_after, self._rng)

            if out.maybe_processed and not idempotent:
                unresolved = True
                if find_existing is None:
                    log.warning("%s outcome unknown (%s); not repeating it", what, reason)
                    return CallResult(
                        ok=False,
                        status=out.status,
                        data=None,
                        error=f"outcome unknown, not repeated: {reason}",
                        attempts=attempts,
                        ambiguous=True,
                    )
                # Give a slow original request time to finish before asking whether it did.
                settle = self.settings.reconcile_delay_s
                await asyncio.sleep(max(delay, self.settings.timeout_s if settle is None else settle))
                found = await find_existing()
                if found is not None:
                    found.attempts = attempts
                    if not found.ok:  # the lookup failed: cannot tell, so do not re-create
                        found.error = redact(f"outcome unknown ({reason}); {found.error}")
                    return found
                unresolved = False  # vendor has no such pass: creating again is safe
                continue

            if attempts < policy.max_attempts:
                await asyncio.sleep(delay)

        error = f"gave up after {attempts} attempts: {last_reason}"
        log.warning("%s %s", what, error)
        return CallResult(
            ok=False,
            status=last_status,
            data=None,
            error=error,
            attempts=attempts,
            permanent=False,
            ambiguous=unresolved and not idempotent,
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None,
        content: bytes | None,
        content_type: str | None,
    ) -> tuple[BearerToken | None, httpx.Response | httpx.RequestError | None]:
        """One HTTP attempt in one limiter slot. The token is made valid at the head of the limiter's
        line (``before_start``) and read right at the start, so a request that queued while the token
        was replaced carries the new one (after a revocation only the requests already in flight get a
        401, not the whole queue), and no start is spent waiting for a token. Returns ``(None, None)``
        without sending if no usable token is installed at that moment (should not happen)."""
        await self.limiter.acquire(before_start=self.tokens.get)
        release_now = True
        try:
            token = self.tokens.current()
            if token is None:
                return None, None
            headers = {
                "Authorization": f"Bearer {token.value.reveal()}",
                "X-Timestamp": str(int(self._clock())),
                "Accept": "application/json",
            }
            if content_type:
                headers["Content-Type"] = content_type
            try:
                response = await self._send(method, path, headers=headers, params=params, content=content)
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                # We gave up waiting, but the vendor is probably still working on the request and
                # counting it against its in-flight limit: keep the slot for another timeout_s so a
                # slow vendor is not handed more concurrent work than the limit (it would answer 429).
                release_now = False
                self._hold_slot(self.settings.timeout_s)
                return token, exc
            except httpx.RequestError as exc:
                return token, exc
            return token, response
        finally:
            if release_now:
                self.limiter.release()

    async def _send(
        self, method: str, path: str, *, headers: dict[str, str], params: dict[str, str] | None, content: bytes | None
    ) -> httpx.Response:
        """One pass call straight to the transport, body read. ``AsyncClient.request`` would add URL
        merging, cookie extraction, auth, redirect and event-hook layers that pass calls use none of:
        ~17 % of the CPU per request (py-spy at 200/s), which bounds one process near 500/s."""
        request = httpx.Request(
            method,
            httpx.URL(self._pass_call_base + path, params=params),
            headers={"User-Agent": "passflow", **headers},
            content=content,
            extensions={"timeout": self._timeout_ext},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _hold_slot(self, seconds: float) -> None:
        """Release one limiter slot ``seconds`` from now (without making the caller wait)."""
        handle: asyncio.TimerHandle | None = None

        def release() -> None:
            self._held.discard(handle)  # type: ignore[arg-type]
            self.limiter.release()

        handle = asyncio.get_running_loop().call_later(seconds, release)
        self._held.add(handle)

    def _token_failure(self, exc: PassmachineError, attempts: int, ambiguous: bool) -> CallResult:
        return CallResult(
            ok=False,
            status=exc.status,
            data=None,
            error=redact(str(exc)),
            attempts=attempts,
            permanent=exc.permanent,
            ambiguous=ambiguous,
        )

    async def _find_created(self, template_id: str, metadata: dict[str, Any]) -> CallResult | None:
        """After an ambiguous create: the pass the vendor made for this request, None if there is none,
        or a failed ``CallResult(ambiguous=True)`` if the lookup itself failed."""
        key = self.settings.lookup_metadata_key
        try:
            passes = await self.find_passes(key, str(metadata[key]))
        except PassmachineError as exc:
            return CallResult(
                ok=False,
                status=exc.status,
                data=None,
                error=f"reconciliation lookup failed: {redact(str(exc))}",
                attempts=0,
                ambiguous=True,
            )

        def same(a: Any, b: Any) -> bool:
            return a == b or str(a) == str(b)

        def is_ours(p: dict[str, Any]) -> bool:
            # Same template, and every metadata field the vendor kept has our value: a pass of another
            # campaign for the same customer (e.g. a different campaign key in metadata) is not ours.
            stored = p.get("metadata") if isinstance(p.get("metadata"), dict) else {}
            return (
                isinstance(p.get("id"), str)
                and same(p.get("templateId", template_id), template_id)
                and all(same(stored[k], v) for k, v in metadata.items() if k in stored)
            )

        matches = [p for p in passes if is_ours(p)]
        if not matches:
            log.info("reconciliation: no pass with metadata.%s for this request; creating it", key)
            return None
        matches.sort(key=lambda p: str(p.get("createdAt", "")))
        if len(matches) > 1:
            log.warning(
                "reconciliation: %d passes match metadata.%s=%s; using the oldest (%s)",
                len(matches),
                key,
                metadata[key],
                matches[0]["id"],
            )
        log.info("reconciliation: found pass %s created by an ambiguous attempt", matches[0]["id"])
        return CallResult(
            ok=True, status=200, data={"data": matches[0]}, error=None, attempts=0, reconciled=True
        )


def refusal(result: CallResult) -> str | None:
    """The vendor's message when it refused the credentials or the account (401/403 for good)."""
    if not result.ok and result.permanent and result.status in (401, 403):
        return result.error or f"HTTP {result.status}"
    return None
