"""The provider registry: a provider defined only under tests/ (tests/providers/stamp.py) runs issue →
update → callback through the CLI, the Prefect flow and the callbacks server, with no edit to passflow/;
unknown providers are configuration errors; nothing outside passflow/providers/ compares provider names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import tests.providers.stamp  # noqa: F401 - registers the "stamp" provider in this process
from passflow.callbacks.app import create_app, endpoints_for
from passflow.callbacks.auth import sign
from passflow.cli import app
from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.providers import registry

REPO = Path(__file__).resolve().parents[1]
SEGMENT = "customer_id,email,phone,tier\n" + "".join(f"C{i},c{i}@example.com,+14155550{i:03d},gold\n" for i in range(1, 6))


class _Vendor(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def vendor() -> Iterator[str]:
    _Vendor.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vendor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/update"
    server.shutdown()


def stamp_campaign(tmp: Path, update_url: str = "http://127.0.0.1:9/none") -> Path:
    (tmp / "segment.csv").write_text(SEGMENT)
    path = tmp / "stamp.toml"
    path.write_text(f"""
[campaign]
name = "stamp-2026"
provider = "stamp"

[source]
csv = "segment.csv"

[stamp]
update_url = "{update_url}"
[stamp.fields]
tier = "{{{{ customer.tier }}}}"

[export]
directory = "exports"

[ledger]
url = "sqlite:///ledger.db"

[callbacks]
secret = {{ env = "PF_STAMP_CB" }}

[updates.actions.upgrade.set]
tier = "platinum"
""")
    return path


def test_unknown_provider_lists_the_known_ones(tmp_path: Path) -> None:
    path = stamp_campaign(tmp_path)
    path.write_text(path.read_text().replace('provider = "stamp"', 'provider = "stampp"'))
    with pytest.raises(ConfigError) as err:
        load_campaign(path)
    assert "unknown provider" in str(err.value) and "passmachine, skycore, stamp" in str(err.value)


def test_provider_section_errors_name_the_section(tmp_path: Path) -> None:
    path = stamp_campaign(tmp_path)
    path.write_text(path.read_text().replace("[stamp]\n", "[stamp]\nupdate_urll = 1\n"))
    with pytest.raises(ConfigError, match=r"\[stamp\.update_urll\] unknown key"):
        load_campaign(path)


@pytest.mark.slow
def test_cli_in_a_fresh_process_loads_the_provider_from_the_environment(tmp_path: Path) -> None:
    path = stamp_campaign(tmp_path)
    env = {**os.environ, "PASSFLOW_PROVIDERS": "tests.providers.stamp", "PYTHONPATH": str(REPO),
           "PF_STAMP_CB": "cb-secret", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "passflow.cli", "issue", str(path)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    export = next((tmp_path / "exports").glob("stamp-2026-stamp-moengage-*.csv")).read_text()
    assert export.splitlines()[0].startswith("ID,stamp_pass_id,stamp_pass_link,stamp_pass_gendate,stamp_pass_install_status")
    assert "STC3,https://stamp.example/p/STC3?sig=" in export
    without = subprocess.run([sys.executable, "-m", "passflow.cli", "validate", str(path)],
                             env={**env, "PASSFLOW_PROVIDERS": ""}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert without.returncode == 2 and "unknown provider" in without.stdout + without.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_issue_update_callback_end_to_end(tmp_path: Path, vendor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from passflow.flows.issue_passes import issue_passes

    monkeypatch.setenv("PF_STAMP_CB", "cb-secret")
    path = stamp_campaign(tmp_path, vendor)
    summary = issue_passes(campaign=str(path))
    assert summary["issued_new"] == 5 and summary["provider"] == "stamp" and summary["limit_per_s"] is None
    again = issue_passes(campaign=str(path))
    assert again["skipped_unchanged"] == 5 and again["issued_new"] == 0

    res = CliRunner().invoke(app, ["update", str(path), "--customers", "C1,C2", "--action", "upgrade"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["update", str(path), "--customers", "C3", "--action", "void"])  # built in
    assert res.exit_code == 0, res.output
    assert sorted(_Vendor.received, key=lambda r: r["pass"]) == [
        {"pass": "STC1", "set": {"tier": "platinum"}},
        {"pass": "STC2", "set": {"tier": "platinum"}},
        {"pass": "STC3", "set": {"state": "void"}},
    ]

    campaign = load_campaign(path)
    client = TestClient(create_app(endpoints_for([campaign]), emitter=lambda **kw: None))
    body = json.dumps({"pass": "STC4", "what": "installed"}).encode()
    ts = str(int(__import__("time").time()))
    headers = {"X-Passflow-Timestamp": ts, "X-Passflow-Signature": sign("cb-secret", ts, body)}
    r = client.post("/callbacks/stamp-2026/stamp", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["recorded"] and r.json()["customer_id"] == "C4", r.text
    assert client.post("/callbacks/stamp-2026/skycore", content=body, headers=headers).status_code == 404


# Provider knowledge lives in passflow/providers/ (and the dev-only sandbox, which plays the vendors).
_NAME_TEST = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](skycore|passmachine|googlewallet)["']""")


def test_no_provider_name_comparisons_outside_providers() -> None:
    offenders = []
    for folder in ("passflow", "flows", "tasks", "deployments"):
        for file in (REPO / folder).rglob("*.py"):
            rel = file.relative_to(REPO).as_posix()
            if rel.startswith(("passflow/providers/", "passflow/sandbox/")):
                continue
            for n, line in enumerate(file.read_text().splitlines(), 1):
                if _NAME_TEST.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_builtin_providers_are_registered_with_their_capabilities() -> None:
    sky, pm = registry.get("skycore"), registry.get("passmachine")
    assert sky.updates and sky.updates.action_values == "pass_data" and not sky.calls_vendor
    assert pm.updates and pm.updates.action_values == "template_variables" and pm.sandbox is not None
    assert sky.callbacks and pm.callbacks


def test_the_callbacks_server_does_not_load_the_sandbox() -> None:
    probe = "import sys, passflow.callbacks.server, passflow.run, passflow.providers.registry as r; r.names(); " \
            "print(sorted(m for m in sys.modules if m.startswith('passflow.sandbox')))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
