"""The callbacks web app: ``POST /callbacks/<campaign>/<provider>`` for every campaign it serves (the
provider's ``CallbackSupport`` parses the body; see ``passflow/providers/<name>/``).

Order of work per request, so that nothing unauthenticated touches the database: read the raw body
→ authenticate (401/403) → parse (400/413/422) → map to a customer through the ledger (422 if the
pass is not ours) → record (idempotent) → emit the Prefect event. Answers are small JSON objects with
a ``reason`` on refusal; a duplicate delivery answers 200 ``{"recorded": false, "duplicate": true}``
so the vendor stops retrying.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from passflow.callbacks.auth import CallbackAuthError, verify
from passflow.callbacks.events import Emitter, emit_pass_event
from passflow.config import Campaign
from passflow.errors import ConfigError
from passflow.providers import provider_of
from passflow.providers.callbacks import MAX_BODY_BYTES, CallbackPayloadError, ParsedCallback
from passflow.providers.spec import CallbackSupport
from passflow.secrets import resolve_secret
from passflow.store.events import CallbackStore, PassEvent
from passflow.store.ledger import utcnow

log = logging.getLogger("passflow.callbacks")


@dataclass
class CampaignEndpoint:
    """What the app needs to serve one campaign's callbacks (secret resolved once, at start-up)."""

    name: str
    provider: str
    secret: str
    schemes: tuple[str, ...]
    max_age_s: float
    emit_events: bool
    store: CallbackStore
    campaign: Campaign
    support: CallbackSupport


def endpoints_for(campaigns: list[Campaign]) -> dict[str, CampaignEndpoint]:
    """Resolve secrets and open stores; a problem stops start-up with a message naming file and key."""
    out: dict[str, CampaignEndpoint] = {}
    stores: dict[str, CallbackStore] = {}
    for c in campaigns:
        file = str(c.path) if c.path else None
        if c.callbacks is None:
            raise ConfigError(
                "no [callbacks] section: add one with secret = { env = \"VAR\" } to receive callbacks",
                file=file,
                key="callbacks",
            )
        if c.name in out:
            raise ConfigError(f"campaign {c.name!r} is given twice", file=file, key="campaign.name")
        provider = provider_of(c)
        if provider.callbacks is None:
            raise ConfigError(f"{provider.title} sends no callbacks passflow can read", file=file, key="callbacks")
        secret = resolve_secret(c.callbacks.secret, file=file, key="callbacks.secret").get_secret_value()
        store = stores.get(c.ledger.url) or stores.setdefault(c.ledger.url, CallbackStore(c.ledger.url))
        out[c.name] = CampaignEndpoint(
            name=c.name,
            provider=c.provider,
            secret=secret,
            schemes=tuple(c.callbacks.auth),
            max_age_s=c.callbacks.max_age_s,
            emit_events=c.callbacks.emit_events,
            store=store,
            campaign=c,
            support=provider.callbacks,
        )
    return out


def _answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status)


def map_customer(ep: CampaignEndpoint, parsed: ParsedCallback) -> tuple[str, str | None]:
    """(customer id, pass id) from the ledger: the pass id decides; an echoed customer id is the fallback.

    An echoed customer id whose ledger row holds this pass id is taken first: that is a primary-key
    read, while finding a customer by pass id scans the campaign's ledger rows (no index on pass_id,
    which would slow every bulk issuance write).
    """
    echoed = parsed.customer_id
    if echoed is not None and parsed.pass_id is not None and ep.store.pass_of_customer(ep.name, echoed) == parsed.pass_id:
        return echoed, parsed.pass_id
    if parsed.pass_id is not None:
        customer = ep.store.customer_for_pass(ep.name, parsed.pass_id)
        if customer is not None:
            if parsed.customer_id not in (None, customer):
                log.warning("callback for pass %s names customer %r; the ledger says %r (ledger wins)",
                            parsed.pass_id, parsed.customer_id, customer)
            return customer, parsed.pass_id
    if parsed.customer_id is not None:
        known = ep.store.pass_of_customer(ep.name, parsed.customer_id)
        if known is not False and (parsed.pass_id is None or known in (None, parsed.pass_id)):
            return parsed.customer_id, parsed.pass_id or known  # type: ignore[return-value]
    what = f"pass {parsed.pass_id!r}" if parsed.pass_id else f"customer {parsed.customer_id!r}"
    raise CallbackPayloadError(f"{what} is not in the ledger of campaign {ep.name!r}")


