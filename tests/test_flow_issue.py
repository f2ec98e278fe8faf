"""The issue-passes Prefect flow and the `passflow` CLI, against a real (temporary) Prefect API."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from passflow.flows.issue_passes import issue_passes
from typer.testing import CliRunner

from passflow.cli import app
from passflow.errors import RejectRateExceeded
from passflow.providers.skycore.links import verify_link
from tests.test_issue_skycore import make_campaign, read_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _artifacts() -> list[dict]:
    """All artifacts, through Prefect's own client with its default (null) filters — which also
    guards the fastapi pin: fastapi 0.151+ makes this server answer 422 to exactly this call."""
    from prefect.client.orchestration import get_client

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts()

    return [a.model_dump(mode="json") for a in asyncio.run(read())]


def test_flow_issues_and_publishes_artifacts(tmp_path: Path) -> None:
    path = make_campaign(tmp_path)
    summary = issue_passes(campaign=str(path))
    assert summary["issued_new"] == 293 and summary["rejected"] == 7
    rows = read_csv(next(f for f in summary["export_files"] if "moengage" in f))
    assert all(verify_link(r["skycore_pass_link"]) for r in rows)
    arts = _artifacts()
    kinds = {a["type"] for a in arts if a["key"] is None or a["key"].startswith("test-coupon")}
    assert {"table", "markdown", "progress"} <= kinds
    table = next(a for a in arts if a["key"] == "test-coupon-summary")
    data = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert any(r["metric"] == "issued: new" and r["value"] == 293 for r in data)
    report = next(a for a in arts if a["key"] == "test-coupon-report")
    assert "moengage" in report["data"] and "rejects" in report["data"]
    # findable: the headline leads the description, and the run id is Prefect's flow-run id
    assert table["description"].startswith("293 issued · 7 rejected · 0 failed")
    assert table["flow_run_id"] == summary["run_id"]
    # rerun from the flow: nothing new
    again = issue_passes(campaign=str(path))
    assert again["issued_new"] == 0 and again["skipped_unchanged"] == 293


def test_flow_fails_on_reject_rate(tmp_path: Path) -> None:
    state = issue_passes(campaign=str(make_campaign(tmp_path, max_reject=0.0)), return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), RejectRateExceeded)
    arts = [a for a in _artifacts() if a["flow_run_id"] == str(state.state_details.flow_run_id)]
    failure = next(a for a in arts if a["key"] == "test-coupon-failure")
    # a next step for this kind of error, the reasons table and the rejects file; no code block
    assert "Nothing was issued: too many rows were rejected" in failure["data"] and "| reject reason |" in failure["data"]
    assert "Rejects file:" in failure["data"] and "```" not in failure["data"] and "rerun resumes" not in failure["data"]
    progress = next(a for a in arts if a["type"] == "progress")
    assert "FAILED" in progress["description"]


def test_a_dry_run_is_named_tagged_and_shows_a_preview_table(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    state = issue_passes(campaign=str(make_campaign(tmp_path)), dry_run=True, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    async def read() -> object:
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    run = asyncio.run(read())
    assert run.name.startswith("test-coupon-issue-dry-run-") and "dry-run" in run.tags
    arts = [a for a in _artifacts() if a["flow_run_id"] == str(run_id)]
    preview = next(a for a in arts if a["key"] == "test-coupon-preview")
    data = json.loads(preview["data"]) if isinstance(preview["data"], str) else preview["data"]
    assert len(data) == 5 and "customer_id" in data[0]
    summary = next(a for a in arts if a["key"] == "test-coupon-summary")
    assert summary["description"].startswith("dry run: 293 would be issued · 7 rejected")


def test_parameter_schema_has_titles_and_no_secrets() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(issue_passes.fn).model_dump()
    props = schema["properties"]
    assert not schema.get("definitions")  # flat: nothing nested under a request object
    for name, prop in props.items():
        assert prop.get("title") and prop.get("description"), name
        assert not any(s in name for s in ("secret", "token", "salt", "password")), name
        # plain optional fields: no `str | None` toggle ("Property is type None") in the form
        assert "anyOf" not in prop and prop.get("type") in ("string", "number", "integer", "boolean"), (
            name,
            prop,
        )


def test_cli_issue_dry_run_and_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    path = make_campaign(tmp_path)
    res = runner.invoke(app, ["issue", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "SPRING" not in res.output and "https://d2c.skycore.com" in res.output
    assert not (tmp_path / "exports").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace("chunk_size", "chunk_sise"))
    res = runner.invoke(app, ["issue", str(bad)])
    assert res.exit_code == 2 and "chunk_sise" in res.output and "unknown key" in res.output
    assert "Traceback" not in res.output

    res = runner.invoke(app, ["issue", str(make_campaign(tmp_path / "strict", max_reject=0.0))])
    assert res.exit_code == 3 and "nothing was issued" in res.output

    res = runner.invoke(app, ["issue", str(path)])
    assert res.exit_code == 0, res.output
    export = next((tmp_path / "exports").glob("*moengage*.csv"))
    res = runner.invoke(app, ["verify-link", "--export", str(export)])
    assert res.exit_code == 0 and "293 of 293 links verify" in res.output


def test_cli_does_not_leak_the_salt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_SALT", "cli-secret-salt-123")
    path = make_campaign(tmp_path, salt='salt = { env = "PF_SALT" }')
    res = CliRunner().invoke(app, ["issue", str(path)])
    assert res.exit_code == 0, res.output
    assert "cli-secret-salt-123" not in res.output
    assert "cli-secret-salt-123" not in os.environ.get("PREFECT__FLOW_PARAMS", "")
