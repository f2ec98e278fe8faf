"""The provider sandbox over real HTTP: tokens, passes, limits, faults, stats and Skycore links/updates.

One sandbox thread serves the whole module; every test starts from a reset (state and config).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from passflow.providers.skycore.links import LinkRecipe, build_link
from passflow.sandbox import (
    FaultRule,
    SandboxHandle,
    max_in_window,
    start_sandbox_process,
    start_sandbox_thread,
)

CREDS = ("pm-public-demo", "pm-secret-demo")
SKY_KEY = {"X-Api-Key": "sky-demo-key"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(sandbox: SandboxHandle) -> None:
    sandbox.admin.reset()


@pytest.fixture
def pm(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.passmachine_url, timeout=5) as client:
        yield client


def get_token(pm: httpx.Client, valid_for: float = 600, **kw: Any) -> str:
    r = pm.get("/authenticate", params={"validTo": time.time() + valid_for}, auth=CREDS, **kw)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Timestamp": str(int(time.time()))}


def pass_body(customer: str | None = "c1", template: str = "tpl-1") -> dict[str, Any]:
    metadata = {"email": "a@example.com"} | ({"registered": customer} if customer else {})
    return {"templateId": template, "templateVariables": {"fieldValue": "hi"}, "metadata": metadata}


def create(pm: httpx.Client, token: str, customer: str | None = "c1", **kw: Any) -> httpx.Response:
    return pm.post("/accounts/demo/passes", headers=auth_headers(token), json=pass_body(customer), **kw)


# --------------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------------


def test_authenticate_accepts_basic_or_headers_and_rejects_bad_input(pm: httpx.Client) -> None:
    valid_to = int(time.time()) + 600
    basic = pm.get("/authenticate", params={"validTo": valid_to}, auth=CREDS)
    headers = {"X-Public-Token": CREDS[0], "X-Secret-Token": CREDS[1]}
    by_headers = pm.get("/authenticate", params={"validTo": valid_to}, headers=headers)
    assert basic.status_code == by_headers.status_code == 200
    assert basic.json()["validTo"] == valid_to
    assert basic.json()["token"] != by_headers.json()["token"]

    assert pm.get("/authenticate", params={"validTo": valid_to}, auth=(CREDS[0], "nope")).status_code == 401
    assert pm.get("/authenticate", auth=CREDS).status_code == 400
    assert pm.get("/authenticate", params={"validTo": time.time() - 1}, auth=CREDS).status_code == 400


def test_token_expires_at_valid_to_and_ttl_is_capped(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm, valid_for=0.5)
    assert create(pm, token).status_code == 201
    time.sleep(0.6)
    expired = create(pm, token)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]

    sandbox.admin.configure(token_max_ttl_s=60)
    before = time.time()
    r = pm.get("/authenticate", params={"validTo": before + 3600}, auth=CREDS)
    assert before + 59 <= r.json()["validTo"] <= time.time() + 60
    assert sandbox.admin.stats()["tokens_issued"] == 2


def test_revoked_tokens_get_401_and_a_new_token_works(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    assert sandbox.admin.revoke_tokens() == 1
    r = create(pm, token)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert create(pm, get_token(pm)).status_code == 201
    assert create(pm, "made-up-token").status_code == 401


# --------------------------------------------------------------------------------------------------
# Passes
# --------------------------------------------------------------------------------------------------


def test_create_get_lookup_patch_round_trip(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    h = auth_headers(token)
    r = create(pm, token, "cust-42")
    assert r.status_code == 201, r.text
    doc = r.json()["data"]
    pass_id, url = doc["id"], doc["ro"]["microsite"]["url"]
    assert url == f"{sandbox.url}/passmachine/p/{pass_id}"
    assert doc["metadata"]["registered"] == "cust-42" and doc["createdAt"].endswith("Z")
    assert httpx.get(url).status_code == 200

    assert pm.get(f"/accounts/demo/passes/{pass_id}", headers=h).json()["data"] == doc
    found = pm.get("/accounts/demo/passes", headers=h, params={"metadata.registered": "cust-42"})
    assert [p["id"] for p in found.json()["data"]] == [pass_id]
    assert pm.get("/accounts/demo/passes", headers=h, params={"metadata.registered": "other"}).json() == {
        "data": []
    }

    patch = [
        {"op": "replace", "path": "/templateVariables/fieldValue", "value": "NOTIFICATION"},
        {"op": "add", "path": "/templateVariables/changeMessage", "value": "new"},
    ]
    patched = pm.patch(
        f"/accounts/demo/passes/{pass_id}",
        headers=h | {"Content-Type": "application/json-patch+json"},
        json=patch,
    )
    assert patched.status_code == 200, patched.text
    again = pm.get(f"/accounts/demo/passes/{pass_id}", headers=h).json()["data"]
    assert again["templateVariables"] == {"fieldValue": "NOTIFICATION", "changeMessage": "new"}

    bad_ops = [{"op": "remove", "path": "/templateVariables/missing"}]
    assert pm.patch(f"/accounts/demo/passes/{pass_id}", headers=h, json=bad_ops).status_code == 400
    read_only = [{"op": "replace", "path": "/id", "value": "x"}]
    assert pm.patch(f"/accounts/demo/passes/{pass_id}", headers=h, json=read_only).status_code == 400
    assert pm.patch("/accounts/demo/passes/nope", headers=h, json=patch).status_code == 404
    assert pm.get("/accounts/demo/passes/nope", headers=h).status_code == 404
    assert pm.get("/accounts/demo/passes", headers=h).status_code == 400  # lookup needs a filter
    stats = sandbox.admin.stats()
    assert stats["updates_applied"] == 1 and stats["passes_created"] == 1


def test_create_validation_and_account_scope(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    h = auth_headers(token)
    assert (
        pm.post("/accounts/demo/passes", headers=h, json=pass_body(template="tpl-invalid-x")).status_code
        == 400
    )
    assert pm.post("/accounts/demo/passes", headers=h, content=b"{not json").status_code == 400
    assert pm.post("/accounts/demo/passes", headers=h, json={"metadata": {}}).status_code == 400
    assert pm.post("/accounts/other/passes", headers=h, json=pass_body()).status_code == 403

    sandbox.admin.configure(
        accounts=[
            {"name": "demo", "public_token": CREDS[0], "secret_token": CREDS[1]},
            {"name": "acme", "public_token": "p2", "secret_token": "s2"},
        ]
    )
    acme = pm.get("/authenticate", params={"validTo": time.time() + 60}, auth=("p2", "s2")).json()["token"]
    pass_id = create(pm, token).json()["data"]["id"]
    acme_h = auth_headers(acme)
    assert pm.get(f"/accounts/acme/passes/{pass_id}", headers=acme_h).status_code == 404
    assert pm.post("/accounts/acme/passes", headers=acme_h, json=pass_body()).status_code == 201


def test_missing_x_timestamp_is_400(pm: httpx.Client) -> None:
    token = get_token(pm)
    h = {"Authorization": f"Bearer {token}"}
    r = pm.post("/accounts/demo/passes", headers=h, json=pass_body())
    assert r.status_code == 400 and "X-Timestamp" in r.json()["error"]["message"]
    pass_id = create(pm, token).json()["data"]["id"]
    ops = [{"op": "replace", "path": "/templateVariables/fieldValue", "value": "x"}]
    assert pm.patch(f"/accounts/demo/passes/{pass_id}", headers=h, json=ops).status_code == 400


def test_duplicates_are_counted_per_customer_key(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    for customer in ("c1", "c1", "c2", None, "c3", "c3", "c3"):
        assert create(pm, token, customer).status_code == 201
    stats = sandbox.admin.stats()
    assert stats["passes_created"] == 7
    assert stats["passes_per_customer"] == {"c1": 2, "c2": 1, "c3": 3}
    assert stats["duplicates"] == 2 and stats["duplicate_keys"] == ["c1", "c3"]
    assert stats["passes_without_customer_key"] == 1

    sandbox.admin.configure(customer_key="email")
    sandbox.admin.reset(keep_config=True)  # forgets tokens too
    token = get_token(pm)
    create(pm, token, "c1")
    create(pm, token, "c2")
    assert sandbox.admin.stats()["passes_per_customer"] == {"a@example.com": 2}


# --------------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------------


async def burst(sandbox: SandboxHandle, token: str, n: int) -> list[httpx.Response]:
    """``n`` creates sent at once, each on its own connection."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=sandbox.passmachine_url, limits=limits, timeout=10) as client:
        return await asyncio.gather(
            *(
                client.post("/accounts/demo/passes", headers=auth_headers(token), json=pass_body(f"c{i}"))
                for i in range(n)
            )
        )


