"""PassmachineClient and the shared retry policy, against a fake vendor (``httpx.MockTransport``).

One test uses a tiny raw HTTP server on loopback, so the real httpx/httpcore connection pool (and its
DEBUG logging) is exercised for the dropped-connection case and the secrets check. No test reaches
the internet.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import pickle
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate
from typing import Any

import httpx
import pytest

from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.retry import RetryPolicy, parse_retry_after, vendor_message
from passflow.providers.passmachine.client import (
    CallResult,
    ClientSettings,
    PassmachineClient,
    PassmachineError,
    Secret,
    pass_id_of,
    pass_link_of,
)

PUBLIC = "pub-7f3a9c1e5b2d4f60"
SECRET = "sec-c0ffee5eed1234567890"
T0 = 1_700_000_000.0


class FakeClock:
    """Wall clock shared by the client and the fake vendor; moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Action = Callable[["FakeVendor", httpx.Request], Any]  # a response, or an awaitable of one


class FakeVendor:
    """Passmachine as described in docs/sandbox-protocol.md, with scripted faults per route.

    ``script[route]`` is a queue of actions consumed one per request to that route (``auth``,
    ``create``, ``lookup``, ``get``, ``patch``); an action returns a response or raises.
    """

    def __init__(self, clock: FakeClock, *, auth_style: str = "basic", max_ttl: int | None = None) -> None:
        self.clock = clock
        self.auth_style = auth_style
        self.max_ttl = max_ttl
        self.latency = 0.0
        self.passes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, int] = {}  # token -> validTo
        self.issued: list[str] = []
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.arrivals: list[tuple[str, float]] = []  # (route, monotonic time)
        self.script: dict[str, deque[Action]] = {}
        self.reject_all_bearers = False

    # -- scripting ----------------------------------------------------------------------------

    def then(self, route: str, *actions: Action) -> None:
        self.script.setdefault(route, deque()).extend(actions)

    def revoke_all(self) -> None:
        self.tokens.clear()

    # -- HTTP ---------------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        route = self.route(request)
        self.calls[route] += 1
        self.arrivals.append((route, time.monotonic()))
        if self.latency:
            await asyncio.sleep(self.latency)
        queue = self.script.get(route)
        response = queue.popleft()(self, request) if queue else self.normal(request)
        if inspect.isawaitable(response):
            response = await response
        self.statuses[(route, response.status_code)] += 1
        return response

    @staticmethod
    def route(request: httpx.Request) -> str:
        path = request.url.path
        if path.endswith("/authenticate"):
            return "auth"
        if path.endswith("/passes"):
            return "create" if request.method == "POST" else "lookup"
        return "patch" if request.method == "PATCH" else "get"

    def normal(self, request: httpx.Request) -> httpx.Response:
        route = self.route(request)
        if route == "auth":
            return self._authenticate(request)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        valid_to = self.tokens.get(token)
        if self.reject_all_bearers or valid_to is None or self.clock() >= valid_to:
            return httpx.Response(401, json={"error": "invalid or expired token"})
        if "x-timestamp" not in request.headers:
            return httpx.Response(400, json={"error": {"message": "missing X-Timestamp"}})
        if route == "create":
            return self._create(request)
        if route == "lookup":
            (key, value), *_ = request.url.params.multi_items()
            field = key.removeprefix("metadata.")
            found = [p for p in self.passes.values() if str(p["metadata"].get(field)) == value]
            return httpx.Response(200, json={"data": found})
        pass_id = request.url.path.rsplit("/", 1)[-1]
        doc = self.passes.get(pass_id)
        if doc is None:
            return httpx.Response(404, json={"error": {"message": f"pass {pass_id} not found"}})
        if route == "patch":
            for op in json.loads(request.content):
                _, section, name = op["path"].split("/")
                doc[section][name] = op["value"]
        return httpx.Response(200, json={"data": doc})

    def _authenticate(self, request: httpx.Request) -> httpx.Response:
        if self.auth_style == "basic":
            expected = "Basic " + base64.b64encode(f"{PUBLIC}:{SECRET}".encode()).decode()
            good = request.headers.get("authorization") == expected
        else:
            good = (
                request.headers.get("x-public-token") == PUBLIC
                and request.headers.get("x-secret-token") == SECRET
            )
        if not good:
            return httpx.Response(401, json={"error": "invalid credentials"})
        valid_to = int(request.url.params.get("validTo", "0"))
        if valid_to <= self.clock():
            return httpx.Response(400, json={"error": {"message": "validTo must be in the future"}})
        if self.max_ttl is not None:
            valid_to = min(valid_to, int(self.clock()) + self.max_ttl)
        token = f"tok-{uuid.uuid4().hex}"
        self.tokens[token] = valid_to
        self.issued.append(token)
        return httpx.Response(200, json={"token": token, "validTo": valid_to})

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["templateId"].startswith("tpl-invalid"):
            return httpx.Response(400, json={"error": {"message": f"unknown template {body['templateId']}"}})
        pass_id = uuid.uuid4().hex[:12]
        doc = {
            "id": pass_id,
            "templateId": body["templateId"],
            "templateVariables": body["templateVariables"],
            "metadata": body["metadata"],
            "createdAt": datetime.now(UTC).isoformat(),
            "ro": {"microsite": {"url": f"http://vendor.test/passmachine/p/{pass_id}"}},
        }
        self.passes[pass_id] = doc
        return httpx.Response(201, json={"data": doc})

    def created_for(self, registered: str) -> int:
        return sum(1 for p in self.passes.values() if p["metadata"].get("registered") == registered)


