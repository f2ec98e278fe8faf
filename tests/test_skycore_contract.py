"""Skycore's published API v3 contract (tests/contracts/skycore/*.json) held against both passflow's
client (the bytes it sends) and the sandbox (what it answers), plus the published error-code classes:
config/auth codes stop the run with a fix, throttling is retried, E120 stops resumably, pass-level
and unknown codes fail the row without a blind retry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.retry import RetryPolicy
from passflow.providers.skycore.api import SkycoreApiClient
from passflow.providers.skycore.errors import SKYCORE_ERRORS, markdown_table
from passflow.providers.skycore.updates import refusal
from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_SKYCORE_API_KEY

CONTRACTS = Path(__file__).parent / "contracts" / "skycore"
FIXTURES = sorted(CONTRACTS.glob("*.json"))
SENT = [p for p in FIXTURES if not p.stem.startswith("failure_")]  # failure examples: sandbox side
KEY = DEMO_SKYCORE_API_KEY
API_URL = "https://api.skycore.example/wallet/v3"  # stands for the account API URL from API Settings


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text().replace("$key", KEY))


def _client(handler: Any, *, key_in: str = "header", attempts: int = 4) -> SkycoreApiClient:
    return SkycoreApiClient(
        API_URL,
        api_key=KEY,
        api_key_in=key_in,  # type: ignore[arg-type]
        limiter=RateLimiter(max_in_flight=4),
        policy=RetryPolicy(max_attempts=attempts, base_delay=0.001, max_delay=0.002),
        transport=httpx.MockTransport(handler),
    )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("fixture", SENT, ids=lambda p: p.stem)
def test_client_sends_the_documented_request(fixture: Path) -> None:
    doc = _load(fixture)
    want = doc["request"]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success"})

    fields = {k: v for k, v in want["body"].items() if k not in ("action", "api-key")}

    async def go() -> Any:
        async with _client(handler, key_in=doc.get("api_key_in", "header")) as c:
            return await c.call(doc["action"], fields)

    result = _run(go())
    assert result.ok and len(seen) == 1
    sent = seen[0]
    assert sent.method == "POST" and str(sent.url) == API_URL  # one URL for every function
    assert json.loads(sent.content) == want["body"]
    for name, value in want["headers"].items():
        assert sent.headers.get(name) == value
    if "X-Api-Key" not in want["headers"]:
        assert "x-api-key" not in sent.headers


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


def test_sandbox_answers_the_documented_requests(sandbox: SandboxHandle) -> None:
    sandbox.admin.reset()
    sandbox.admin.register_skycore_passes(["MOEDAnna2022"])
    # generatepass first: getpassdata reads the pass it made.
    order = [
        "generatepass",
        "getpassdata",
        "updatepassdata",
        "updatepassdata_body_key",
        "getPassIds",
        "getPassTemplates",
        "failure_E104",
    ]
    assert sorted(order) == sorted(p.stem for p in FIXTURES), "a new fixture needs a place here"
    for name in order:
        doc = _load(CONTRACTS / f"{name}.json")
        r = httpx.post(sandbox.skycore_url, headers=doc["request"]["headers"], json=doc["request"]["body"])
        assert r.status_code == 200, name
        got, want = r.json(), doc["response"]
        assert got["status"] == want["status"], (name, got)
        for k, v in want.items():
            assert k in got and (v == "$any" or got[k] == v), (name, k, got)
    again = _load(CONTRACTS / "generatepass.json")["request"]
    reused = httpx.post(sandbox.skycore_url, headers=again["headers"], json=again["body"]).json()
    assert reused["status"] == "failure"  # generatepass refuses a reused pass-id


def test_the_client_reads_the_sandbox(sandbox: SandboxHandle) -> None:
    sandbox.admin.reset()

    async def go() -> tuple[Any, Any]:
        async with SkycoreApiClient(sandbox.skycore_url, api_key=KEY, limiter=RateLimiter(2)) as c:
            return await c.get_pass_templates(), await c.get_pass_data("Nope1")

    templates, missing = _run(go())
    assert templates.ok and "pass-templates" in (templates.data or {})
    assert (missing.ok, missing.error_code) == (False, "E808")


def _answers(*codes: str | None) -> Any:
    """A handler answering failure bodies with ``codes`` in turn (None = success), then success."""
    calls = iter(codes)

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(calls, None)
        if code is None:
            return httpx.Response(200, json={"status": "success"})
        return httpx.Response(
            200, json={"status": "failure", "error-code": code, "error-info": f"said {code}"}
        )

    return handler


def _update(handler: Any, attempts: int = 4) -> Any:
    async def go() -> Any:
        async with _client(handler, attempts=attempts) as c:
            return await c.update_pass({"pass-id": "P1", "pass-template-id": "t", "pass-data": {}})

    return _run(go())


@pytest.mark.parametrize("code", ["E106", "E113"])
def test_throttling_codes_are_retried_with_backoff(code: str) -> None:
    r = _update(_answers(code, code))
    assert (r.ok, r.attempts) == (True, 3)
    r = _update(_answers(code, code, code, code), attempts=2)  # still throttled: retryable, no stop
    assert (r.ok, r.error_code, r.retryable, refusal(r)) == (False, code, True, None)


@pytest.mark.parametrize("code", ["E101", "E102", "E104", "E105", "E107", "E109", "E112"])
def test_config_codes_stop_the_run_with_a_fix(code: str) -> None:
    r = _update(_answers(code))
    assert (r.ok, r.error_code, r.attempts) == (False, code, 1)
    stop = refusal(r)
    assert stop is not None and "fix:" in stop and SKYCORE_ERRORS[code].fix in stop


def test_account_limit_stops_resumably() -> None:
    r = _update(_answers("E120"))
    assert r.attempts == 1 and "wait for the account's quota" in (refusal(r) or "")


@pytest.mark.parametrize("code", ["E808", "E809", "E999"])
def test_pass_level_and_unknown_codes_fail_the_row_once(code: str) -> None:
    r = _update(_answers(code))
    assert (r.ok, r.error_code, r.attempts, r.retryable, refusal(r)) == (False, code, 1, False, None)
    assert r.error == f"{code}: said {code}"


def test_key_never_in_results_or_repr() -> None:
    r = _update(_answers("E104"))
    assert KEY not in repr(r) and KEY not in (refusal(r) or "")
    assert KEY not in repr(_client(_answers()))


def test_docs_hold_the_same_error_table() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "skycore-errors.md").read_text()
    assert markdown_table() in doc