def test_in_flight_limit_answers_429_with_retry_after_seconds(
    sandbox: SandboxHandle, pm: httpx.Client
) -> None:
    sandbox.admin.configure(max_in_flight=3, latency_ms=400)
    token = get_token(pm)
    responses = asyncio.run(burst(sandbox, token, 10))
    codes = Counter(r.status_code for r in responses)
    assert codes == {201: 3, 429: 7}
    assert {r.headers["Retry-After"] for r in responses if r.status_code == 429} == {"1"}

    stats = sandbox.admin.stats()
    demo = stats["by_account"]["demo"]
    assert demo["max_in_flight"]["accepted"] == 3
    assert 4 <= demo["max_in_flight"]["all"] <= 10
    assert demo["arrivals"] == {"all": 10, "accepted": 3}
    assert demo["max_arrivals_1s"] == {"all": 10, "accepted": 3}
    assert stats["requests"]["create"] == {"201": 3, "429": 7}
    assert stats["passes_created"] == 3


def test_rate_limit_answers_429_with_http_date_that_can_be_honoured(
    sandbox: SandboxHandle, pm: httpx.Client
) -> None:
    sandbox.admin.configure(max_per_second=4, retry_after="http-date")
    token = get_token(pm)
    responses = asyncio.run(burst(sandbox, token, 10))
    assert Counter(r.status_code for r in responses) == {201: 4, 429: 6}
    dates = [
        email.utils.parsedate_to_datetime(r.headers["Retry-After"]) for r in responses if r.status_code == 429
    ]
    latest = max(d.timestamp() for d in dates)
    assert time.time() < latest <= time.time() + 2.5

    stats = sandbox.admin.stats()
    assert stats["max_arrivals_1s"] == {"all": 10, "accepted": 4}
    time.sleep(max(0.0, latest - time.time()))
    assert create(pm, token).status_code == 201  # Retry-After told the truth


