"""`passflow serve` against a real Prefect server: deployments registered with their schedules, runs
started through the API exactly as the UI's "Run" button does, executed by the serve process,
artifacts published; the inbox deployment; a failing run that is loud.

One `passflow serve` (Prefect server + runner, temporary PREFECT_HOME, SQLite, a free port) for the
whole module: starting a Prefect server takes 15–60 s on a busy machine. The three runs are started
together and awaited together.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from passflow.deployments.server import free_port

from passflow.demo import write_segment_csv
from tests.test_issue_skycore import make_campaign, read_csv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SECRET_WORDS = ("secret", "token", "salt", "password", "api_key")
# Every deployment `passflow serve` registers for the three campaigns below.
SERVED = {
    "issue-passes/test-coupon", "issue-passes/other-coupon", "issue-passes/inbox-coupon", "import-inbox/inbox",
    "issue-passes-shard/issue-passes-shard", "issue-passes-sharded/issue-passes-sharded",
}  # fmt: skip
SCHEDULE = '\n[schedule]\ncron = "15 6 * * MON-FRI"\ntimezone = "Europe/Prague"\n'


def _client(api_url: str) -> Any:
    from prefect.client.orchestration import PrefectClient

    return PrefectClient(api=api_url)


def _call(api_url: str, fn: Any) -> Any:
    async def go() -> Any:
        async with _client(api_url) as client:
            return await fn(client)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("served")
    campaign = make_campaign(base / "campaigns")
    text = campaign.read_text()
    campaign.write_text(text + SCHEDULE)
    # One campaign per concurrent run: a campaign runs once at a time (the ledger's lock).
    for name in ("other-coupon", "inbox-coupon"):
        (base / "campaigns" / f"{name}.toml").write_text(text.replace('name = "test-coupon"', f'name = "{name}"'))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",  # the UI build is copied at start-up: seconds the test does not need
    )
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "passflow.cli", "serve", "--campaigns", str(base / "campaigns"),
         "--inbox", str(base / "inbox"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (base / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "deployments not served in time"
            try:
                r = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=3)
                # serve registers deployments one by one: wait for all of them, not the first few
                if r.status_code == 200 and len(r.json()) >= len(SERVED):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield {"api": api_url, "base": base, "campaign": campaign, "log": base / "serve.log"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the serve process and the server it started
        try:
            # serve waits for flow runs still going (the inbox poll); the test needs none of them
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        if os.environ.get("PASSFLOW_KEEP_SERVE_LOG"):
            __import__("shutil").copy(base / "serve.log", os.environ["PASSFLOW_KEEP_SERVE_LOG"])


@pytest.fixture(scope="module")
def deployments(served: dict[str, Any]) -> dict[str, Any]:
    deps = _call(served["api"], lambda c: c.read_deployments())
    flows = {f.id: f.name for f in _call(served["api"], lambda c: c.read_flows())}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in deps}


@pytest.fixture(scope="module")
def runs(served: dict[str, Any], deployments: dict[str, Any]) -> dict[str, Any]:
    """Three runs started like the UI's Run button (the form's full parameters), awaited together."""
    base: Path = served["base"]
    # The form's inbox field changed to a folder of its own: the every-minute scheduled inbox runs
    # keep polling the default one, so they cannot take this file first.
    inbox = base / "inbox-manual"
    write_segment_csv(inbox / "inbox-coupon--from-analyst.csv", rows=120)
    (inbox / "inbox-coupon--from-analyst.csv.ready").touch()
    issue = deployments["issue-passes/test-coupon"]
    # Flat parameters: a run's parameters are merged with the deployment's at the top level, so the
    # form's changed fields alone are enough (a hand-started run is a dry run unless it says not).
    form = {"max_in_flight": 4, "dry_run": False}
    other = deployments["issue-passes/other-coupon"]
    bad_form = {"segment": str(base / "missing.csv"), "dry_run": False}
    inbox_dep = deployments["import-inbox/inbox"]
    inbox_form = dict(inbox_dep.parameters["request"], inbox=str(inbox))
    env = {**os.environ, "PREFECT_API_URL": served["api"]}

    async def start_and_wait() -> dict[str, Any]:
        async with _client(served["api"]) as client:
            started = {
                "issue": await client.create_flow_run_from_deployment(issue.id, parameters=form),
                # the same campaign again while the first runs: it must queue, not fail on the lock
                "queued": await client.create_flow_run_from_deployment(issue.id, parameters=form),
                "bad": await client.create_flow_run_from_deployment(other.id, parameters=bad_form),
                "inbox": await client.create_flow_run_from_deployment(inbox_dep.id, parameters={"request": inbox_form}),
            }
            # `prefect deployment run … -p dry_run=true`, exactly as the README says
            out = subprocess.run(
                [sys.executable, "-m", "prefect", "deployment", "run", "issue-passes/inbox-coupon", "-p", "dry_run=true"],
                env=env, capture_output=True, text=True, timeout=120, check=True,
            ).stdout  # fmt: skip
            dry_id = next(w for w in out.split() if len(w) == 36 and w.count("-") == 4)
            started["dry"] = await client.read_flow_run(dry_id)
            deadline = time.monotonic() + 150
            while True:
                done = {k: await client.read_flow_run(r.id) for k, r in started.items()}
                if all(r.state and r.state.is_final() for r in done.values()):
                    break
                assert time.monotonic() < deadline, {k: r.state for k, r in done.items()}
                await asyncio.sleep(1)
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

            arts = {
                k: await client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id]))
                )
                for k, r in done.items()
            }
            states = {k: await client.read_flow_run_states(r.id) for k, r in done.items()}
            return {"runs": done, "artifacts": arts, "states": states}

    return asyncio.run(start_and_wait())


def test_deployments_and_their_schedules_are_visible_through_the_api(deployments: dict[str, Any]) -> None:
    assert set(deployments) == SERVED
    assert not deployments["issue-passes/other-coupon"].schedules  # no [schedule]: run by hand only
    [issue_schedule] = deployments["issue-passes/test-coupon"].schedules
    assert issue_schedule.schedule.cron == "15 6 * * MON-FRI" and issue_schedule.schedule.timezone == "Europe/Prague"
    [inbox_schedule] = deployments["import-inbox/inbox"].schedules
    assert inbox_schedule.schedule.cron == "* * * * *" and inbox_schedule.active


def test_the_scheduler_creates_the_scheduled_runs(served: dict[str, Any], deployments: dict[str, Any]) -> None:
    """The server's scheduler really turns the cron into runs (SQLAlchemy 2.1 broke this in Prefect
    3.8.8: "Can't evaluate bulk DML statement" — hence the sqlalchemy 2.0 pin)."""
    from zoneinfo import ZoneInfo

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = deployments["issue-passes/test-coupon"]
    flt = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
    deadline = time.monotonic() + 60
    def auto_scheduled() -> list:
        runs = _call(served["api"], lambda c: c.read_flow_runs(deployment_filter=flt, limit=20))
        return [r for r in runs if r.auto_scheduled]

    while not (scheduled := auto_scheduled()):
        assert time.monotonic() < deadline, "no scheduled runs: " + served["log"].read_text()[-2000:]
        time.sleep(2)
    for run in scheduled:
        local = run.expected_start_time.astimezone(ZoneInfo("Europe/Prague"))
        assert (local.hour, local.minute) == (6, 15) and local.weekday() < 5, local


def test_the_ui_form_has_titles_and_descriptions_and_no_secrets(deployments: dict[str, Any]) -> None:
    for name, dep in deployments.items():
        schema = dep.parameter_openapi_schema
        fields = [(k, v) for k, v in schema["properties"].items()]
        for model in schema.get("definitions", {}).values():
            fields += list(model["properties"].items())
        assert len(fields) >= 4, name
        for key, prop in fields:
            assert prop.get("title") and prop.get("description"), f"{name}: {key}"
            assert not any(w in key.lower() for w in SECRET_WORDS), f"{name}: {key}"


def test_a_run_from_the_api_completes_with_its_artifacts(runs: dict[str, Any], served: dict[str, Any]) -> None:
    # of the two runs of the campaign, the one that got the slot first issued the passes
    key = min(("issue", "queued"), key=lambda k: runs["runs"][k].start_time)
    run = runs["runs"][key]
    assert run.state.is_completed(), (run.state, served["log"].read_text()[-3000:])
    kinds = {a.type: a for a in runs["artifacts"][key]}
    assert {"table", "markdown", "progress"} <= set(kinds)
    table = kinds["table"].data if isinstance(kinds["table"].data, list) else __import__("json").loads(kinds["table"].data)
    assert {"metric": "issued: new", "value": 293} in table and {"metric": "rejected", "value": 7} in table
    assert float(kinds["progress"].data) == 100.0
    assert "moengage" in kinds["markdown"].data
    exports = list((served["base"] / "campaigns" / "exports").glob("test-coupon-skycore-moengage-*.csv"))
    assert exports and any(len(read_csv(f)) == 293 for f in exports)


def test_an_overlapping_run_of_a_campaign_queues_instead_of_failing(runs: dict[str, Any]) -> None:
    first, second = runs["runs"]["issue"], runs["runs"]["queued"]
    assert first.state.is_completed() and second.state.is_completed(), (first.state, second.state)
    names = [s.name for s in runs["states"]["queued"]] + [s.name for s in runs["states"]["issue"]]
    assert "AwaitingConcurrencySlot" in names, names  # one of them waited for the deployment's slot
    a, b = sorted((first, second), key=lambda r: r.start_time)
    assert a.end_time <= b.start_time  # never side by side
    assert not any(r.state.is_failed() for r in (first, second))


def test_a_dry_run_from_the_prefect_cli(runs: dict[str, Any]) -> None:
    run = runs["runs"]["dry"]
    assert run.state.is_completed() and run.parameters.get("dry_run") is True
    assert run.name.startswith("inbox-coupon-issue-dry-run-") and "dry-run" in run.tags
    keys = {a.key for a in runs["artifacts"]["dry"]}
    assert "inbox-coupon-preview" in keys
    [summary] = [a for a in runs["artifacts"]["dry"] if a.key == "inbox-coupon-summary"]
    assert summary.description.startswith("dry run: 293 would be issued · 7 rejected · 0 failed")


def test_a_failed_run_is_loud(runs: dict[str, Any], served: dict[str, Any]) -> None:
    run = runs["runs"]["bad"]
    assert run.state.is_failed()
    # a user error is one line in the run's log, not two tracebacks
    assert "SourceError" in run.state.message and "Traceback" not in served["log"].read_text()
    [failure] = [a for a in runs["artifacts"]["bad"] if a.key == "other-coupon-failure"]
    assert "FAILED: other-coupon" in failure.data and "missing.csv" in failure.data
    assert "Nothing was issued" in failure.data  # the next step for an input error


def test_the_inbox_deployment_takes_a_dropped_file(runs: dict[str, Any], served: dict[str, Any]) -> None:
    run = runs["runs"]["inbox"]
    assert run.state.is_completed(), (run.state, served["log"].read_text()[-3000:])
    processed = served["base"] / "inbox-manual" / "processed"
    [csv_file] = processed.glob("*-inbox-coupon--from-analyst.csv")
    report = csv_file.with_suffix(".report.md").read_text()
    assert "processed" in report and "| read | 120 |" in report and "moengage" in report
    [files] = [a for a in runs["artifacts"]["inbox"] if a.key == "inbox-files"]
    assert "from-analyst" in str(files.data) and "processed" in str(files.data)


def test_deploy_registers_every_deployment_with_a_process_work_pool(served: dict[str, Any], runs: Any) -> None:
    """`passflow deploy`: the worker path for other machines (last: it re-registers the deployments)."""
    from passflow.deployments.registry import register_with_pool
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: served["api"]}):
        names = register_with_pool("passflow-test", served["base"] / "campaigns")
    assert sorted(names) == sorted(SERVED)
    pool = _call(served["api"], lambda c: c.read_work_pool("passflow-test"))
    assert pool.type == "process"
    for dep in _call(served["api"], lambda c: c.read_deployments()):
        assert dep.work_pool_name == "passflow-test"
        assert dep.entrypoint in ("passflow.flows.issue_passes.issue_passes", "passflow.flows.import_inbox.import_inbox",
                                  "passflow.flows.issue_sharded.issue_passes_shard",
                                  "passflow.flows.issue_sharded.issue_passes_sharded")  # fmt: skip
