"""Skycore pass updates against the provider sandbox (a real HTTP server on loopback): events → void,
re-imports send nothing, failure bodies are failed rows with their code, batch diff touches only the
changed customers, and the vendor-callbacks table works as an events source."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from passflow.config import load_campaign
from passflow.errors import ConfigError, VendorError
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_SKYCORE_API_KEY, FaultRule
from passflow.updates import UpdateRequest, customer_history, run_update

SEGMENT = "customer_id,first_name,email\n" + "".join(f"C{i},Name{i},c{i}@example.com\n" for i in range(1, 11))


def campaign_text(url: str, ledger: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        [campaign]
        name = "sky-upd"
        provider = "skycore"
        pass_type = "coupon"
        [source]
        csv = "segment.csv"
        [skycore]
        link_base = "https://d2c.skycore.com/wallet/gc/abc"
        [skycore.params]
        pass-id = "P{{{{ customer.customer_id }}}}"
        message4 = "Hi {{{{ customer.first_name }}}}"
        [export]
        formats = []
        [ledger]
        url = "{ledger}"
        [limits]
        max_attempts = 4
        [updates]
        api_base_url = "{url}"
        api_key = {{ env = "PF_SKY_KEY" }}
        pass_template_id = "tplA1"
        diff_action = "refresh"
        [updates.actions.refresh.pass_data]
        pass-update-notification = "Hi {{{{ customer.first_name }}}}, your coupon changed."
        [updates.rules]
        app_uninstalled = "void"
        uninstalled = "void"
        """
    ) + textwrap.dedent(extra)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


