"""The sandbox's HTTP face: Passmachine under ``/passmachine``, Skycore under ``/skycore``, control under
``/_admin``. The wire protocol is ``docs/sandbox-protocol.md``; the rules live in :mod:`.state`.

Every vendor request goes through :func:`_vendor_call`: limiter (Passmachine data endpoints only) →
fault pick → latency → the endpoint's work → after-commit faults. Handlers take the raw ``Request``
and return ready ``Response`` objects: no pydantic on the hot path, which keeps one process well above
the throughput the benchmarks need.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import html
import json
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jsonpatch
import jsonpointer
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from passflow.providers.skycore import links as skycore_links
from passflow.sandbox import skycore_api as skycore_api_mod
from passflow.sandbox.state import (
    AFTER_COMMIT_KINDS,
    FaultRule,
    SandboxConfig,
    SandboxError,
    SandboxState,
    retry_after_seconds,
    utc_iso,
)

#: Where the real Skycore serves issuance links; a link signed for this base verifies here too.
SKYCORE_REAL_LINK_BASE = "https://d2c.skycore.com/wallet/gc/"
_TRANSPORT_KEY = "passflow.sandbox.transport"
_PASS_ID_RE = re.compile(r"^[A-Za-z0-9]+$")
_MALFORMED_BODY = b'{"data": {"id": "'  # truncated JSON, as from a proxy cutting a response short
_READ_ONLY = ("id", "createdAt", "ro")

Work = Callable[[], Awaitable[Response]]


class _SandboxApp(FastAPI):
    """FastAPI that remembers the server's transport per request, so a ``drop`` fault can abort the
    socket. Starlette's error middleware would turn any exception into a 500 response, so raising is
    not enough; the raw uvicorn ``send`` is a bound method of the request cycle that owns the transport.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_TRANSPORT_KEY] = getattr(getattr(send, "__self__", None), "transport", None)
        await super().__call__(scope, receive, send)


async def _drop_connection(request: Request) -> None:
    transport = request.scope.get(_TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("drop faults need the sandbox to run under uvicorn")
    transport.abort()
    # Let connection_lost run: uvicorn then marks the cycle disconnected and ignores what we "send".
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body).encode(), status, headers, media_type="application/json")


def _pm_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": {"message": message}}, headers)


def _sky_failure(code: str, info: str) -> Response:
    # Skycore answers business errors with HTTP 200 and a failure body.
    return _json(200, {"status": "failure", "error-code": code, "error-info": info})


def _malformed() -> Response:
    return Response(_MALFORMED_BODY, 200, media_type="application/json")


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _retry_after(state: SandboxState, wait_s: float) -> str:
    if state.config.retry_after == "http-date":
        # HTTP dates have whole seconds: round up so a client never comes back too early.
        return email.utils.formatdate(math.ceil(time.time() + wait_s), usegmt=True)
    return str(retry_after_seconds(wait_s))


def _require_timestamp(request: Request) -> None:
    raw = request.headers.get("x-timestamp")
    if raw is None:
        raise SandboxError(400, "missing X-Timestamp header")
    try:
        float(raw)
    except ValueError:
        raise SandboxError(400, "X-Timestamp must be unix seconds") from None


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise SandboxError(400, "request body is not valid JSON") from None
    except ClientDisconnect:
        # The client went away mid-request (killed, timed out): nothing to answer, nothing to log.
        raise SandboxError(499, "client disconnected") from None


