"""The update-passes flow (against a temporary Prefect API) and the `passflow update` / `history` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from passflow.flows.update_passes import update_passes
from typer.testing import CliRunner

from passflow.cli import app
from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox.runner import start_sandbox_thread
from passflow.sandbox.state import DEMO_SKYCORE_API_KEY
from passflow.updates import UpdateRequest, run_update
from tests.test_update_skycore import SEGMENT, campaign_text


@pytest.fixture
def campaign_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("PF_SKY_KEY", DEMO_SKYCORE_API_KEY)
    (tmp_path / "segment.csv").write_text(SEGMENT)
    with start_sandbox_thread() as sandbox:
        path = tmp_path / "c.toml"
        path.write_text(campaign_text(sandbox.skycore_url, f"sqlite:///{tmp_path / 'ledger.db'}"))
        run_issue(load_campaign(path))
        sandbox.admin.register_skycore_passes([f"PC{i}" for i in range(1, 11)])
        yield path, sandbox


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_flow_sends_and_reports(campaign_file) -> None:  # noqa: ANN001
    path, sandbox = campaign_file
    summary = update_passes(campaign=str(path), mode="customers", customer_ids=["C1", "C2"], action="void")
    assert summary["sent"] == 2 and sandbox.admin.stats()["skycore"]["voided"] == ["PC1", "PC2"]
    bad = update_passes(
        campaign=str(path), mode="customers", customer_ids=["C1"], action="zap", return_state=True
    )
    assert bad.is_failed() and "unknown update action 'zap'" in str(bad.result(raise_on_failure=False))


def test_cli_history_and_argument_errors(campaign_file) -> None:  # noqa: ANN001
    path, sandbox = campaign_file
    run_update(str(path), UpdateRequest(mode="customers", customer_ids=["C3"], action="void"))
    runner = CliRunner()
    out = runner.invoke(app, ["history", str(path), "C3"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "void" in out.output and "sent" in out.output and "PC3" in out.output
    assert DEMO_SKYCORE_API_KEY not in out.output
    none = runner.invoke(app, ["history", str(path), "C404"])
    assert none.exit_code == 0 and "no updates recorded for C404" in none.output
    both = runner.invoke(app, ["update", str(path), "--diff", "--customers", "C1"])
    assert both.exit_code == 2 and "exactly one of" in both.output
    no_action = runner.invoke(app, ["update", str(path), "--customers", "C1"])
    assert no_action.exit_code == 2 and "--action" in no_action.output
    missing_key = runner.invoke(app, ["update", str(path), "--customers", "C1", "--action", "void"],
                                env={"PF_SKY_KEY": ""})  # fmt: skip
    assert missing_key.exit_code == 2 and "PF_SKY_KEY is not set" in missing_key.output
    assert sandbox.admin.stats()["skycore"]["updates"] == 1  # only the run_update above reached the vendor
