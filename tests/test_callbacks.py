"""Vendor callbacks: authentication, idempotent recording, out-of-order status, Prefect events,
and the real HTTP path (callbacks server in a thread, sandbox playing the vendor)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from passflow.callbacks.auth import CallbackAuthError, sign, signed_headers, verify
from passflow.callbacks.funnel import funnel_counts
from passflow.callbacks.server import start_callbacks_thread
from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.sandbox import start_sandbox_thread
from passflow.store.events import CallbackStore, PassEvent, events_table, status_table
from passflow.store.ledger import Ledger

SECRET = "cb-secret-for-tests-123"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

CAMPAIGN = """
[campaign]
name = "cb-{provider}"
provider = "{provider}"
[source]
csv = "segment.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
pass-id = "P{{{{ customer.customer_id }}}}"
[passmachine]
api_base_url = "http://127.0.0.1:9/passmachine"
account = "demo"
template_id = "tpl-1"
public_token = {{ env = "PM_PUB" }}
secret_token = {{ env = "PM_SEC" }}
[callbacks]
secret = {{ env = "PASSFLOW_TEST_CB_SECRET" }}
auth = {auth}
[ledger]
url = "{ledger}"
"""


def write_campaign(tmp_path: Path, ledger: str, provider: str = "skycore", auth: str = '["signature"]') -> Path:
    p = tmp_path / f"{provider}.toml"
    p.write_text(CAMPAIGN.format(provider=provider, ledger=ledger, auth=auth), encoding="utf-8")
    return p


def seed_ledger(url: str, campaign: str, provider: str, customers: list[str]) -> None:
    ledger = Ledger(url)
    rows = pd.DataFrame(
        {
            "customer_id": customers,
            "status": "issued",
            "pass_id": [f"P{c}" for c in customers],
            "pass_link": "",
            "fingerprint": "f",
            "last_error": None,
            "issued_at": T0,
        }
    )
    ledger.record(campaign, provider, rows, "run-1")
    ledger.close()


def ev(event: str, at: datetime, vid: str, customer: str = "1") -> PassEvent:
    return PassEvent("skycore", "c", customer, f"P{customer}", event, vid, at, {"k": vid})


def table_counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (events_table, status_table)]
    engine.dispose()
    return n[0], n[1]


# --- authentication (pure) --------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a": 1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", body) == f"sha256={expected}"


def test_verify_accepts_good_and_rejects_bad_credentials() -> None:
    body, now = b'{"x": 1}', time.time()
    good = signed_headers(SECRET, body, now=now)
    assert verify(good, body, secret=SECRET, now=now) == "signature"
    cases = {
        "wrong secret": (signed_headers(SECRET + "x", body, now=now), body, 403, "signature does not match"),
        "tampered body": (good, b'{"x": 2}', 403, "signature does not match"),
        "stale": (signed_headers(SECRET, body, now=now - 301), body, 403, "stale timestamp"),
        "future": (signed_headers(SECRET, body, now=now + 301), body, 403, "stale timestamp"),
        "no credentials": ({}, body, 401, "missing credentials"),
        "token not allowed": ({"X-Passflow-Token": SECRET}, body, 401, "missing credentials"),
    }
    for name, (headers, sent, status, reason) in cases.items():
        with pytest.raises(CallbackAuthError) as exc:
            verify(headers, sent, secret=SECRET, now=now)
        assert (exc.value.status, name) == (status, name) and reason in exc.value.reason
        assert SECRET not in exc.value.reason
    assert verify({"X-Passflow-Token": SECRET}, body, secret=SECRET, schemes=("token",)) == "token"
    with pytest.raises(CallbackAuthError):
        verify({"X-Passflow-Token": SECRET + "!"}, body, secret=SECRET, schemes=("token",))


# --- the store (SQLite and PostgreSQL) ----------------------------------------------------------------


def test_duplicate_callback_is_recorded_once(db_url: str) -> None:
    store = CallbackStore(db_url)
    assert store.record(ev("installed", T0, "v1")) is True
    assert store.record(ev("installed", T0, "v1")) is False
    # the same vendor id from the other provider is a different callback
    assert store.record(PassEvent("passmachine", "c", "1", "P1", "added", "v1", T0, {})) is True
    events = store.events("c")
    assert len(events) == 2 and list(events["provider"]) == ["skycore", "passmachine"]
    assert events["occurred_at"].iloc[0] == T0 and events["received_at"].iloc[0].tzinfo is not None
    assert json.loads(events["payload"].iloc[0]) == {"k": "v1"}
    store.close()


def test_out_of_order_callbacks_keep_the_latest_status(db_url: str) -> None:
    store = CallbackStore(db_url)
    # customer 1: uninstall arrives first, the earlier install later — still uninstalled
    store.record(ev("uninstalled", T0 + timedelta(hours=2), "u1"))
    store.record(ev("installed", T0 + timedelta(hours=1), "i1"))
    store.record(ev("generated", T0, "g1"))  # the oldest, last: changes nothing but is recorded
    # customer 2: in order, re-installed after an uninstall
    for i, (event, h) in enumerate([("installed", 1), ("uninstalled", 2), ("installed", 3)]):
        store.record(ev(event, T0 + timedelta(hours=h), f"c2-{i}", customer="2"))
    # customer 3: install and uninstall at the same second: the later stage (uninstalled) wins either way
    store.record(ev("uninstalled", T0, "s1", customer="3"))
    store.record(ev("installed", T0, "s2", customer="3"))
    st = store.install_status("c").set_index("customer_id")
    assert st.loc["1", "status"] == "uninstalled" and st.loc["1", "status_at"] == T0 + timedelta(hours=2)
    assert st.loc["1", "installed_at"] == T0 + timedelta(hours=1)
    assert st.loc["1", "uninstalled_at"] == T0 + timedelta(hours=2)
    assert st.loc["2", "status"] == "installed" and st.loc["2", "installed_at"] == T0 + timedelta(hours=3)
    assert st.loc["2", "uninstalled_at"] == T0 + timedelta(hours=2)
    assert st.loc["3", "status"] == "uninstalled"
    assert len(store.events("c")) == 8
    only = store.install_status("c", ["2", "missing"])
    assert list(only["customer_id"]) == ["2"]
    store.close()


# --- over HTTP: the real server -------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("PASSFLOW_TEST_CB_SECRET", SECRET)
    seed_ledger(db_url, "cb-skycore", "skycore", ["1", "2", "3"])
    emitted: list[dict[str, Any]] = []

    def emitter(**kw: Any) -> object:
        if kw["resource"]["passflow.customer_id"] == "3":
            raise RuntimeError("Prefect API down")
        emitted.append(kw)
        return object()

    campaign = load_campaign(write_campaign(tmp_path, db_url))
    url, stop = start_callbacks_thread([campaign], emitter=emitter)
    try:
        yield f"{url}/callbacks/cb-skycore/skycore", db_url, emitted
    finally:
        stop()


def postback(event_code: str, pass_id: str, pid: str, ts: str = "2026-11-30T12:00:00Z") -> bytes:
    return json.dumps({"postback-id": pid, "status-code": event_code, "pass-id": pass_id, "timestamp": ts}).encode()


def test_http_rejects_bad_credentials_and_changes_nothing(served: tuple[str, str, list]) -> None:
    url, db, emitted = served
    body = postback("N805", "P1", "pb-1")
    stale = signed_headers(SECRET, body, now=time.time() - 3600)
    for headers, status in [
        (signed_headers("not-the-secret", body), 403),
        (stale, 403),
        ({"Content-Type": "application/json"}, 401),
        ({"X-Passflow-Token": SECRET}, 401),  # token auth is not enabled for this campaign
    ]:
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == status and r.json()["reason"]
        assert SECRET not in r.text
    assert table_counts(db) == (0, 0) and emitted == []


def test_http_records_once_maps_customer_and_emits(served: tuple[str, str, list]) -> None:
    url, db, emitted = served
    body = postback("N805", "P2", "pb-2")
    first = httpx.post(url, content=body, headers=signed_headers(SECRET, body))
    again = httpx.post(url, content=body, headers=signed_headers(SECRET, body))
    assert first.status_code == 200 and first.json() == {
        "recorded": True, "event": "uninstalled", "customer_id": "2", "emitted": True
    }
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert table_counts(db) == (1, 1)
    assert len(emitted) == 1 and emitted[0]["event"] == "passflow.pass.uninstalled"
    assert emitted[0]["resource"] == {
        "prefect.resource.id": "passflow.pass.cb-skycore.2",
        "passflow.campaign": "cb-skycore",
        "passflow.customer_id": "2",
        "passflow.pass_id": "P2",
    }
    assert emitted[0]["occurred"] == datetime(2026, 11, 30, 12, tzinfo=UTC)
    # emission failing (customer 3) still records the callback
    body3 = postback("N804", "P3", "pb-3")
    r3 = httpx.post(url, content=body3, headers=signed_headers(SECRET, body3))
    assert r3.json()["recorded"] is True and r3.json()["emitted"] is False
    assert table_counts(db) == (2, 2)


def test_http_refuses_bad_bodies_with_a_reason(served: tuple[str, str, list]) -> None:
    url, db, _ = served
    for body, status, reason in [
        (b"not json", 400, "not valid JSON"),
        (postback("N999", "P1", "x"), 422, "status-code must be one of"),
        (postback("N804", "NOPE", "x"), 422, "not in the ledger"),
        (postback("N804", "P1", "x", ts="yesterday"), 422, "ISO 8601"),
    ]:
        r = httpx.post(url, content=body, headers=signed_headers(SECRET, body))
        assert (r.status_code, reason in r.json()["reason"]) == (status, True), r.text
    other = url.replace("/skycore", "/passmachine")
    r = httpx.post(other, content=b"{}", headers=signed_headers(SECRET, b"{}"))
    assert r.status_code == 404
    assert table_counts(db) == (0, 0)


def test_missing_secret_or_section_stops_before_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASSFLOW_TEST_CB_SECRET", raising=False)
    campaign = load_campaign(write_campaign(tmp_path, f"sqlite:///{tmp_path / 'l.db'}"))
    with pytest.raises(ConfigError, match="PASSFLOW_TEST_CB_SECRET") as exc:
        start_callbacks_thread([campaign])
    assert "callbacks.secret" in str(exc.value)
    p = write_campaign(tmp_path, "sqlite:///x.db")
    p.write_text(p.read_text().replace('secret = { env = "PASSFLOW_TEST_CB_SECRET" }', 'secret = "literal"'))
    with pytest.raises(ConfigError, match="references, not values") as exc:
        load_campaign(p)
    assert "literal" not in str(exc.value)


# --- the sandbox plays the vendor ----------------------------------------------------------------------


def test_sandbox_postbacks_and_webhooks_reach_the_callbacks_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSFLOW_TEST_CB_SECRET", SECRET)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    seed_ledger(db, "cb-skycore", "skycore", ["1", "2"])
    seed_ledger(db, "cb-passmachine", "passmachine", ["7"])
    campaigns = [load_campaign(write_campaign(tmp_path, db, p)) for p in ("skycore", "passmachine")]
    url, stop = start_callbacks_thread(campaigns, emitter=lambda **kw: None)
    try:
        with start_sandbox_thread() as sandbox:
            sandbox.admin.configure(
                callback_urls={
                    "skycore": f"{url}/callbacks/cb-skycore/skycore",
                    "passmachine": f"{url}/callbacks/cb-passmachine/passmachine",
                },
                callback_secret_env="PASSFLOW_TEST_CB_SECRET",
            )
            sim = sandbox.admin.simulate_callback
            assert sim(provider="skycore", pass_id="P1", event="installed")["status"] == 200
            assert sim(provider="skycore", pass_id="P1", event="uninstalled")["status"] == 200
            for signing in ("wrong-secret", "stale", "none"):
                assert sim(provider="skycore", pass_id="P2", event="installed", signing=signing)["status"] in (401, 403)
            added = sim(provider="passmachine", pass_id="P7", event="added", customer_id="7")
            assert added["status"] == 200 and added["response"]["customer_id"] == "7"
            assert added["sent"]["event"] == "pass.added"
            stats = sandbox.admin.stats()["requests"]
            assert stats["callback_skycore"] == {"200": 2, "403": 2, "401": 1}
    finally:
        stop()
    store = CallbackStore(db)
    st = store.install_status("cb-skycore").set_index("customer_id")
    assert list(st.index) == ["1"] and st.loc["1", "status"] == "uninstalled"
    assert store.install_status("cb-passmachine")["status"].tolist() == ["installed"]
    store.close()
    assert funnel_counts(db, "cb-skycore") == {
        "issued": 2, "generated": 1, "failed": 0, "installed": 1, "uninstalled": 1, "installed_now": 0
    }


# --- end to end: issue → uninstall in the wallet → postback → void ----------------------------------

E2E_CAMPAIGN = """
[campaign]
name = "e2e-coupon"
provider = "skycore"
[source]
csv = "segment.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
user-email = "{{{{ customer.email }}}}"
pass-id = "E{{{{ customer.customer_id }}}}"
[export]
directory = "exports"
[ledger]
url = "sqlite:///ledger.db"
[callbacks]
secret = {{ env = "PASSFLOW_TEST_CB_SECRET" }}
[updates]
api_base_url = "{skycore_url}"
api_key = {{ env = "PASSFLOW_TEST_SKY_KEY" }}
pass_template_id = "tpl0001"
[updates.rules]
uninstalled = "void"
[updates.events]
table = "passflow_pass_events"
"""


def test_uninstall_postback_voids_the_pass_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from passflow.demo import write_segment_csv
    from passflow.run import run_issue
    from passflow.sandbox.state import DEMO_SKYCORE_API_KEY
    from passflow.updates import UpdateRequest, run_update

    monkeypatch.setenv("PASSFLOW_TEST_CB_SECRET", SECRET)
    monkeypatch.setenv("PASSFLOW_TEST_SKY_KEY", DEMO_SKYCORE_API_KEY)
    write_segment_csv(tmp_path / "segment.csv", rows=40)
    with start_sandbox_thread() as sandbox:
        path = tmp_path / "campaign.toml"
        path.write_text(E2E_CAMPAIGN.format(skycore_url=sandbox.skycore_url), encoding="utf-8")
        campaign = load_campaign(path)
        assert run_issue(campaign).counts.issued > 0
        issued = Ledger(campaign.ledger.url).rows("e2e-coupon", status="issued")
        sandbox.admin.register_skycore_passes(issued["pass_id"])  # the customers opened their links
        gone = issued.iloc[:3]
        url, stop = start_callbacks_thread([campaign], emitter=lambda **kw: object())
        try:
            sandbox.admin.configure(
                callback_urls={"skycore": f"{url}/callbacks/e2e-coupon/skycore"},
                callback_secret_env="PASSFLOW_TEST_CB_SECRET",
            )
            for pass_id in issued["pass_id"]:
                assert sandbox.admin.simulate_callback(provider="skycore", pass_id=pass_id, event="installed")["status"] == 200
            for pass_id in gone["pass_id"]:
                r = sandbox.admin.simulate_callback(provider="skycore", pass_id=pass_id, event="uninstalled")
                assert r["status"] == 200 and r["response"]["recorded"] is True
            # a forged uninstall for another customer is refused and voids nothing
            other = issued["pass_id"].iloc[5]
            forged = sandbox.admin.simulate_callback(provider="skycore", pass_id=other, event="uninstalled",
                                                     signing="wrong-secret")
            assert forged["status"] == 403
        finally:
            stop()
        first = run_update(campaign, UpdateRequest(mode="events"))
        again = run_update(campaign, UpdateRequest(mode="events"))
        stats = sandbox.admin.stats()["skycore"]
    assert stats["voided"] == sorted(gone["pass_id"])
    assert stats["updates_by_result"] == {"success": 3}
    assert first["vendor_calls"] == 3 and again["vendor_calls"] == 0  # the re-run sends nothing new
    assert funnel_counts(campaign.ledger.url, "e2e-coupon") == {
        "issued": len(issued), "generated": len(issued), "failed": 0,
        "installed": len(issued), "uninstalled": 3, "installed_now": len(issued) - 3,
    }


def test_pass_lookup_index_follows_the_ledger(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import passflow.store.events as store_mod

    seed_ledger(db_url, "c", "skycore", ["1", "2"])
    store = CallbackStore(db_url)
    assert store.customer_for_pass("c", "P1") == "1"  # first miss builds the index
    seed_ledger(db_url, "c", "skycore", ["3"])  # issued after the index was built
    assert store.customer_for_pass("c", "P3") == "3"  # within the refresh interval: found by a scan
    # a pass moved to another customer (reissue): the stale index entry is not trusted, and fixed
    ledger = Ledger(db_url)
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("update passflow_ledger set pass_id = 'P1' where customer_id = '2'"))
        conn.execute(sa.text("update passflow_ledger set pass_id = 'PX' where customer_id = '1'"))
    ledger.close()
    assert store.customer_for_pass("c", "P1") == "2"
    assert store.customer_for_pass("c", "NOPE") is None
    monkeypatch.setattr(store_mod, "INDEX_REFRESH_S", 0.0)
    assert store.customer_for_pass("c", "PX") == "1"
    with store.engine.connect() as conn:
        index = dict(conn.execute(sa.text("select pass_id, customer_id from passflow_pass_index")).all())
    assert index["P1"] == "2" and index["PX"] == "1" and index["P3"] == "3"
    store.close()