def test_authenticate_is_not_limited(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    sandbox.admin.configure(max_per_second=1)
    for _ in range(3):
        get_token(pm)
    assert sandbox.admin.stats()["arrivals"] == {"all": 0, "accepted": 0}


def test_max_in_window_is_exact() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([5.0, 0.0, 0.5, 0.99, 1.0, 1.2]) == 4  # 0.5, 0.99, 1.0, 1.2
    assert max_in_window([0.0, 1.0, 2.0]) == 1  # the window is half-open
    assert max_in_window([0.0] * 7) == 7


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_status_faults_after_count_and_every(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    sandbox.admin.configure(
        faults=[
            FaultRule(kind="status", code=503, endpoint="create", after=1, count=1),
            {"kind": "status", "code": 429, "endpoint": "lookup", "every": 2},
        ]
    )
    token = get_token(pm)
    assert [create(pm, token, f"c{i}").status_code for i in range(3)] == [201, 503, 201]
    h = auth_headers(token)
    lookups = [
        pm.get("/accounts/demo/passes", headers=h, params={"metadata.registered": "c0"}) for _ in range(4)
    ]
    assert [r.status_code for r in lookups] == [200, 429, 200, 429]
    assert lookups[1].headers["Retry-After"] == "1"
    assert [f["fired"] for f in sandbox.admin.stats()["faults"]] == [1, 2]
    assert sandbox.admin.stats()["passes_created"] == 2


def test_fault_can_target_authenticate_only(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "status", "code": 502, "endpoint": "authenticate"}])
    assert pm.get("/authenticate", params={"validTo": time.time() + 60}, auth=CREDS).status_code == 502
    assert create(pm, token).status_code == 201


