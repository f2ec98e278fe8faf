"""Secrets and PII: full flows with known secret values, then every place a value could leak is
searched — Prefect logs (as stored by the API), artifacts, flow-run parameters, exports, rejects and
failed-rows files, every ledger table, exception text and the CLI's output. Zero hits.

Secrets: the Skycore salt, the Passmachine public/secret tokens, and every bearer token the vendor
issued during the run. PII (emails, phones of the segment) must not be in Prefect logs at INFO+.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_issue_passmachine import make
from typer.testing import CliRunner

from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread

PUBLIC = "pm-pub-SECRET-4c1d7e"
SECRET = "pm-sec-SECRET-9b02fa"
SALT = "salt-SECRET-77e1c3"
WRONG = "pm-sec-WRONG-SECRET-31aa"

SKYCORE = """
[campaign]
name = "sec-sky"
provider = "skycore"
pass_type = "coupon"
[source]
csv = "segment.csv"
chunk_size = 100
[validation]
max_reject_rate = 0.5
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
salt = { env = "PF_SEC_SALT" }
[skycore.params]
user-email = "{{ customer.email }}"
pass-id = "S{{ customer.customer_id }}"
[export]
directory = "exports"
formats = ["moengage", "bloomreach"]
[ledger]
url = "sqlite:///state/ledger.db"
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _env(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.admin.reset()
    sandbox.admin.configure(accounts=[{"name": "demo", "public_token": PUBLIC, "secret_token": SECRET}])
    monkeypatch.setenv("PF_PM_PUBLIC", PUBLIC)
    monkeypatch.setenv("PF_PM_SECRET", SECRET)
    monkeypatch.setenv("PF_SEC_SALT", SALT)


def _bearer_tokens(sandbox: SandboxHandle) -> list[str]:
    with sandbox.state._lock:  # noqa: SLF001 - the test reads what the vendor handed out
        tokens = list(sandbox.state._tokens)  # noqa: SLF001
    assert tokens, "no bearer token was issued: the test would prove nothing"
    return tokens


def _prefect_texts() -> tuple[list[str], list[str]]:
    """(every stored log message, every INFO+ one), plus artifacts and parameters in the first list."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)

    async def read() -> tuple[list[str], list[str]]:
        async with get_client() as client:
            logs = await _all(client.read_logs)
            arts = await _all(client.read_artifacts)
            runs = await _all(client.read_flow_runs)
        everything = [log.message for log in logs]
        everything += [f"{a.key} {a.description} {a.data}" for a in arts]
        everything += [f"{r.name} {r.parameters} {r.state.message if r.state else ''}" for r in runs]
        return everything, [log.message for log in logs if log.level >= 20]

    return asyncio.run(read())


async def _all(read: Any) -> list[Any]:
    """Every page of a Prefect list endpoint (it answers 200 items at most)."""
    out: list[Any] = []
    while page := await read(limit=200, offset=len(out)):
        out += page
        if len(page) < 200:
            break
    return out


def _files_and_ledger(root: Path) -> list[str]:
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*.csv")]
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*.toml")]
    for db in root.rglob("*.db"):
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            for table in sa.inspect(engine).get_table_names():
                texts.append(repr(conn.exec_driver_sql(f'select * from "{table}"').fetchall()))
        engine.dispose()
    return texts


def _pii(root: Path) -> list[str]:
    with (root / "segment.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    values = [r["email"] for r in rows if "@" in r["email"]] + [r["phone"] for r in rows if len(r["phone"]) > 6]
    assert len(values) > 100
    return values


def test_flows_and_cli_never_leak_secrets_or_pii(
    tmp_path: Path, sandbox: SandboxHandle, prefect_harness: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every Python log line of the process, not only Prefect's
    from passflow.flows.issue_passes import issue_passes

    from passflow.cli import app

    # Passmachine through the Prefect flow, with the error paths that quote vendor answers.
    sandbox.admin.configure(faults=[
        {"kind": "revoke", "endpoint": "create", "after": 5, "count": 1},
        {"kind": "status", "code": 400, "endpoint": "create", "after": 20, "count": 2},
        {"kind": "drop_after_commit", "endpoint": "create", "after": 30, "count": 1},
        {"kind": "malformed", "endpoint": "create", "after": 40, "count": 1},
    ])
    pm = tmp_path / "pm"
    pm.mkdir()
    path = make(pm, sandbox, rows=150, chunk=50)
    state = issue_passes(campaign=str(path), return_state=True)
    # The two 400s are rows failed at the vendor: the run ends Failed, with its summary.
    assert state.is_failed() and "2 rows failed at the vendor" in state.message, state.message
    summary = state.result(raise_on_failure=False)
    assert summary["failed"] == 2 and summary["failures_file"]

    # Skycore (salted links) through the real CLI.
    sky = tmp_path / "sky"
    sky.mkdir()
    make(sky, sandbox, rows=150)  # the same kind of segment
    (sky / "campaign.toml").write_text(SKYCORE, encoding="utf-8")
    cli = CliRunner().invoke(app, ["issue", str(sky / "campaign.toml")])
    assert cli.exit_code == 0, cli.output

    # A run that fails on the credentials: the error text is checked too.
    sandbox.admin.configure(faults=[])
    bad = tmp_path / "bad"
    bad.mkdir()
    bad_path = make(bad, sandbox, rows=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PF_PM_SECRET", WRONG)
        failed = issue_passes(campaign=str(bad_path), return_state=True)
        failed_cli = CliRunner().invoke(app, ["issue", str(bad_path)])
    assert failed.is_failed() or failed.is_completed()
    error_text = str(failed.message) + repr(failed.result(raise_on_failure=False))

    secrets = [PUBLIC, SECRET, SALT, WRONG, *_bearer_tokens(sandbox)]
    everything, info_logs = _prefect_texts()
    texts = everything + _files_and_ledger(tmp_path) + [repr(summary), cli.output, failed_cli.output, error_text]
    texts += [caplog.text]
    leaks = [(s, t[:200]) for s in secrets for t in texts if s in t]
    assert leaks == [], leaks
    assert info_logs, "no Prefect logs were stored: the test would prove nothing"
    pii = _pii(pm) + _pii(sky)
    in_logs = [(v, m[:200]) for v in pii for m in info_logs if v in m]
    assert in_logs == [], in_logs