# -- scripted actions ---------------------------------------------------------------------------


def status(code: int, headers: dict[str, str] | None = None, body: Any = None) -> Action:
    return lambda v, r: httpx.Response(code, headers=headers, json=body if body is not None else {})


def fail(exc_type: type[httpx.RequestError], *, after_processing: bool = False) -> Action:
    """Raise a transport error; ``after_processing``: the vendor acted first (e.g. created the pass)."""

    def action(vendor: FakeVendor, request: httpx.Request) -> httpx.Response:
        if after_processing:
            vendor.normal(request)
        raise exc_type("simulated failure", request=request)

    return action


def garbled_after_processing(vendor: FakeVendor, request: httpx.Request) -> httpx.Response:
    vendor.normal(request)
    return httpx.Response(201, text="<html>upstream hiccup</html>")


# -- fixtures -----------------------------------------------------------------------------------

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, "reconcile_delay_s": 0.005}


def make_client(
    vendor: FakeVendor, *, max_in_flight: int = 10, public: str = PUBLIC, **overrides: Any
) -> PassmachineClient:
    settings = ClientSettings(
        base_url="http://vendor.test/passmachine",
        account="acme",
        auth_style=vendor.auth_style,  # type: ignore[arg-type]
        **{**FAST, **overrides},
    )
    return PassmachineClient(
        settings,
        public_token=public,
        secret_token=SECRET,
        limiter=RateLimiter(max_in_flight, None),
        transport=httpx.MockTransport(vendor),
        clock=vendor.clock,
    )