def test_slow_creates_nothing_but_slow_after_commit_creates(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "slow", "delay_s": 1.0, "count": 1}])
    with pytest.raises(httpx.ReadTimeout):
        create(pm, token, "slow", timeout=0.3)
    assert sandbox.admin.passes() == []

    sandbox.admin.configure(faults=[{"kind": "slow_after_commit", "delay_s": 1.0, "count": 1}])
    with pytest.raises(httpx.ReadTimeout):
        create(pm, token, "slow", timeout=0.3)
    assert [p["metadata"]["registered"] for p in sandbox.admin.passes()] == ["slow"]


def test_drop_closes_the_connection_without_creating(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "drop", "endpoint": "create", "count": 1}])
    # A closed socket reads as "disconnected without a response" or, when the close races the
    # request bytes, as a reset: the client sees both in the wild and must treat them alike.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        create(pm, token, "c1")
    assert sandbox.admin.passes() == []
    assert create(pm, token, "c1").status_code == 201  # the next one goes through
    stats = sandbox.admin.stats()
    assert stats["requests"]["create"] == {"dropped": 1, "201": 1}
    assert stats["duplicates"] == 0


def test_drop_after_commit_loses_the_response_of_a_created_pass(
    sandbox: SandboxHandle, pm: httpx.Client
) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "drop_after_commit", "endpoint": "create", "count": 1}])
    with pytest.raises(httpx.TransportError):
        create(pm, token, "c1")
    h = auth_headers(token)
    found = pm.get("/accounts/demo/passes", headers=h, params={"metadata.registered": "c1"}).json()["data"]
    assert len(found) == 1  # reconciliation finds it
    create(pm, token, "c1")  # a blind retry duplicates it
    assert sandbox.admin.stats()["duplicate_keys"] == ["c1"]


def test_revoke_fault_revokes_the_presented_token(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "revoke", "endpoint": "create", "count": 1}])
    assert create(pm, token).status_code == 401
    assert create(pm, token).status_code == 401  # stays revoked
    assert create(pm, get_token(pm)).status_code == 201


