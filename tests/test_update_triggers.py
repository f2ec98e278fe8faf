"""Deployment triggers of update-passes: their shape (fast), and the whole path for real (slow): a real
``prefect server start`` (its triggers service), the flow served with the triggers, a Prefect event
emitted → a flow run → the sandbox voids / notifies the pass."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from passflow.deployments.update_triggers import PASS_UNINSTALLED, UPDATE_REQUESTED, update_triggers

from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox.runner import start_sandbox_thread
from passflow.sandbox.state import DEMO_SKYCORE_API_KEY
from passflow.updates import UpdateRequest, customer_history

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = """
[campaign]
name = "sky-trig"
provider = "skycore"
[source]
csv = "segment.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc"
[skycore.params]
pass-id = "T{{{{ customer.customer_id }}}}"
[export]
formats = []
[ledger]
url = "sqlite:///{ledger}"
[updates]
api_base_url = "{url}"
api_key = {{ env = "PF_SKY_KEY" }}
pass_template_id = "tpl1"
[updates.actions.notify.pass_data]
pass-update-notification = "Points updated"
"""


def write_campaign(tmp_path: Path, url: str) -> Path:
    (tmp_path / "segment.csv").write_text("customer_id\nC1\nC2\nC3\n")
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(url=url, ledger=tmp_path / "ledger.db"))
    return path


def test_triggers_match_the_campaign_and_fill_the_request(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, "http://127.0.0.1:9/skycore")
    requested, uninstalled = update_triggers(load_campaign(path), path)
    assert requested.expect == {UPDATE_REQUESTED} and uninstalled.expect == {PASS_UNINSTALLED}
    for trig in (requested, uninstalled):
        assert trig.match.root == {"passflow.campaign": "sky-trig"}
        params = trig.parameters
        assert params["campaign"] == str(path) and params["mode"] == "customers"
        UpdateRequest.model_validate({**params, "customer_ids": ["C1"], "action": "void"})  # the flow's form
    assert requested.parameters["customer_ids"] == "{{ event.payload.customer_ids }}"
    assert uninstalled.parameters["action"] == "void"
    assert uninstalled.parameters["customer_ids"] == ["{{ event.resource['passflow.customer_id'] }}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


SERVE = """
import sys
from passflow.deployments.update_triggers import update_triggers
from passflow.flows.update_passes import update_passes
from passflow.config import load_campaign
path = sys.argv[1]
update_passes.serve(name="sky-trig-updates", triggers=update_triggers(load_campaign(path), path))
"""

EMIT = """
import sys
from prefect.events import emit_event
from passflow.deployments.update_triggers import emit_update_request
emit_update_request("sky-trig", ["C2"], "notify")
emit_event("passflow.pass.uninstalled", resource={
    "prefect.resource.id": "passflow.pass.T" + "C1", "passflow.campaign": "sky-trig",
    "passflow.customer_id": "C1", "passflow.pass_id": "TC1"})
"""


@pytest.mark.slow
def test_prefect_events_trigger_updates_on_a_real_server(tmp_path: Path) -> None:
    started = time.monotonic()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PF_SKY_KEY": DEMO_SKYCORE_API_KEY,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    logs = tmp_path / "server.log"
    procs: list[subprocess.Popen] = []
    with start_sandbox_thread() as sandbox, open(logs, "w") as log:
        path = write_campaign(tmp_path, sandbox.skycore_url)
        os.environ["PF_SKY_KEY"] = DEMO_SKYCORE_API_KEY
        try:
            assert run_issue(load_campaign(path)).counts.issued_new == 3
            sandbox.admin.register_skycore_passes(["TC1", "TC2", "TC3"])
            server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)  # fmt: skip
            procs.append(server)

            def healthy() -> bool:
                try:
                    return httpx.get(f"{api}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            _wait(healthy, 240, "the Prefect server")
            server_up = time.monotonic() - started
            procs.append(subprocess.Popen([sys.executable, "-c", SERVE, str(path)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=ROOT))  # fmt: skip

            def deployed() -> bool:
                try:
                    r = httpx.post(f"{api}/automations/filter", json={}, timeout=10)
                except httpx.HTTPError:
                    return False  # a busy server on a loaded machine: ask again
                return r.status_code == 200 and len(r.json()) >= 2

            _wait(deployed, 180, "the deployment's automations")
            stages = {"server": server_up, "deployed": time.monotonic() - started}
            time.sleep(2)  # the triggers service loads automations periodically
            subprocess.run([sys.executable, "-c", EMIT], env=env, cwd=ROOT, check=True, timeout=60)
            stages["emitted"] = time.monotonic() - started

            def done() -> bool:
                sky = sandbox.admin.stats()["skycore"]
                return sky["voided"] == ["TC1"] and sky["updates"] == 2

            _wait(done, 300, "the triggered update runs to reach the sandbox")
            stages["updated"] = time.monotonic() - started
        except AssertionError:
            print(logs.read_text()[-4000:])
            raise
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            os.environ.pop("PF_SKY_KEY", None)
    campaign = load_campaign(path)
    void = customer_history(campaign, "C1")
    assert void["action"].tolist() == ["void"] and void["source"].tolist() == ["prefect-event"]
    assert void["event_key"].iloc[0].startswith("prefect:")
    assert customer_history(campaign, "C2")["action"].tolist() == ["notify"]
    print("\ntrigger round trip, seconds since start: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