@pytest.fixture
def setup(sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    sandbox.admin.reset()
    monkeypatch.setenv("PF_SKY_KEY", DEMO_SKYCORE_API_KEY)
    (tmp_path / "segment.csv").write_text(SEGMENT)

    def make(ledger: str | None = None, extra: str = "", register: int = 10):  # noqa: ANN202
        url = ledger or f"sqlite:///{tmp_path / 'ledger.db'}"
        (tmp_path / "c.toml").write_text(campaign_text(sandbox.skycore_url, url, extra))
        campaign = load_campaign(tmp_path / "c.toml")
        assert run_issue(campaign).counts.issued_new == 10
        # A Skycore pass exists once its link was opened; the sandbox lets us register them directly.
        sandbox.admin.register_skycore_passes([f"PC{i}" for i in range(1, register + 1)])
        return campaign

    return make


def sky(sandbox: SandboxHandle) -> dict:
    return sandbox.admin.stats()["skycore"]


def write_events(path: Path, rows: list[str]) -> str:
    path.write_text("customer_id,event,occurred_at\n" + "".join(r + "\n" for r in rows))
    return str(path)


def test_uninstall_event_voids_and_reimport_sends_nothing(
    setup, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    campaign = setup()
    events = write_events(
        tmp_path / "events.csv",
        [
            "C2,app_uninstalled,2026-11-20T08:00:00Z",
            "C3,app_opened,2026-11-20T08:00:00Z",  # no rule: ignored
            "C5,app_uninstalled,2026-11-20T09:00:00Z",
            "C5,app_uninstalled,2026-11-20T09:00:00Z",  # same event twice in one file
            "C99,app_uninstalled,2026-11-20T09:00:00Z",  # no pass in the ledger
        ],
    )
    first = run_update(campaign, UpdateRequest(mode="events", events_file=events))
    assert (first["sent"], first["skipped"], first["unmapped"], first["duplicates"]) == (2, 1, 1, 1)
    assert sky(sandbox)["voided"] == ["PC2", "PC5"]
    assert sky(sandbox)["updates"] == 2
    sent = [u for u in sandbox.admin.skycore_updates()]
    assert {u["pass-template-id"] for u in sent} == {"tplA1"}
    assert all(u["pass-data"] == {"pass-status": "expired"} for u in sent)  # the documented value

    again = run_update(campaign, UpdateRequest(mode="events", events_file=events))
    assert again.get("sent", 0) == 0 and again["already_handled"] == 3
    assert sky(sandbox)["updates"] == 2  # the vendor saw nothing new
    hist = customer_history(campaign, "C5")
    assert hist["status"].tolist() == ["sent"] and hist["action"].tolist() == ["void"]
    assert json.loads(hist["request"].iloc[0])["pass-id"] == "PC5"


def test_failure_bodies_are_failed_rows_with_their_code(setup, sandbox: SandboxHandle, monkeypatch) -> None:  # noqa: ANN001
    campaign = setup(register=3)  # PC4.. were never installed: Skycore answers E808 (pass-level)
    out = run_update(
        campaign, UpdateRequest(mode="customers", customer_ids=["C1", "C4", "C5"], action="void")
    )
    assert (out["sent"], out["failed"], out["error_codes"]) == (1, 2, {"E808": 2})
    hist = customer_history(campaign, "C4")
    row = hist.iloc[-1]
    assert (row["status"], row["error_code"], int(row["attempts"])) == (
        "failed",
        "E808",
        1,
    )  # answered: no retry
    assert "invalid" in row["error"]

    # A wrong key: HTTP 200 {"status":"failure","error-code":"E104"} (authentication failed) stops the
    # run at the first call with Skycore's message and the fix; the rest are recorded as not sent.
    monkeypatch.setenv("PF_SKY_KEY", "wrong-key-123456")
    before = sandbox.admin.stats()["requests"]["skycore_update"]
    ids = [f"C{i}" for i in range(1, 11)]
    with pytest.raises(VendorError, match="stopped: E104: authentication failed.*fix: .*API Settings") as exc:
        run_update(
            load_campaign(campaign.path), UpdateRequest(mode="customers", customer_ids=ids, action="void")
        )
    assert "wrong-key-123456" not in str(exc.value)
    after = sandbox.admin.stats()["requests"]["skycore_update"]
    assert sum(after.values()) - sum(before.values()) == 1  # one call, not one per customer
    hist = customer_history(campaign, "C1")
    assert (hist["status"].iloc[-1], hist["error_code"].iloc[-1]) == ("failed", "E104")
    assert customer_history(campaign, "C2")["error_code"].iloc[-1] == "not_sent"
    store_text = customer_history(campaign, "C1").to_json(date_format="iso")
    assert "wrong-key-123456" not in store_text and DEMO_SKYCORE_API_KEY not in store_text


def test_transient_errors_are_retried_within_the_limiter(setup, sandbox: SandboxHandle) -> None:
    campaign = setup()
    sandbox.admin.configure(faults=[FaultRule(kind="status", code=503, endpoint="skycore_update", count=2)])
    out = run_update(
        campaign, UpdateRequest(mode="customers", customer_ids=["C1", "C2", "C3"], action="expire")
    )
    assert out["sent"] == 3 and out["vendor_calls"] == 5
    assert sky(sandbox)["updates"] == 3


@pytest.mark.parametrize("code", ["E106", "E113"])
def test_throttling_bursts_update_everyone_exactly_once(setup, sandbox: SandboxHandle, code: str) -> None:  # noqa: ANN001
    # Skycore's throttling comes as failure bodies; every third call is refused (up to 6).
    campaign = setup()
    fault = FaultRule(kind="skycore_error", error_code=code, endpoint="skycore_update", every=3, count=6)
    sandbox.admin.configure(faults=[fault])
    ids = [f"C{i}" for i in range(1, 11)]
    out = run_update(campaign, UpdateRequest(mode="customers", customer_ids=ids, action="expire"))
    assert out["sent"] == 10 and out.get("failed", 0) == 0
    fired = sandbox.admin.stats()["faults"][0]["fired"]
    assert fired >= 3 and out["vendor_calls"] == 10 + fired  # each refused attempt was retried
    applied = [u["pass-id"] for u in sandbox.admin.skycore_updates() if u["result"] == "success"]
    assert sorted(applied) == sorted(f"PC{i}" for i in range(1, 11))  # each exactly once


@pytest.mark.parametrize(("code", "says"), [("E104", "API Settings"), ("E120", "quota")])
def test_auth_or_quota_mid_run_stops_and_the_rerun_finishes(
    setup, sandbox: SandboxHandle, code, says
) -> None:  # noqa: ANN001
    campaign = setup()
    sandbox.admin.configure(
        faults=[FaultRule(kind="skycore_error", error_code=code, endpoint="skycore_update", after=3, count=1)]
    )
    ids = [f"C{i}" for i in range(1, 11)]
    with pytest.raises(VendorError, match=f"stopped: {code}.*fix: .*{says}"):
        run_update(campaign, UpdateRequest(mode="customers", customer_ids=ids, action="expire"))
    done = sky(sandbox)["updates"]
    assert 3 <= done < 10
    sandbox.admin.configure(faults=[])
    rerun = run_update(
        load_campaign(campaign.path), UpdateRequest(mode="customers", customer_ids=ids, action="expire")
    )
    applied = [u["pass-id"] for u in sandbox.admin.skycore_updates() if u["result"] == "success"]
    assert sorted(set(applied)) == sorted(f"PC{i}" for i in range(1, 11))
    assert rerun["sent"] + done >= 10


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_batch_diff_updates_only_changed_customers(
    setup, sandbox: SandboxHandle, tmp_path: Path, db, request
) -> None:  # noqa: ANN001
    ledger = request.getfixturevalue("pg_url") if db == "postgres" else None
    campaign = setup(ledger=ledger)
    unchanged = run_update(campaign, UpdateRequest(mode="diff"))
    assert (unchanged["unchanged"], unchanged.get("sent", 0), unchanged["vendor_calls"]) == (10, 0, 0)
    assert sky(sandbox)["updates"] == 0

    renamed = SEGMENT.replace("Name3,", "Renamed3,").replace("Name7,", "Renamed7,")
    (tmp_path / "segment.csv").write_text(renamed)
    changed = run_update(campaign, UpdateRequest(mode="diff"))
    assert (changed["changed"], changed["unchanged"], changed["sent"]) == (2, 8, 2)
    notes = {
        u["pass-id"]: u["pass-data"]["pass-update-notification"] for u in sandbox.admin.skycore_updates()
    }
    assert notes == {"PC3": "Hi Renamed3, your coupon changed.", "PC7": "Hi Renamed7, your coupon changed."}

    again = run_update(campaign, UpdateRequest(mode="diff"))  # the baseline moved: nothing left to send
    assert again.get("sent", 0) == 0 and sky(sandbox)["updates"] == 2

    dry = UpdateRequest(mode="diff", dry_run=True)
    (tmp_path / "segment.csv").write_text(renamed.replace("Name1,", "Other1,"))
    preview = run_update(campaign, dry)
    assert preview["would_send"] == 1 and preview["preview"][0]["customer_id"] == "C1"
    assert sky(sandbox)["updates"] == 2  # a dry run sends nothing


def test_callbacks_table_is_an_events_source(setup, sandbox: SandboxHandle, db_url: str) -> None:
    """The callbacks engineer writes passflow_pass_events; "uninstalled → void" runs from it directly."""
    campaign = setup(ledger=db_url, extra='[updates.events]\ntable = "passflow_pass_events"\n')
    from passflow.store.events import events_table  # the callbacks engineer's table, as written there
    from passflow.store.ledger import Ledger

    Ledger(db_url).close()  # opening a ledger creates every passflow table (passflow.store.schema)
    engine = sa.create_engine(db_url)
    now = datetime.now(UTC)
    rows = [
        {"provider": "skycore", "campaign": "sky-upd", "customer_id": "C4", "pass_id": "PC4", "event": "uninstalled",
         "vendor_event_id": "n805-1"},
        {"provider": "skycore", "campaign": "sky-upd", "customer_id": "C6", "pass_id": "PC6", "event": "installed",
         "vendor_event_id": "n804-1"},
        {"provider": "skycore", "campaign": "other", "customer_id": "C8", "pass_id": "PC8", "event": "uninstalled",
         "vendor_event_id": "n805-2"},
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            events_table.insert(),
            [{**r, "occurred_at": now, "received_at": now, "payload": "{}"} for r in rows],
        )
    out = run_update(campaign, UpdateRequest(mode="events"))
    assert (out["sent"], out["unmapped"], out["events"]) == (1, 1, 2)  # other campaigns' rows are not ours
    assert sky(sandbox)["voided"] == ["PC4"]
    assert customer_history(campaign, "C4")["event_key"].tolist() == ["skycore:n805-1"]
    assert run_update(campaign, UpdateRequest(mode="events")).get("sent", 0) == 0
    engine.dispose()


def test_config_problems_stop_before_anything_is_sent(setup, sandbox: SandboxHandle, tmp_path: Path) -> None:
    campaign = setup()
    with pytest.raises(ConfigError, match=r"\[updates.actions\] unknown update action 'vanish'"):
        run_update(campaign, UpdateRequest(mode="customers", customer_ids=["C1"], action="vanish"))
    (tmp_path / "c.toml").write_text(
        (tmp_path / "c.toml").read_text().replace('app_uninstalled = "void"', 'app_uninstalled = "nuke"')
    )
    with pytest.raises(ConfigError, match=r"c.toml: \[updates.rules.app_uninstalled\] .*'nuke'"):
        run_update(
            str(tmp_path / "c.toml"), UpdateRequest(mode="customers", customer_ids=["C1"], action="void")
        )
    (tmp_path / "c.toml").write_text(
        (tmp_path / "c.toml")
        .read_text()
        .replace('"nuke"', '"void"')
        .replace("first_name }}, your", "missing_col }}, your")
    )
    with pytest.raises(ConfigError, match="missing_col"):
        run_update(str(tmp_path / "c.toml"), UpdateRequest(mode="diff"))
    assert sky(sandbox)["updates"] == 0 and sky(sandbox)["updates_by_result"] == {}


def test_secrets_stay_out_of_history_and_logs(setup, sandbox: SandboxHandle, caplog) -> None:  # noqa: ANN001
    campaign = setup()
    with caplog.at_level(logging.DEBUG):
        run_update(campaign, UpdateRequest(mode="customers", customer_ids=["C1"], action="void"))
    assert DEMO_SKYCORE_API_KEY not in caplog.text
    assert DEMO_SKYCORE_API_KEY not in customer_history(campaign, "C1").to_json(date_format="iso")


def test_concurrent_runs_of_a_campaign_wait_for_each_other(setup, sandbox: SandboxHandle) -> None:
    """Event-triggered runs arrive together: the second waits for the campaign's update lock."""
    from concurrent.futures import ThreadPoolExecutor

    campaign = setup()

    def void(ids: list[str]) -> dict:
        return run_update(campaign, UpdateRequest(mode="customers", customer_ids=ids, action="void"))

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(void, [["C1"], ["C2"], ["C3"]]))
    assert [r["sent"] for r in results] == [1, 1, 1]
    assert sky(sandbox)["voided"] == ["PC1", "PC2", "PC3"]