def test_malformed_bodies(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    token = get_token(pm)
    sandbox.admin.configure(faults=[{"kind": "malformed", "count": 1}])
    r = create(pm, token, "m1")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert sandbox.admin.passes() == []

    sandbox.admin.configure(faults=[{"kind": "malformed_after_commit", "count": 1}])
    r = create(pm, token, "m2")
    with pytest.raises(ValueError):
        r.json()
    assert [p["metadata"]["registered"] for p in sandbox.admin.passes()] == ["m2"]


def test_invalid_config_is_rejected(sandbox: SandboxHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as err:
        sandbox.admin.configure(faults=[{"kind": "explode"}])
    assert err.value.response.status_code == 400
    assert sandbox.admin.config()["faults"] == []


# --------------------------------------------------------------------------------------------------
# Skycore
# --------------------------------------------------------------------------------------------------

PARAMS = [
    ("user-email", "anna+promo@example.com"),
    ("user-phone", "+15551234567"),
    ("pass-id", "MOEDAnna2022"),
    ("barcode-value", "MOEDAnna2022"),
    ("message4", "Enter this coupon code while checking out & save"),
]


def test_skycore_link_checksum_is_verified(sandbox: SandboxHandle) -> None:
    good = build_link(f"{sandbox.skycore_url}/wallet/gc/LINK1", PARAMS)
    assert httpx.get(good).status_code == 200
    tampered = good.replace("barcode-value=MOEDAnna2022", "barcode-value=MOEDAnna2023")
    r = httpx.get(tampered)
    assert r.status_code == 403
    assert r.json() == {"status": "failure", "error-code": "E401", "error-info": "checksum mismatch"}
    # A link signed for the real Skycore host verifies when only the host is swapped.
    real = build_link("https://d2c.skycore.com/wallet/gc/LINK1", PARAMS)
    assert httpx.get(real.replace("https://d2c.skycore.com", sandbox.skycore_url)).status_code == 200

    sky = sandbox.admin.stats()["skycore"]
    assert sky["links"] == {"ok": 2, "bad": 1}
    assert sky["installs"] == {"MOEDAnna2022": 2}


def test_skycore_salted_link_uses_the_registered_recipe(sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(
        skycore_links={"SALTY": {"salt": "s3cret", "salt_position": "prepend", "hex_case": "upper"}}
    )
    recipe = LinkRecipe(salt_position="prepend", hex_case="upper")
    base = f"{sandbox.skycore_url}/wallet/gc/"
    assert httpx.get(build_link(base + "SALTY", PARAMS, salt="s3cret", recipe=recipe)).status_code == 200
    assert httpx.get(build_link(base + "SALTY", PARAMS)).status_code == 403
    assert httpx.get(build_link(base + "SALTY", PARAMS, salt="s3cret")).status_code == 403  # wrong recipe
    # Unknown link ids use the unsalted default recipe.
    assert httpx.get(build_link(base + "OTHER", PARAMS, salt="s3cret", recipe=recipe)).status_code == 403


def test_skycore_api_answers_200_with_success_or_failure(sandbox: SandboxHandle) -> None:
    # The published v3 shape: one account API URL, the function in `action`.
    url = sandbox.skycore_url
    body = {
        "action": "updatepassdata",
        "pass-id": "MOEDAnna2022",
        "pass-template-id": "d5144e25",
        "pass-data": {"pass-update-notification": "x"},
    }

    missing = httpx.post(url, headers=SKY_KEY, json=body)
    assert missing.status_code == 200 and missing.json()["error-code"] == "E808"
    bad_key = httpx.post(url, headers={"X-Api-Key": "nope"}, json=body)
    assert bad_key.status_code == 200 and bad_key.json()["error-code"] == "E104"
    no_action = httpx.post(url, headers=SKY_KEY, json={k: v for k, v in body.items() if k != "action"})
    assert no_action.status_code == 200 and no_action.json()["error-code"] == "E101"

    httpx.get(build_link(f"{sandbox.skycore_url}/wallet/gc/LINK1", PARAMS))  # installs MOEDAnna2022
    ok = httpx.post(url, headers=SKY_KEY, json=body)
    assert ok.status_code == 200 and ok.json() == {
        "status": "success",
        "pass-id": "MOEDAnna2022",
        "pass-status": "active",
    }

    assert sandbox.admin.register_skycore_passes(["PRE1"]) == 1
    void = {
        "action": "updatepassdata",
        "pass-id": "PRE1",
        "pass-template-id": "d5144e25",
        "pass-data": {"pass-status": "expired"},
    }
    assert httpx.post(url, headers=SKY_KEY, json=void).json()["pass-status"] == "expired"

    sky = sandbox.admin.stats()["skycore"]
    assert sky["updates"] == 2 and sky["voided"] == ["PRE1"]
    assert sky["updates_by_result"] == {"E808": 1, "E104": 1, "E101": 1, "success": 2}
    sent = [u for u in sandbox.admin.skycore_updates() if u["result"] == "success"]
    assert [u["pass-data"] for u in sent] == [{"pass-update-notification": "x"}, {"pass-status": "expired"}]
    assert sandbox.admin.skycore_passes()["PRE1"]["voided"] is True


# --------------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------------


def test_thread_handle_exposes_state(sandbox: SandboxHandle, pm: httpx.Client) -> None:
    create(pm, get_token(pm))
    assert sandbox.state is not None and len(sandbox.state.all_passes()) == 1


def test_process_sandbox_starts_serves_and_stops() -> None:
    handle = start_sandbox_process(max_in_flight=7)
    try:
        assert handle.admin.config()["max_in_flight"] == 7
        with httpx.Client(base_url=handle.passmachine_url) as pm:
            assert create(pm, get_token(pm)).status_code == 201
        assert handle.admin.stats()["passes_created"] == 1
    finally:
        handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/_admin/health")
