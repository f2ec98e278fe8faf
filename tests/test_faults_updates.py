"""Fault matrix, update flow: Passmachine PATCH and the Skycore pass update API against the real
sandbox, one parametrised test over (provider, fault).

Passes are issued fault-free, then one uninstall event per customer is imported (``mode=events`` →
``void``) while the sandbox injects one kind of trouble. A run must end with every targeted customer
updated exactly once at the vendor (sandbox counters and update log) and the update history agreeing
— or stop with a clear error that a rerun completes — and importing the events again sends nothing.
Refused credentials and the failure threshold stop an update run: tested at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import test_faults
from test_faults import Fault, lock_if
from test_issue_passmachine import make as make_pm_campaign
from test_update_skycore import campaign_text as skycore_campaign_text

from passflow.config import Campaign, load_campaign
from passflow.demo import write_segment_csv
from passflow.errors import PassflowError, VendorError
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle
from passflow.sandbox.state import DEMO_SECRET_TOKEN, DEMO_SKYCORE_API_KEY
from passflow.store.ledger import Ledger
from passflow.store.updates import UpdateStore
from passflow.updates import UpdateRequest, run_update

ROWS = 30
ENDPOINT = {"passmachine": "update", "skycore": "skycore_update"}
PM_UPDATES = """
[updates]
chunk_size = 20
[updates.actions.void.template_variables]
fieldValue = "VOID"
[updates.rules]
app_uninstalled = "void"
"""


# The create matrix's fixture: one sandbox per module (tests/conftest.py); fresh state and Passmachine
# tokens per test.
_fresh = test_faults._fresh


@pytest.fixture(autouse=True)
def _sky_key(_fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_SKY_KEY", DEMO_SKYCORE_API_KEY)


def _upd(kind: str, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "endpoint": "<update>", **kw}


BOTH = ("passmachine", "skycore")
PM = ("passmachine",)
# name → (the fault, the providers it applies to). Skycore has no token (an API key): the token
# cases are Passmachine's; a key revoked mid-run is Skycore's E104 ("refused credentials": stop).
MATRIX: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "429-retry-after-seconds": (Fault([_upd("status", code=429, after=10, count=4)], {"retry_after": "seconds"}), BOTH),
    "429-retry-after-http-date": (
        Fault([_upd("status", code=429, after=10, count=4)], {"retry_after": "http-date"}), BOTH),
    "500-burst": (Fault([_upd("status", code=500, after=5, count=8)]), BOTH),
    "502-burst": (Fault([_upd("status", code=502, after=5, count=8)]), BOTH),
    "503-burst-with-retry-after": (Fault([_upd("status", code=503, after=5, count=4, retry_after_s=1)]), BOTH),
    "slower-than-timeout": (Fault([_upd("slow", delay_s=1.2, after=5, every=10, count=2)]), BOTH),
    "connection-reset": (Fault([_upd("drop", after=3, every=8, count=5)]), BOTH),
    "malformed-json": (Fault([_upd("malformed", after=3, every=10, count=4)]), BOTH),
    "200-with-failure-body": (Fault([_upd("failure_body", after=3, every=10, count=4)]), BOTH),
    "token-revoked-mid-run": (Fault([_upd("revoke", after=20, count=2)]), PM),
    "api-key-revoked-mid-run": (Fault([_upd("revoke", after=20, count=1)]), ("skycore",)),
    "token-expiry-mid-run": (Fault(sandbox={"token_max_ttl_s": 1.0}, rate=25), PM),
    "token-endpoint-down": (
        Fault([{"kind": "status", "code": 503, "endpoint": "authenticate", "after": 1, "count": 3}],
              {"token_max_ttl_s": 1.0}, rate=25), PM),  # fmt: skip
    "ledger-locked-sqlite": (Fault(db_lock_s=1.0, rate=30), BOTH),
    "ledger-locked-postgres": (Fault(db_lock_s=1.0, rate=30, ledger="postgres"), BOTH),
}
CASES = [pytest.param(p, n, id=f"{p}-{n}") for n, (_, providers) in MATRIX.items() for p in providers]


def _issue(tmp_path: Path, sandbox: SandboxHandle, provider: str, ledger: str | None) -> tuple[Path, list[str]]:
    """Issue passes fault-free; the campaign file and the issued customers."""
    if provider == "passmachine":
        path = make_pm_campaign(tmp_path, sandbox, rows=ROWS, chunk=ROWS, ledger=ledger)
        path.write_text(path.read_text() + PM_UPDATES)
    else:
        write_segment_csv(tmp_path / "segment.csv", rows=ROWS)
        path = tmp_path / "c.toml"
        url = ledger or f"sqlite:///{tmp_path / 'ledger.db'}"
        text = skycore_campaign_text(sandbox.skycore_url, url)
        path.write_text(text.replace('pass_template_id = "tplA1"', 'pass_template_id = "tplA1"\nchunk_size = 20'))
    campaign = load_campaign(path)
    run_issue(campaign)
    ledger_db = Ledger(campaign.ledger.url)
    issued = ledger_db.rows(campaign.name, status="issued")
    ledger_db.close()
    if provider == "skycore":  # a Skycore pass exists once installed; the sandbox registers them directly
        sandbox.admin.register_skycore_passes(issued["pass_id"].tolist())
    (tmp_path / "events.csv").write_text(
        "customer_id,event,occurred_at\n" + "".join(f"{c},app_uninstalled,2026-12-01T10:00:00Z\n"
                                                    for c in issued["customer_id"])
    )  # fmt: skip
    return path, sorted(issued["customer_id"])


def _load(path: Path, case: Fault) -> Campaign:
    return load_campaign(path, {"limits.max_in_flight": 8, "limits.max_per_second": case.rate,
                                "limits.timeout_s": 1.0, "limits.max_attempts": 8})  # fmt: skip


def _vendor_updates(sandbox: SandboxHandle, provider: str) -> dict[str, int]:
    """Updates the vendor applied, per pass id."""
    if provider == "skycore":
        return {pid: p["updates"] for pid, p in sandbox.admin.skycore_passes().items() if p["updates"]}
    stats = sandbox.admin.stats()
    voided = [p["id"] for p in sandbox.admin.passes() if p["templateVariables"].get("fieldValue") == "VOID"]
    assert stats["updates_applied"] == stats["passes_updated"] == len(voided), "a pass was patched twice"
    return dict.fromkeys(voided, 1)


def _applied(sandbox: SandboxHandle, provider: str) -> int:
    stats = sandbox.admin.stats(per_customer=False)
    return stats["skycore"]["updates"] if provider == "skycore" else stats["updates_applied"]


def _final_history(campaign: Campaign) -> pd.DataFrame:
    ledger = Ledger(campaign.ledger.url)
    try:
        return UpdateStore(ledger).history(campaign.name)
    finally:
        ledger.close()


@pytest.mark.parametrize(("provider", "name"), CASES)
def test_update_fault_matrix_exactly_once(
    tmp_path: Path, sandbox: SandboxHandle, request: pytest.FixtureRequest, provider: str, name: str
) -> None:
    case = MATRIX[name][0]
    ledger = request.getfixturevalue("pg_url") if case.ledger == "postgres" else None
    path, customers = _issue(tmp_path, sandbox, provider, ledger)
    faults = [{**f, "endpoint": ENDPOINT[provider]} if f["endpoint"] == "<update>" else f for f in case.faults]
    sandbox.admin.configure(latency_ms=10, faults=faults, **case.sandbox)
    campaign = _load(path, case)
    events = UpdateRequest(mode="events", events_file=str(tmp_path / "events.csv"))

    error: PassflowError | None = None
    out: dict[str, Any] | None = None
    started = lambda: _applied(sandbox, provider) >= 15  # noqa: E731
    with lock_if(case, campaign.ledger.url, started, table="passflow_update_history") as held:
        try:
            out = run_update(campaign, events)
        except PassflowError as exc:  # allowed: a clear error, and a state the rerun completes
            error = exc
    stats = sandbox.admin.stats()
    fired = sum(f.get("fired", 0) for f in stats["faults"])
    assert not case.faults or fired > 0, "the fault never happened: the test would prove nothing"
    if case.db_lock_s:
        assert held and held[0] >= case.db_lock_s * 0.9, "the ledger lock was never held"
    if name == "token-expiry-mid-run":
        assert stats["tokens_issued"] >= 2, "no token expired during the run"

    if error is not None or (out is not None and out.get("failed")):
        assert error is None or "Traceback" not in str(error)
        sandbox.admin.configure(faults=[])
        first = f"first run: {error or str(out and out['failed']) + ' failed rows'}; rerun completed"
        out = run_update(_load(path, case), events)
    else:
        first = "one run"

    # Exactly once: the vendor applied one update per targeted customer and the history agrees.
    hist = _final_history(campaign)
    sent = hist.loc[hist["status"] == "sent"]
    assert not sent["customer_id"].duplicated().any(), "a customer was sent twice"
    failed_for_good = set(hist["customer_id"]) - set(sent["customer_id"])
    if provider == "skycore" and name == "200-with-failure-body":
        # {"status":"failure"} is the vendor's answer: a failed row with its code, never retried.
        bad = hist.loc[hist["customer_id"].isin(failed_for_good)]
        assert len(failed_for_good) == fired and set(bad["error_code"]) == {"E500"}
        assert (bad["attempts"] == 1).all() and not bad["customer_id"].duplicated().any()
    else:
        assert not failed_for_good, hist.loc[hist["customer_id"].isin(failed_for_good)].head().to_dict("records")
    assert sorted(set(hist["customer_id"])) == customers
    vendor = _vendor_updates(sandbox, provider)
    assert vendor == dict.fromkeys(sent["pass_id"], 1)

    # Importing the same events again sends nothing new.
    again = run_update(_load(path, case), events)
    assert again.get("sent", 0) == 0 and again["already_handled"] == len(customers)
    assert _vendor_updates(sandbox, provider) == vendor
    print(f"OUTCOME {provider} {name}: {first}; {len(sent)} updated once, {fired} faults fired")


# --- refused credentials and the failure threshold stop an update run -------------------------
@pytest.mark.parametrize("provider", BOTH)
def test_refused_credentials_stop_the_update_run_at_the_first_call(
    tmp_path: Path, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    path, customers = _issue(tmp_path, sandbox, provider, None)
    before = sandbox.admin.stats()["requests"]
    secret = "wrong-secret-123456"
    monkeypatch.setenv("PF_SKY_KEY" if provider == "skycore" else "PF_PM_SECRET", secret)
    events = UpdateRequest(mode="events", events_file=str(tmp_path / "events.csv"))
    with pytest.raises(VendorError, match="update run stopped: ") as exc:
        run_update(_load(path, Fault()), events)
    assert secret not in str(exc.value)
    assert ("E104" if provider == "skycore" else "401") in str(exc.value)  # the vendor's word
    after = sandbox.admin.stats()["requests"]
    endpoint = ENDPOINT[provider] if provider == "skycore" else "authenticate"
    calls = sum(after.get(endpoint, {}).values()) - sum(before.get(endpoint, {}).values())
    assert calls == 1 and not after.get("update"), after  # one call refused, not one per customer
    hist = _final_history(load_campaign(path))
    assert len(hist) == min(20, len(customers))  # the first chunk recorded; later chunks never started
    assert set(hist["error_code"].iloc[1:]) == {"not_sent"} and secret not in hist.to_json(date_format="iso")
    # The events stay open: with the right key the rerun updates everyone once.
    monkeypatch.setenv("PF_SKY_KEY" if provider == "skycore" else "PF_PM_SECRET",
                       DEMO_SKYCORE_API_KEY if provider == "skycore" else DEMO_SECRET_TOKEN)  # fmt: skip
    out = run_update(_load(path, Fault()), events)
    assert out["sent"] == len(customers) and len(_vendor_updates(sandbox, provider)) == len(customers)


@pytest.mark.parametrize("provider", BOTH)
def test_failure_threshold_stops_an_update_run(tmp_path: Path, sandbox: SandboxHandle, provider: str) -> None:
    path, customers = _issue(tmp_path, sandbox, provider, None)
    # Every update is answered with a permanent failure: the run stops after failure_min_calls.
    fault = {"kind": "failure_body", "endpoint": "skycore_update"} if provider == "skycore" else \
        {"kind": "status", "code": 400, "endpoint": "update"}  # fmt: skip
    sandbox.admin.configure(faults=[fault])
    campaign = load_campaign(path, {"limits.failure_min_calls": 10, "limits.failure_threshold": 0.5,
                                    "limits.max_in_flight": 4, "limits.max_per_second": 400})  # fmt: skip
    with pytest.raises(VendorError, match=r"stopped early: \d+ of \d+ .* calls failed"):
        run_update(campaign, UpdateRequest(mode="events", events_file=str(tmp_path / "events.csv")))
    fired = sandbox.admin.stats()["faults"][0]["fired"]
    assert 10 <= fired <= 10 + 4, fired  # the threshold, plus what was in flight
    hist = _final_history(campaign)
    assert (hist["status"] == "failed").all() and (hist["error_code"] == "not_sent").sum() == 20 - fired
    assert len(customers) > 20  # a second chunk existed and was never sent
