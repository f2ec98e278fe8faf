"""`passflow inbox` (the import-inbox flow, in-process) and the CLI's live progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from passflow.cli import app
from passflow.demo import write_segment_csv
from tests.test_issue_skycore import make_campaign

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_cli_inbox_processes_rejects_and_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSFLOW_PROGRESS", "1")  # show the bar although the runner is not a terminal
    campaigns, inbox = tmp_path / "campaigns", tmp_path / "inbox"
    path = make_campaign(campaigns)  # a name of its own: artifacts are keyed by campaign name
    path.write_text(path.read_text().replace('name = "test-coupon"', 'name = "cli-inbox"'))
    write_segment_csv(inbox / "cli-inbox--good.csv", rows=300)
    (inbox / "cli-inbox--good.csv.ready").touch()
    (inbox / "nobody--bad.csv").write_text("customer_id,email\n1,a@example.com\n")
    (inbox / "nobody--bad.csv.ready").touch()
    write_segment_csv(inbox / "cli-inbox--still-copying.csv", rows=10)  # no marker: not taken yet
    args = ["inbox", "--inbox", str(inbox), "--campaigns", str(campaigns), "--settle-seconds", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output  # a rejected file is loud
    assert "batches delivered" in res.output  # the live progress bar of the good file's run
    assert "processed" in res.output and "rejected" in res.output and "no campaign named 'nobody'" in res.output
    assert [p.name for p in inbox.glob("*.csv")] == ["cli-inbox--still-copying.csv"]
    assert len(list((inbox / "processed").glob("*.report.md"))) == 1
    assert len(list((inbox / "rejected").glob("*.report.md"))) == 1

    res = CliRunner().invoke(app, args)  # the second poll: the copy stopped growing, it is taken now
    assert res.exit_code == 0, res.output
    assert "cli-inbox--still-copying.report.md" in res.output and not list(inbox.glob("*.csv"))
