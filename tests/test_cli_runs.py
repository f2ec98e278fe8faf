"""`passflow runs`, `passflow status`, `--version`, campaigns by name, and `[section]` names in
`--help` — read-only commands against a real SQLite ledger (no Prefect needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from passflow.cli import app
from passflow.config import load_campaign
from passflow.store.ledger import Ledger
from tests.test_issue_skycore import make_campaign


@pytest.fixture
def campaigns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "campaigns"
    make_campaign(folder)  # [campaign] name = "test-coupon", file campaign.toml
    monkeypatch.setenv("PASSFLOW_CAMPAIGNS_DIR", str(folder))
    return folder


def _record_runs(path: Path) -> None:
    campaign = load_campaign(path)
    ledger = Ledger(campaign.ledger.url)
    ledger.start_run("11111111-aaaa-4aaa-8aaa-000000000001", campaign.name, "issue-passes")
    ledger.finish_run(
        "11111111-aaaa-4aaa-8aaa-000000000001",
        "completed",
        {"issued_new": 293, "rejected": 7, "failed": 0, "dry_run": False, "preview": [{"x": 1}]},
    )
    ledger.start_run("22222222-bbbb-4bbb-8bbb-000000000002", campaign.name, "update-passes")
    ledger.finish_run("22222222-bbbb-4bbb-8bbb-000000000002", "failed", {"sent": 3, "failed": 2})
    ledger.engine.dispose()


def test_runs_json_by_name_newest_first(campaigns: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["runs", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    assert not (campaigns / "state").exists()  # a read-only command creates no ledger file
    _record_runs(campaigns / "campaign.toml")
    for arg in ("test-coupon", "campaign", str(campaigns / "campaign.toml")):  # name, file stem, path
        res = runner.invoke(app, ["runs", arg, "--json"])
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)
        assert [r["flow"] for r in rows] == ["update-passes", "issue-passes"]
        assert (
            rows[1]["headline"] == "293 issued · 7 rejected · 0 failed" and rows[1]["status"] == "completed"
        )
        assert rows[0]["headline"] == "3 sent · 2 failed" and "preview" not in rows[1]["summary"]
    res = runner.invoke(app, ["runs"])
    assert res.exit_code == 0 and "293 issued" in res.output and "test-coupon" in res.output
    bad = runner.invoke(app, ["runs", "no-such-campaign"])
    assert bad.exit_code == 2 and "no-such-campaign" in bad.output and "test-coupon" in bad.output


def test_status_lists_every_campaign_with_its_last_run(campaigns: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert row["campaign"] == "test-coupon" and row["last_run"] is None and row["running"] == []
    assert not (campaigns / "state").exists()
    _record_runs(campaigns / "campaign.toml")
    [row] = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert row["last_run"]["flow"] == "update-passes" and row["last_run"]["status"] == "failed"
    assert "test-coupon" in runner.invoke(app, ["status"]).output


def test_version_and_section_names_in_help() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("passflow ")
    res = runner.invoke(app, ["issue", "--help"])
    assert res.exit_code == 0 and "[limits] max_per_second" in res.output
