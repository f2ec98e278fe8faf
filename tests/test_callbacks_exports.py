"""Install-status attributes in the exports of campaigns with vendor callbacks."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from passflow.config import load_campaign
from passflow.demo import write_segment_csv
from passflow.exports import install_status_columns, with_install_status
from passflow.run import run_issue
from passflow.store.events import CallbackStore, PassEvent

CAMPAIGN = """
[campaign]
name = "st-coupon"
provider = "skycore"
[source]
csv = "segment.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
pass-id = "S{{ customer.customer_id }}"
[export]
directory = "exports"
[ledger]
url = "sqlite:///ledger.db"
"""
CALLBACKS = '\n[callbacks]\nsecret = { env = "PASSFLOW_TEST_CB_SECRET" }\n'
T = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)


def test_with_install_status_adds_iso_times_and_blanks() -> None:
    rows = pd.DataFrame({"customer_id": ["a", "b"], "pass_id": ["Sa", "Sb"]})
    status = pd.DataFrame(
        {"customer_id": ["a"], "status": ["uninstalled"], "installed_at": [T], "uninstalled_at": [None]}
    )
    out = with_install_status(rows, status, "skycore")
    assert list(out.columns) == ["customer_id", "pass_id", *install_status_columns("skycore")]
    assert out.iloc[0, 2:].tolist() == ["uninstalled", "2026-11-30T12:00:05Z", ""]
    assert out.iloc[1, 2:].tolist() == ["", "", ""]


def _export(tmp_path: Path, kind: str) -> list[dict[str, str]]:
    files = sorted((tmp_path / "exports").glob(f"*-{kind}-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    with files[-1].open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("with_callbacks", [True, False])
def test_issue_exports_carry_install_status_only_with_callbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_callbacks: bool
) -> None:
    monkeypatch.setenv("PASSFLOW_TEST_CB_SECRET", "unused-here")
    write_segment_csv(tmp_path / "segment.csv", rows=30)
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN + (CALLBACKS if with_callbacks else ""), encoding="utf-8")
    campaign = load_campaign(path)
    run_issue(campaign)
    first = _export(tmp_path, "moengage")
    cols = install_status_columns("skycore")
    if not with_callbacks:
        assert not set(cols) & set(first[0]) and "skycore_pass_install_status" not in _export(tmp_path, "bloomreach")[0]
        return
    assert all(r[c] == "" for r in first for c in cols)
    a, b = first[0]["ID"], first[1]["ID"]
    store = CallbackStore(campaign.ledger.url)
    store.record(PassEvent("skycore", "st-coupon", a, f"S{a}", "installed", "e1", T, {}))
    store.record(PassEvent("skycore", "st-coupon", b, f"S{b}", "installed", "e2", T, {}))
    store.record(PassEvent("skycore", "st-coupon", b, f"S{b}", "uninstalled", "e3", T.replace(hour=13), {}))
    store.close()
    run_issue(campaign)  # nothing re-issued; the export is complete and now knows the status
    by_id = {r["ID"]: r for r in _export(tmp_path, "moengage")}
    assert [by_id[a][c] for c in cols] == ["installed", "2026-11-30T12:00:05Z", ""]
    assert [by_id[b][c] for c in cols] == ["uninstalled", "2026-11-30T12:00:05Z", "2026-11-30T13:00:05Z"]
    bloom = {r["registered"]: r for r in _export(tmp_path, "bloomreach")}
    assert bloom[b]["skycore_pass_install_status"] == "uninstalled"