def create_app(endpoints: dict[str, CampaignEndpoint], *, emitter: Emitter | None = None) -> FastAPI:
    """The app for these campaigns. ``emitter`` replaces ``prefect.events.emit_event`` (tests)."""
    app = FastAPI(title="passflow vendor callbacks", version="1", docs_url=None, redoc_url=None)
    counts: Counter[str] = Counter()
    app.state.counts = counts

    def handle(ep: CampaignEndpoint, provider: str, parsed: ParsedCallback) -> JSONResponse:
        customer, pass_id = map_customer(ep, parsed)
        ev = PassEvent(
            provider=provider,
            campaign=ep.name,
            customer_id=customer,
            pass_id=pass_id,
            event=parsed.event,
            vendor_event_id=parsed.vendor_event_id,
            occurred_at=parsed.occurred_at,
            payload=parsed.payload,
        )
        if not ep.store.record(ev):
            counts["duplicate"] += 1
            return _answer(200, recorded=False, duplicate=True, event=ev.event)
        counts["recorded"] += 1
        emitted = ep.emit_events and emit_pass_event(ev, emitter)
        counts["emitted" if emitted else "not_emitted"] += 1
        log.info("%s %s: %s for customer %s (pass %s)", ep.name, provider, ev.event, customer, pass_id)
        return _answer(200, recorded=True, event=ev.event, customer_id=customer, emitted=emitted)

    async def receive(request: Request, campaign: str, provider: str) -> JSONResponse:
        ep = endpoints.get(campaign)
        if ep is None or ep.provider != provider:
            counts["rejected_unknown"] += 1
            return _answer(404, reason=f"no {provider} campaign {campaign!r} is served here")
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return _answer(413, reason=f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = await request.body()
        except ClientDisconnect:
            return _answer(499, reason="client disconnected")
        try:
            verify(request.headers, body, secret=ep.secret, schemes=ep.schemes, max_age_s=ep.max_age_s)  # type: ignore[arg-type]
        except CallbackAuthError as exc:
            counts["rejected_auth"] += 1
            log.warning("%s %s callback refused (%d): %s", campaign, provider, exc.status, exc.reason)
            return _answer(exc.status, reason=exc.reason)
        try:
            parsed = ep.support.parse(body, utcnow(), ep.campaign)
            # Database work is blocking: keep it off the event loop.
            return await run_in_threadpool(handle, ep, provider, parsed)
        except CallbackPayloadError as exc:
            counts["rejected_payload"] += 1
            log.warning("%s %s callback refused (%d): %s", campaign, provider, exc.status, exc.reason)
            return _answer(exc.status, reason=exc.reason)
        except sa.exc.SQLAlchemyError as exc:
            # Not recorded: a 503 makes the vendor deliver it again later.
            counts["ledger_unavailable"] += 1
            log.error("%s %s callback not recorded: ledger error %s", campaign, provider, type(exc).__name__)
            return _answer(503, reason="ledger unavailable; retry later")

    @app.get("/callbacks/health")
    async def health() -> JSONResponse:
        return _answer(200, ok=True, campaigns=sorted(endpoints), counts=dict(counts))

    @app.post("/callbacks/{campaign}/{provider}")
    async def callback(request: Request, campaign: str, provider: str) -> JSONResponse:
        return await receive(request, campaign, provider)

    return app