async def create(client: PassmachineClient, customer: str, template: str = "tpl-1") -> CallResult:
    return await client.create_pass(
        template_id=template,
        template_variables={"kpFirstName": "Ada", "kpCardNumber": customer},
        metadata={"email": f"{customer}@example.com", "registered": customer},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vendor(clock: FakeClock) -> FakeVendor:
    return FakeVendor(clock)


# -- tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_style", ["basic", "headers"])
def test_token_is_fetched_once_and_reused(clock: FakeClock, auth_style: str) -> None:
    vendor = FakeVendor(clock, auth_style=auth_style)

    async def main() -> list[CallResult]:
        async with make_client(vendor) as client:
            return [await create(client, f"c{i}") for i in range(3)]

    results = asyncio.run(main())
    assert all(r.ok and r.attempts == 1 for r in results)
    assert vendor.calls["auth"] == 1 and vendor.calls["create"] == 3
    first = results[0].data
    assert pass_id_of(first) in vendor.passes
    assert pass_link_of(first) == f"http://vendor.test/passmachine/p/{pass_id_of(first)}"


def test_token_refreshed_before_expiry(vendor: FakeVendor, clock: FakeClock) -> None:
    async def main() -> None:
        async with make_client(vendor, token_ttl_s=600, refresh_margin_s=60) as client:
            assert (await create(client, "a")).ok
            clock.now += 500  # 100 s left: still outside the margin
            assert (await create(client, "b")).ok
            assert vendor.calls["auth"] == 1
            clock.now += 50  # 50 s left: inside the 60 s margin
            assert (await create(client, "c")).ok
            assert vendor.calls["auth"] == 2
            assert client.tokens.generation == 2

    asyncio.run(main())
    assert vendor.statuses[("create", 401)] == 0  # refreshed proactively, never rejected


def test_vendor_shortened_ttl_is_believed_without_refreshing_every_call(clock: FakeClock) -> None:
    vendor = FakeVendor(clock, max_ttl=30)  # margin 60 > lifetime 30

    async def main() -> None:
        async with make_client(vendor, token_ttl_s=3600, refresh_margin_s=60) as client:
            for i in range(5):
                assert (await create(client, f"c{i}")).ok
            assert vendor.calls["auth"] == 1
            clock.now += 20  # past the half-lifetime refresh point, before expiry
            assert (await create(client, "late")).ok
            assert vendor.calls["auth"] == 2

    asyncio.run(main())


def test_fifty_concurrent_401s_share_one_refresh(vendor: FakeVendor) -> None:
    all_in = asyncio.Event()
    arrived = 0

    async def held_until_all_fifty_arrived(v: FakeVendor, request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 50:
            all_in.set()
        await all_in.wait()  # every request is in flight with the old token before any 401 returns
        return v.normal(request)

    async def main() -> list[CallResult]:
        async with make_client(vendor, max_in_flight=50) as client:
            await client.tokens.get()
            vendor.revoke_all()  # every request now carries a rejected token
            vendor.then("create", *[held_until_all_fifty_arrived] * 50)
            return await asyncio.gather(*(create(client, f"c{i}") for i in range(50)))

    results = asyncio.run(main())
    assert all(r.ok and r.attempts == 2 for r in results)
    assert vendor.statuses[("create", 401)] == 50
    assert vendor.calls["auth"] == 2  # the initial token + exactly one refresh
    assert len(vendor.passes) == 50


def test_second_401_after_refresh_is_permanent(vendor: FakeVendor) -> None:
    vendor.reject_all_bearers = True  # e.g. credentials of another account: tokens never work

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert not result.ok and result.permanent and not result.ambiguous
    assert result.attempts == 2 and vendor.calls["auth"] == 2
    assert (result.error or "").startswith("HTTP 401 after a token refresh")


def test_revocation_hits_only_requests_in_flight_not_the_queue(vendor: FakeVendor) -> None:
    """Queued requests read the token when they get their slot, so they carry the refreshed one."""
    vendor.latency = 0.005

    async def main() -> tuple[list[CallResult], RateLimiter]:
        async with make_client(vendor, max_in_flight=2) as client:
            await client.tokens.get()
            vendor.revoke_all()
            return await asyncio.gather(*(create(client, f"c{i}") for i in range(20))), client.limiter

    results, limiter = asyncio.run(main())
    assert all(r.ok for r in results)
    assert limiter.started == vendor.calls["create"]  # no start wasted waiting for the new token
    assert vendor.statuses[("create", 401)] <= 2  # only the two in flight
    assert vendor.calls["auth"] == 2 and len(vendor.passes) == 20


def test_a_second_401_for_a_token_that_had_worked_earns_another_refresh(vendor: FakeVendor) -> None:
    def revoke_then_401(v: FakeVendor, request: httpx.Request) -> httpx.Response:
        v.revoke_all()
        return httpx.Response(401, json={"error": "token revoked"})

    async def slow_revoke_then_401(v: FakeVendor, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # meanwhile c2 succeeds with the same (refreshed) token
        return revoke_then_401(v, request)

    async def main() -> tuple[CallResult, CallResult]:
        async with make_client(vendor) as client:
            await client.tokens.get()
            vendor.then("create", revoke_then_401, slow_revoke_then_401)
            c1 = asyncio.create_task(create(client, "c1"))  # 401 (gen 1), refresh, 401 (gen 2) ...
            await asyncio.sleep(0.02)
            c2 = await create(client, "c2")  # ... but gen 2 worked for c2 in between
            return await c1, c2

    c1, c2 = asyncio.run(main())
    assert c2.ok and c2.attempts == 1
    assert c1.ok and c1.attempts == 3  # gen 2 had worked, so its 401 was a revocation: refresh again
    assert vendor.calls["auth"] == 3


def test_bad_credentials_are_permanent(vendor: FakeVendor) -> None:
    async def main() -> tuple[CallResult, str]:
        async with make_client(vendor, public="pub-wrong-000000") as client:
            result = await create(client, "c1")
            with pytest.raises(PassmachineError) as info:
                await client.find_passes("registered", "c1")
            return result, str(info.value)

    result, lookup_error = asyncio.run(main())
    assert not result.ok and result.permanent and result.attempts == 0
    assert "authentication failed: HTTP 401: invalid credentials" in (result.error or "")
    assert "invalid credentials" in lookup_error
    assert vendor.calls["create"] == 0


def test_token_field_is_configurable_and_missing_field_is_explained(vendor: FakeVendor) -> None:
    async def main() -> CallResult:
        async with make_client(vendor, token_field="accessToken") as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert not result.ok and result.permanent
    assert "no string field 'accessToken'" in (result.error or "")
    assert "tok-" not in (result.error or "")  # names the fields, never the values


# -- retries ------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_pauses_the_whole_limiter(vendor: FakeVendor) -> None:
    vendor.then("create", status(429, {"Retry-After": "0.3"}))

    async def main() -> tuple[CallResult, CallResult, PassmachineClient]:
        async with make_client(vendor) as client:
            await client.tokens.get()
            first = asyncio.create_task(create(client, "c1"))
            await asyncio.sleep(0.05)  # c1 has had its 429; c2 must wait for the pause too
            second = await create(client, "c2")
            return await first, second, client

    first, second, client = asyncio.run(main())
    assert first.ok and first.attempts == 2 and second.ok and second.attempts == 1
    assert client.limiter.pauses == 1
    assert client.limiter.refusals == 1  # and the margin widened: the vendor's count beat ours
    creates = [t for route, t in vendor.arrivals if route == "create"]
    assert len(creates) == 3
    assert creates[1] - creates[0] >= 0.29 and creates[2] - creates[0] >= 0.29


def test_429_with_http_date_retry_after(clock: FakeClock) -> None:
    clock.now = T0 + 0.75  # the date below is then 0.25 s ahead
    vendor = FakeVendor(clock)
    vendor.then("create", status(429, {"Retry-After": formatdate(T0 + 1, usegmt=True)}))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    started = time.monotonic()
    result = asyncio.run(main())
    assert result.ok and result.attempts == 2
    assert 0.24 <= time.monotonic() - started < 2.0


def test_5xx_burst_then_success_for_an_idempotent_call(vendor: FakeVendor) -> None:
    async def main() -> CallResult:
        async with make_client(vendor) as client:
            created = await create(client, "c1")
            vendor.then("get", status(500), status(502), status(503), status(504))
            return await client.get_pass(pass_id_of(created.data) or "")

    result = asyncio.run(main())
    assert result.ok and result.attempts == 5
    assert vendor.calls["lookup"] == 0


def test_503_with_retry_after_on_create_is_retried_without_lookup(vendor: FakeVendor) -> None:
    vendor.then("create", status(503, {"Retry-After": "0"}), status(503, {"Retry-After": "0"}))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert result.ok and result.attempts == 3 and not result.reconciled
    assert vendor.calls["lookup"] == 0 and vendor.created_for("c1") == 1


def test_permanent_400_returns_the_vendor_message_without_retry(vendor: FakeVendor) -> None:
    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1", template="tpl-invalid-7")

    result = asyncio.run(main())
    assert not result.ok and result.permanent and not result.ambiguous
    assert result.status == 400 and result.attempts == 1
    assert result.error == "HTTP 400: unknown template tpl-invalid-7"
    assert vendor.calls["create"] == 1


def test_attempts_are_capped(vendor: FakeVendor) -> None:
    vendor.then("create", *[status(429, {"Retry-After": "0"})] * 10)

    async def main() -> CallResult:
        async with make_client(vendor, max_attempts=4) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert not result.ok and not result.permanent and not result.ambiguous
    assert result.attempts == 4 and vendor.calls["create"] == 4
    assert result.error == "gave up after 4 attempts: HTTP 429"


def test_connect_error_is_retried_without_lookup(vendor: FakeVendor) -> None:
    vendor.then("create", fail(httpx.ConnectError), fail(httpx.ConnectTimeout))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert result.ok and result.attempts == 3 and not result.reconciled
    assert vendor.calls["lookup"] == 0


# -- ambiguity ----------------------------------------------------------------------------------


def test_timeout_after_the_vendor_created_the_pass_is_reconciled(vendor: FakeVendor) -> None:
    vendor.then("create", fail(httpx.ReadTimeout, after_processing=True))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert result.ok and result.reconciled and result.attempts == 1
    assert vendor.calls["create"] == 1 and vendor.calls["lookup"] == 1
    assert vendor.created_for("c1") == 1  # no duplicate
    assert pass_id_of(result.data) in vendor.passes and pass_link_of(result.data)


def test_timeout_before_the_vendor_acted_creates_once(vendor: FakeVendor) -> None:
    vendor.then("create", fail(httpx.ReadTimeout), status(502))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert result.ok and not result.reconciled and result.attempts == 3
    assert vendor.calls["lookup"] == 2 and vendor.created_for("c1") == 1


def test_unreadable_success_body_is_reconciled(vendor: FakeVendor) -> None:
    vendor.then("create", garbled_after_processing)

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert result.ok and result.reconciled and vendor.created_for("c1") == 1


def test_lookup_ignores_passes_of_another_template(vendor: FakeVendor) -> None:
    async def main() -> tuple[CallResult, CallResult]:
        async with make_client(vendor) as client:
            vendor.then("create", status(201))  # 201 without data.id: looked up, nothing there, re-created
            other = await create(client, "c1", template="tpl-other")  # another campaign's pass for c1
            vendor.then("create", fail(httpx.RemoteProtocolError))  # dropped before the vendor acted
            return other, await create(client, "c1")

    other, result = asyncio.run(main())
    assert other.ok and not other.reconciled and other.attempts == 2
    # The lookup after the drop finds c1's tpl-other pass, which must not count as this request's.
    assert result.ok and not result.reconciled and result.attempts == 2
    assert vendor.calls["lookup"] == 2
    assert Counter(p["templateId"] for p in vendor.passes.values()) == {"tpl-other": 1, "tpl-1": 1}


def test_a_timed_out_request_keeps_its_slot_while_the_vendor_may_still_work_on_it(vendor: FakeVendor) -> None:
    vendor.then("get", fail(httpx.ReadTimeout), fail(httpx.ReadTimeout))

    async def main() -> list[int]:
        seen = []
        async with make_client(vendor, timeout_s=0.2) as client:
            result = await client.get_pass("nope")  # two timeouts, then a 404
            assert result.status == 404 and result.attempts == 3
            seen.append(client.limiter.in_flight)  # both timed-out attempts still count
            await asyncio.sleep(0.3)
            seen.append(client.limiter.in_flight)
            vendor.then("get", fail(httpx.ReadTimeout))
            await client.get_pass("nope")
            seen.append(client.limiter.in_flight)
        seen.append(client.limiter.in_flight)  # aclose gives held slots back
        return seen

    assert asyncio.run(main()) == [2, 0, 1, 0]


def test_without_reconcile_an_ambiguous_create_is_reported_not_repeated(vendor: FakeVendor) -> None:
    vendor.then("create", fail(httpx.ReadTimeout, after_processing=True))

    async def main() -> CallResult:
        async with make_client(vendor) as client:
            return await client.create_pass(
                template_id="tpl-1", template_variables={}, metadata={"registered": "c1"}, reconcile=False
            )

    result = asyncio.run(main())
    assert not result.ok and result.ambiguous and not result.permanent
    assert result.error and result.error.startswith("outcome unknown, not repeated: ReadTimeout")
    assert vendor.calls["create"] == 1 and vendor.calls["lookup"] == 0


def test_failed_lookup_leaves_the_create_ambiguous(vendor: FakeVendor) -> None:
    vendor.then("create", status(500))
    vendor.then("lookup", *[status(500)] * 3)

    async def main() -> CallResult:
        async with make_client(vendor, max_attempts=3) as client:
            return await create(client, "c1")

    result = asyncio.run(main())
    assert not result.ok and result.ambiguous
    assert "reconciliation lookup failed" in (result.error or "")
    assert vendor.calls["create"] == 1


def test_patch_retries_idempotent_ops_but_not_appends(vendor: FakeVendor) -> None:
    async def main() -> tuple[CallResult, CallResult]:
        async with make_client(vendor) as client:
            pid = pass_id_of((await create(client, "c1")).data) or ""
            ops = [{"op": "replace", "path": "/templateVariables/fieldValue", "value": "HELLO"}]
            vendor.then("patch", fail(httpx.ReadTimeout))
            replaced = await client.patch_pass(pid, ops)
            vendor.then("patch", fail(httpx.ReadTimeout))
            appended = await client.patch_pass(pid, [{"op": "add", "path": "/tags/-", "value": "x"}])
            return replaced, appended

    replaced, appended = asyncio.run(main())
    assert replaced.ok and replaced.attempts == 2
    assert replaced.data and replaced.data["data"]["templateVariables"]["fieldValue"] == "HELLO"
    assert not appended.ok and appended.ambiguous and appended.attempts == 1


def test_find_passes_and_get_pass(vendor: FakeVendor) -> None:
    async def main() -> tuple[list[dict[str, Any]], CallResult]:
        async with make_client(vendor) as client:
            await create(client, "c1")
            await create(client, "c2")
            return await client.find_passes("registered", "c1"), await client.get_pass("nope")

    found, missing = asyncio.run(main())
    assert [p["metadata"]["registered"] for p in found] == ["c1"]
    assert not missing.ok and missing.permanent and missing.status == 404
    assert "pass nope not found" in (missing.error or "")


# -- secrets ------------------------------------------------------------------------------------


class _EchoingVendor(FakeVendor):
    """A careless vendor that echoes credentials in its error messages."""

    def normal(self, request: httpx.Request) -> httpx.Response:
        response = super().normal(request)
        if self.route(request) == "create" and response.status_code == 201:
            auth = request.headers["authorization"]
            return httpx.Response(422, json={"error": {"message": f"rejected {auth} for {PUBLIC}/{SECRET}"}})
        return response


def _assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"secret leaked: ...{text[:300]}"


def test_secrets_never_leak(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    vendor = _EchoingVendor(clock)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "passflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []

    async def main() -> None:
        async with make_client(vendor) as client:
            texts.extend([repr(client), repr(client.tokens), repr(vars(client)), repr(vars(client.tokens))])
            results = [await create(client, "c1")]
            vendor.revoke_all()
            vendor.then("create", fail(httpx.ReadTimeout))
            results.append(await create(client, "c2", template="tpl-invalid"))
            texts.extend([repr(client.tokens), repr(vars(client.tokens))])
            vendor.reject_all_bearers = True
            results.append(await client.get_pass("x"))
            with pytest.raises(PassmachineError) as info:
                await client.find_passes("registered", "c1")
            texts.append(str(info.value))
            texts.append(repr(info.value))
            texts.extend(repr(r) for r in results)
            texts.extend(r.error or "" for r in results)
            assert all(not r.ok for r in results)
        async with make_client(vendor, public="pub-wrong-123456") as bad:
            r = await create(bad, "c3")
            texts.extend([r.error or "", repr(r)])

    asyncio.run(main())
    texts.extend(record.getMessage() for record in caplog.records)
    texts.append(caplog.text)
    assert vendor.issued, "the scenario must have issued bearer tokens"
    _assert_no_secret("\n".join(texts), [PUBLIC, SECRET, *vendor.issued])
    assert any("***" in t for t in texts)  # the echoed credentials were scrubbed, not dropped silently


def test_secret_wrapper_hides_itself() -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret) and SECRET not in str(secret) and SECRET not in f"{secret}"
    assert secret.reveal() == SECRET
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_real_connection_pool_dropped_connection_and_no_secrets_in_httpcore_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over loopback: the vendor creates the pass and then drops the connection without answering."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "passflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    clock = FakeClock(time.time())
    vendor = FakeVendor(clock)
    vendor.then("create", fail(httpx.RemoteProtocolError, after_processing=True))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                request = httpx.Request(method, f"http://127.0.0.1{target}", headers=headers, content=body)
                try:
                    response = await vendor(request)
                except httpx.RequestError:
                    writer.close()  # the vendor acted, then the connection died
                    return
                payload = response.content
                writer.write(
                    f"HTTP/1.1 {response.status_code} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> CallResult:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = ClientSettings(
            base_url=f"http://127.0.0.1:{port}/passmachine", account="acme", **FAST
        )
        limiter = RateLimiter(4, 200)
        try:
            async with PassmachineClient(
                settings, public_token=PUBLIC, secret_token=SECRET, limiter=limiter, clock=clock
            ) as client:
                return await create(client, "c1")
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert result.ok and result.reconciled and vendor.created_for("c1") == 1
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # the real pool was exercised
    _assert_no_secret(caplog.text, [PUBLIC, SECRET, *vendor.issued])


# -- http_retry unit tests ----------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("99999", now) == 300.0
    assert parse_retry_after("10", now, max_delay=2) == 2
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    for garbage in ("", "soon", "nan", "inf", "Mon, 99 Foo 2026", None):
        assert parse_retry_after(garbage, now) is None


def test_classification() -> None:
    policy = RetryPolicy()
    req = httpx.Request("POST", "http://vendor.test/x")

    def resp(code: int, **kw: Any) -> httpx.Response:
        return httpx.Response(code, request=req, **kw)

    assert policy.classify(resp(201, json={"data": {}})).kind == "ok"
    assert policy.classify(resp(204)).kind == "ok"
    garbled = policy.classify(resp(200, text="<html>"))
    assert garbled.kind == "retry" and garbled.maybe_processed
    assert policy.classify(resp(401)).kind == "reauth"
    assert policy.classify(resp(401), reauthed=True).kind == "permanent"
    r429 = policy.classify(resp(429, headers={"Retry-After": "7"}))
    assert (r429.kind, r429.retry_after, r429.maybe_processed) == ("retry", 7.0, False)
    assert policy.classify(resp(408)).kind == "retry"
    assert not policy.classify(resp(503, headers={"Retry-After": "1"})).maybe_processed
    for code in (500, 502, 503, 504):
        out = policy.classify(resp(code))
        assert out.kind == "retry" and out.maybe_processed
    assert policy.classify(httpx.ReadTimeout("t", request=req)).maybe_processed
    assert policy.classify(httpx.RemoteProtocolError("dropped", request=req)).maybe_processed
    assert not policy.classify(httpx.ConnectError("refused", request=req)).maybe_processed
    assert not policy.classify(httpx.PoolTimeout("pool", request=req)).maybe_processed
    assert policy.classify(httpx.UnsupportedProtocol("ftp", request=req)).kind == "permanent"
    p400 = policy.classify(resp(400, json={"error": {"message": "bad body"}}))
    assert (p400.kind, p400.reason) == ("permanent", "HTTP 400: bad body")
    assert policy.classify(resp(302, headers={"Location": "/elsewhere"})).kind == "permanent"


def test_vendor_message_shapes() -> None:
    def msg(**kw: Any) -> str:
        return vendor_message(httpx.Response(400, **kw))

    assert msg(json={"error": "plain"}) == "plain"
    assert msg(json={"error": {"message": "nested"}}) == "nested"
    assert msg(json={"message": "top"}) == "top"
    assert (
        msg(json={"status": "failure", "error-code": "E104", "error-info": "unknown pass"})
        == "E104: unknown pass"
    )
    assert msg(text="x" * 500) == "x" * 200
    assert msg(text="") == "Bad Request"


def test_backoff_full_jitter_is_bounded() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=1.0)
    import random

    rng = random.Random(1)
    for attempt in range(1, 10):
        cap = min(1.0, 0.2 * 2 ** (attempt - 1))
        samples = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.8  # full jitter spans the range
    assert policy.delay(1, retry_after=5.0, rng=rng) >= 5.0
    assert policy.delay(1, retry_after=10_000.0, rng=rng) <= 300.0