def create_app(config: SandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox app with its own state (``app.state.sandbox``)."""
    state = SandboxState(config)
    app = _SandboxApp(title="passflow provider sandbox", version="1")
    app.state.sandbox = state

    async def latency() -> None:
        cfg = state.config
        delay = (cfg.latency_ms + random.uniform(0.0, cfg.jitter_ms)) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)

    async def apply_fault(
        request: Request, endpoint: str, rule: FaultRule | None, work: Work
    ) -> Response | None:
        """Run ``work`` under ``rule``; ``None`` means the connection was dropped."""
        kind = rule.kind if rule else None
        if rule is not None and kind == "slow":
            await asyncio.sleep(rule.delay_s)  # past the client's timeout; nothing is done
            return _pm_error(504, "upstream timed out (injected slow fault)")
        await latency()
        if rule is None:
            return await work()
        if kind == "status":
            headers = {}
            if rule.retry_after_s is not None or rule.code == 429:
                headers["Retry-After"] = _retry_after(state, float(rule.retry_after_s or 1))
            return _pm_error(rule.code, f"injected fault {rule.code}", headers)
        if kind == "revoke":
            if endpoint == "skycore_update":
                return _sky_failure("E104", "authentication failed (key revoked, injected fault)")
            state.revoke_token(_bearer(request))
            return _pm_error(401, "token revoked")
        if kind == "malformed":
            return _malformed()
        if kind == "failure_body":
            # HTTP 200 whose body reports a failure (no pass): a client must not take 200 as success.
            if endpoint.startswith("skycore"):
                return _sky_failure("E500", "internal error (injected failure body)")
            return _json(200, {"error": {"message": "internal error (injected failure body)"}})
        if kind == "skycore_error":  # a published failure code (throttling, quota, auth …)
            return _sky_failure(rule.error_code, f"injected {rule.error_code}")
        if kind == "drop":
            await _drop_connection(request)
            return None
        assert kind in AFTER_COMMIT_KINDS
        response = await work()
        if kind == "drop_after_commit":
            await _drop_connection(request)
            return None
        if kind == "slow_after_commit":
            await asyncio.sleep(rule.delay_s)
            return response
        return _malformed()

    async def vendor_call(
        request: Request, endpoint: str, work: Work, account: str | None = None
    ) -> Response:
        admission = state.admit(account) if account is not None else None
        status: int | str = "dropped"
        try:
            if admission is not None and not admission.accepted:
                retry = _retry_after(state, admission.retry_after_s)
                response: Response | None = _pm_error(429, admission.reason, {"Retry-After": retry})
            else:
                response = await apply_fault(request, endpoint, state.pick_fault(endpoint), work)
            if response is None:
                return Response(status_code=500)  # never delivered: the socket is gone
            status = response.status_code
            return response
        except Exception:
            status = 500  # a sandbox bug; Starlette answers 500
            raise
        finally:
            if admission is not None:
                state.finish(admission)
            state.count_request(endpoint, status)

    def guarded(fn: Work) -> Work:
        async def run() -> Response:
            try:
                return await fn()
            except SandboxError as exc:
                return _pm_error(exc.status, exc.message)

        return run

    # ----- Passmachine ----------------------------------------------------------------------------

    @app.get("/passmachine/authenticate")
    async def authenticate(request: Request) -> Response:
        async def work() -> Response:
            public, secret = _credentials(request)
            raw = request.query_params.get("validTo")
            try:
                valid_to = float(raw) if raw is not None else None
            except ValueError:
                valid_to = None
            if valid_to is None:
                raise SandboxError(400, "validTo (unix seconds) is required")
            token, valid_to = state.issue_token(public, secret, valid_to)
            shown: float | int = int(valid_to) if valid_to == int(valid_to) else valid_to
            return _json(200, {"token": token, "validTo": shown})

        return await vendor_call(request, "authenticate", guarded(work))

    @app.post("/passmachine/accounts/{account}/passes")
    async def create_pass(request: Request, account: str) -> Response:
        async def work() -> Response:
            state.check_token(_bearer(request), account)
            _require_timestamp(request)
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise SandboxError(400, "body must be a JSON object")
            template_id = body.get("templateId")
            variables = body.get("templateVariables", {})
            metadata = body.get("metadata", {})
            if not isinstance(template_id, str) or not template_id:
                raise SandboxError(400, "templateId (string) is required")
            if template_id.startswith("tpl-invalid"):
                raise SandboxError(400, f"unknown template {template_id!r}")
            if not isinstance(variables, dict) or not isinstance(metadata, dict):
                raise SandboxError(400, "templateVariables and metadata must be JSON objects")
            site = f"{request.url.scheme}://{request.url.netloc}/passmachine/p/"
            doc = state.create_pass(account, template_id, variables, metadata, site)
            return _json(201, {"data": doc})

        return await vendor_call(request, "create", guarded(work), account)

    @app.get("/passmachine/accounts/{account}/passes")
    async def lookup(request: Request, account: str) -> Response:
        async def work() -> Response:
            state.check_token(_bearer(request), account)
            filters = [
                (k.removeprefix("metadata."), v)
                for k, v in request.query_params.multi_items()
                if k.startswith("metadata.") and len(k) > len("metadata.")
            ]
            if not filters:
                raise SandboxError(400, "give at least one metadata.<key>=<value> filter")
            return _json(200, {"data": state.lookup(account, filters)})

        return await vendor_call(request, "lookup", guarded(work), account)

    @app.get("/passmachine/accounts/{account}/passes/{pass_id}")
    async def get_pass(request: Request, account: str, pass_id: str) -> Response:
        async def work() -> Response:
            state.check_token(_bearer(request), account)
            return _json(200, {"data": state.get_pass(account, pass_id)})

        return await vendor_call(request, "get", guarded(work), account)

    @app.patch("/passmachine/accounts/{account}/passes/{pass_id}")
    async def update_pass(request: Request, account: str, pass_id: str) -> Response:
        async def work() -> Response:
            state.check_token(_bearer(request), account)
            _require_timestamp(request)
            ops = await _json_body(request)
            doc = state.get_pass(account, pass_id)
            new = _apply_patch(doc, ops)
            state.replace_pass(account, pass_id, new)
            return _json(200, {"data": new})

        return await vendor_call(request, "update", guarded(work), account)

    @app.get("/passmachine/p/{pass_id}", response_class=HTMLResponse)
    async def microsite(pass_id: str) -> Response:
        doc = state.find_pass(pass_id)
        state.count_request("microsite", 200 if doc else 404)
        if doc is None:
            return HTMLResponse("<h1>Pass not found</h1>", 404)
        return HTMLResponse(
            f"<!doctype html><title>Your pass</title><h1>Add to wallet</h1><p>Pass {html.escape(pass_id)}</p>"
        )

    # ----- Skycore --------------------------------------------------------------------------------

    @app.get("/skycore/wallet/gc/{link_id}")
    async def skycore_link(request: Request, link_id: str) -> Response:
        async def work() -> Response:
            link = state.skycore_link_config(link_id)
            query = request.scope["query_string"].decode("latin-1")
            raw_path = request.scope.get("raw_path") or request.url.path.encode()
            candidates = (
                f"{request.url.scheme}://{request.url.netloc}{raw_path.decode('latin-1')}?{query}",
                f"{SKYCORE_REAL_LINK_BASE}{link_id}?{query}",
            )
            ok = any(skycore_links.verify_link(u, salt=link.salt, recipe=link.recipe()) for u in candidates)
            state.count_link(ok)
            if not ok:
                body = {"status": "failure", "error-code": "E401", "error-info": "checksum mismatch"}
                return _json(403, body)
            params = dict(skycore_links.parse_link(candidates[0]).params)
            pass_id = params.get("pass-id", "")
            if not _PASS_ID_RE.match(pass_id):
                body = {
                    "status": "failure",
                    "error-code": "E102",
                    "error-info": "pass-id must be [A-Za-z0-9]+",
                }
                return _json(400, body)
            state.record_install(link_id, pass_id, params)
            return HTMLResponse(
                f"<!doctype html><title>Your pass</title><h1>Pass {html.escape(pass_id)} is ready</h1>"
            )

        return await vendor_call(request, "skycore_link", work)

    @app.post("/skycore")
    @app.post("/skycore/api")
    async def skycore_api(request: Request) -> Response:
        """The account API URL: every v3 call, the function in the body's ``action``."""

        async def work() -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            return _json(200, skycore_api_mod.handle(state, request.headers.get("x-api-key"), body))

        return await vendor_call(request, "skycore_update", work)

    # ----- Admin ----------------------------------------------------------------------------------

    @app.get("/_admin/health")
    async def health() -> Response:
        return _json(200, {"ok": True})

    @app.get("/_admin/config")
    async def get_config() -> Response:
        return _json(200, state.config.model_dump())

    @app.post("/_admin/config")
    async def post_config(request: Request) -> Response:
        body = await _admin_json(request)
        if not isinstance(body, dict):
            return _pm_error(400, "config must be a JSON object")
        try:
            new = state.configure(body)
        except ValidationError as exc:
            return _json(400, {"error": {"message": "invalid config", "details": json.loads(exc.json())}})
        return _json(200, new.model_dump())

    @app.get("/_admin/stats")
    async def stats(per_customer: bool = True) -> Response:
        return _json(200, state.stats(per_customer=per_customer))

    @app.get("/_admin/arrivals")
    async def arrivals() -> Response:
        return _json(200, {"accepted": state.arrival_times()})

    @app.post("/_admin/reset")
    async def reset(keep_config: bool = False) -> Response:
        state.reset(keep_config=keep_config)
        return _json(200, {"ok": True})

    @app.post("/_admin/revoke-tokens")
    async def revoke_tokens(account: str | None = None) -> Response:
        return _json(200, {"revoked": state.revoke_all(account)})

    @app.get("/_admin/passmachine/passes")
    async def list_passes(account: str | None = None) -> Response:
        return _json(200, {"data": state.all_passes(account)})

    @app.post("/_admin/skycore/passes")
    async def register_skycore(request: Request) -> Response:
        body = await _admin_json(request)
        ids = body.get("pass_ids") if isinstance(body, dict) else body
        if not isinstance(ids, list) or not all(isinstance(i, str) and _PASS_ID_RE.match(i) for i in ids):
            return _pm_error(400, 'send a list of [A-Za-z0-9]+ pass ids (or {"pass_ids": [...]})')
        return _json(200, {"registered": state.register_skycore_passes(ids)})

    @app.get("/_admin/skycore/passes")
    async def skycore_passes() -> Response:
        return _json(200, state.skycore_passes())

    @app.get("/_admin/skycore/updates")
    async def skycore_updates() -> Response:
        return _json(200, {"updates": state.skycore_updates()})

    @app.post("/_admin/callbacks/simulate")
    async def simulate_callback(request: Request) -> Response:
        """A customer adds/removes a pass: POST the vendor's callback to the configured URL."""
        from passflow.sandbox import postbacks

        try:
            sim = postbacks.SimulatedCallback.model_validate(await _admin_json(request) or {})
            doc = state.find_pass(sim.pass_id) if sim.provider == "passmachine" else None
            body = postbacks.build_body(sim, doc["metadata"] if doc else None, utc_iso())
        except (ValidationError, ValueError) as exc:
            return _pm_error(400, f"invalid simulation: {exc}")
        url = sim.url or state.config.callback_urls.get(sim.provider)
        env = state.config.callback_secret_env
        secret = os.environ.get(env) if env else None
        if not url or not secret:
            return _pm_error(
                400, "set callback_urls.<provider> and callback_secret_env (POST /_admin/config)"
            )
        raw = json.dumps(body).encode()
        result = await postbacks.deliver(url, raw, postbacks.auth_headers(sim.signing, secret, raw), 10.0)
        state.count_request(f"callback_{sim.provider}", result["status"])
        return _json(200, result)

    return app


async def _admin_json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None  # callers answer 400


def _credentials(request: Request) -> tuple[str, str]:
    """Public/secret tokens from HTTP Basic or the ``X-Public-Token``/``X-Secret-Token`` headers."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise SandboxError(401, "invalid credentials") from None
        return user, password
    public, secret = request.headers.get("x-public-token"), request.headers.get("x-secret-token")
    if not public or not secret:
        raise SandboxError(401, "invalid credentials")
    return public, secret


def _apply_patch(doc: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise SandboxError(400, "body must be a JSON Patch array (RFC 6902)")
    try:
        new = jsonpatch.JsonPatch(ops).apply(doc, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as exc:
        raise SandboxError(400, f"invalid patch: {exc}") from None
    if not isinstance(new, dict) or any(new.get(k) != doc.get(k) for k in _READ_ONLY):
        raise SandboxError(400, f"invalid patch: {', '.join(_READ_ONLY)} are read-only")
    if not isinstance(new.get("templateId"), str):
        raise SandboxError(400, "invalid patch: templateId must stay a string")
    if not isinstance(new.get("templateVariables"), dict) or not isinstance(new.get("metadata"), dict):
        raise SandboxError(400, "invalid patch: templateVariables and metadata must stay objects")
    new["updatedAt"] = utc_iso()
    return new
