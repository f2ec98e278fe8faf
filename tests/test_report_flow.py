"""Failure is loud: rows failed at the vendor end the flow run Failed (with the summary, a warning in
the report artifact) and `passflow issue` exits 1 after printing the same summary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from passflow.flows.issue_passes import issue_passes
from typer.testing import CliRunner

from passflow.cli import app
from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
from tests.test_issue_passmachine import make

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
FAULTS = [{"kind": "status", "code": 422, "endpoint": "create", "after": 10, "every": 25, "count": 6}]


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    with start_sandbox_thread() as handle:
        yield handle


def _report(run_id: object) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    return next(a.data for a in asyncio.run(read()) if a.type == "markdown")


def test_failed_rows_fail_the_flow_run_with_the_summary(tmp_path: Path, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(faults=FAULTS)
    state = issue_passes(campaign=str(make(tmp_path, sandbox, rows=300)), return_state=True)
    assert state.is_failed() and "6 rows failed at the vendor" in state.message
    summary = state.result(raise_on_failure=False)
    assert summary["failed"] == 6 and summary["exported"] > 250 and summary["failures_file"]
    assert "**Warning: 6 rows failed at the vendor**" in _report(state.state_details.flow_run_id)


def test_cli_prints_the_summary_and_exits_1_on_failed_rows(tmp_path: Path, sandbox: SandboxHandle) -> None:
    sandbox.admin.configure(faults=FAULTS)
    res = CliRunner().invoke(app, ["issue", str(make(tmp_path, sandbox, rows=300))])
    assert res.exit_code == 1, res.output
    assert "failed rows:" in res.output and "6 rows failed at the vendor" in res.output
    assert "Traceback" not in res.output


def _markdowns(run_id: object) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    return {a.key: a.data for a in asyncio.run(read()) if a.type == "markdown"}


def test_campaigns_with_callbacks_publish_the_install_funnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_issue_skycore import make_campaign

    monkeypatch.setenv("PF_CALLBACK_SECRET", "funnel-test-secret")
    path = make_campaign(tmp_path)
    path.write_text(path.read_text() + '\n[callbacks]\nsecret = { env = "PF_CALLBACK_SECRET" }\n')
    state = issue_passes(campaign=str(path), return_state=True)
    assert state.is_completed(), state.message
    issued = state.result()["issued_new"]
    funnel = next(v for k, v in _markdowns(state.state_details.flow_run_id).items() if k.endswith("-funnel"))
    assert f"| issued | {issued} | 100.0% |" in funnel and "| installed | 0 |" in funnel
