"""Passmachine pass updates (JSON Patch) against the provider sandbox: batch diff sends only the
changed customers, notifications carry a tz-correct changeMessage, uninstall events void."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
from passflow.updates import UpdateRequest, customer_history, run_update

SEGMENT = "customer_id,first_name,tier\n" + "".join(f"C{i},Name{i},bronze\n" for i in range(1, 13))


def campaign_text(url: str, ledger: str, change_message: str) -> str:
    return textwrap.dedent(
        f"""
        [campaign]
        name = "pm-upd"
        provider = "passmachine"
        pass_type = "loyaltycard"
        [source]
        csv = "segment.csv"
        [passmachine]
        api_base_url = "{url}"
        account = "demo"
        template_id = "tpl-1"
        public_token = {{ env = "PF_PM_PUBLIC" }}
        secret_token = {{ env = "PF_PM_SECRET" }}
        [passmachine.template_variables]
        kpFirstName = "{{{{ customer.first_name }}}}"
        fieldValue = "Welcome to the {{{{ customer.tier }}}} tier!"
        changeMessage = "{change_message}"
        [export]
        formats = []
        [ledger]
        url = "{ledger}"
        [limits]
        max_in_flight = 4
        max_per_second = 200
        [updates]
        [updates.actions.notify.template_variables]
        fieldValue = "NOTIFICATION"
        changeMessage = "{{{{ change_message(time, 'Europe/Prague') }}}}"
        [updates.actions.void.template_variables]
        fieldValue = "This card is no longer valid."
        [updates.rules]
        app_uninstalled = "void"
        """
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


@pytest.fixture
def issued(sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    sandbox.admin.reset()
    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    (tmp_path / "segment.csv").write_text(SEGMENT)

    def make(ledger: str, change_message: str = "static"):  # noqa: ANN202
        (tmp_path / "c.toml").write_text(campaign_text(sandbox.passmachine_url, ledger, change_message))
        campaign = load_campaign(tmp_path / "c.toml")
        assert run_issue(campaign).counts.issued_new == 12
        return campaign

    return make


def docs(sandbox: SandboxHandle) -> dict[str, dict]:
    return {p["metadata"]["registered"]: p for p in sandbox.admin.passes()}


def test_batch_diff_patches_only_changed_customers(issued, sandbox: SandboxHandle, tmp_path: Path, db_url: str) -> None:
    campaign = issued(db_url)
    first = run_update(campaign, UpdateRequest(mode="diff"))
    assert (first["unchanged"], first.get("sent", 0), first["vendor_calls"]) == (12, 0, 0)
    assert sandbox.admin.stats()["updates_applied"] == 0

    (tmp_path / "segment.csv").write_text(SEGMENT.replace("C4,Name4,bronze", "C4,Name4,gold")
                                          .replace("C9,Name9,", "C9,Nina,"))  # fmt: skip
    out = run_update(campaign, UpdateRequest(mode="diff"))
    assert (out["changed"], out["sent"]) == (2, 2)
    stats = sandbox.admin.stats()
    assert (stats["updates_applied"], stats["passes_updated"]) == (2, 2)  # the sandbox counted 2 PATCHes
    after = docs(sandbox)
    assert after["C4"]["templateVariables"]["fieldValue"] == "Welcome to the gold tier!"
    assert after["C9"]["templateVariables"]["kpFirstName"] == "Nina"
    assert after["C1"]["templateVariables"]["fieldValue"] == "Welcome to the bronze tier!"
    hist = customer_history(campaign, "C4")
    assert hist["source"].tolist() == ["diff"] and hist["status"].tolist() == ["sent"]
    assert run_update(campaign, UpdateRequest(mode="diff")).get("sent", 0) == 0
    assert sandbox.admin.stats()["updates_applied"] == 2


def test_time_dependent_templates_are_compared_as_issued(issued, sandbox: SandboxHandle, tmp_path: Path) -> None:
    """The issuance payload holds in_days(7, …) rendered at the issuing run's time; the first diff
    renders it again at that time, so only real changes cost a call."""
    campaign = issued(f"sqlite:///{tmp_path / 'l.db'}", "{{ in_days(7, 'Europe/Prague') }}")
    first = run_update(campaign, UpdateRequest(mode="diff"))
    assert (first["unchanged"], first.get("sent", 0)) == (12, 0)
    (tmp_path / "segment.csv").write_text(SEGMENT.replace("C2,Name2,", "C2,Nora,"))
    out = run_update(campaign, UpdateRequest(mode="diff"))
    assert (out["changed"], out["sent"]) == (1, 1)
    assert sandbox.admin.stats()["updates_applied"] == 1
    # The refresh re-renders every variable at the update's time, changeMessage included.
    assert docs(sandbox)["C2"]["templateVariables"]["kpFirstName"] == "Nora"


def test_notify_sends_json_patch_with_tz_correct_change_message(issued, sandbox: SandboxHandle, tmp_path: Path) -> None:
    campaign = issued(f"sqlite:///{tmp_path / 'l.db'}")
    # 2024-03-25 12:00 UTC + 7 days = 2024-04-01 12:00 UTC = 14:00 CEST; the seed's template says 13:00.
    now = datetime(2024, 3, 25, 12, tzinfo=UTC)
    out = run_update(campaign, UpdateRequest(mode="customers", customer_ids=["C1", "C2"], action="notify"), now=now)
    assert out["sent"] == 2
    tv = docs(sandbox)["C1"]["templateVariables"]
    assert (tv["fieldValue"], tv["changeMessage"]) == ("NOTIFICATION", "01-04-2024 14:00:00")
    assert tv["kpFirstName"] == "Name1"  # other variables untouched
    sent = customer_history(campaign, "C1")["request"].iloc[0]
    assert '"path": "/templateVariables/changeMessage"' in sent and DEMO_SECRET_TOKEN not in sent


def test_uninstall_event_voids_passmachine_pass(issued, sandbox: SandboxHandle, tmp_path: Path) -> None:
    campaign = issued(f"sqlite:///{tmp_path / 'l.db'}")
    events = tmp_path / "events.csv"
    events.write_text("event_id,customer_id,event,occurred_at\ne1,C3,app_uninstalled,2026-11-20T08:00:00Z\n")
    assert run_update(campaign, UpdateRequest(mode="events", events_file=str(events)))["sent"] == 1
    assert docs(sandbox)["C3"]["templateVariables"]["fieldValue"] == "This card is no longer valid."
    again = run_update(campaign, UpdateRequest(mode="events", events_file=str(events)))
    assert again.get("sent", 0) == 0 and again["already_handled"] == 1
    assert sandbox.admin.stats()["updates_applied"] == 1


def test_unknown_pass_is_a_failed_row_with_the_http_code(issued, sandbox: SandboxHandle, tmp_path: Path) -> None:
    campaign = issued(f"sqlite:///{tmp_path / 'l.db'}")
    sandbox.admin.reset(keep_config=True)  # the vendor forgot every pass
    out = run_update(campaign, UpdateRequest(mode="customers", customer_ids=["C1"], action="notify"))
    assert (out["failed"], out["error_codes"]) == (1, {"HTTP404": 1})
    row = customer_history(campaign, "C1").iloc[-1]
    assert row["status"] == "failed" and "404" in row["error"]
