"""Two runs of the same campaign at once, on SQLite and on PostgreSQL: one must be refused with a
clear message, and the vendor must never see a customer twice.

Both runs are real processes started together, so the campaign lock is raced for real; a third one,
started while the winner is mid-delivery after a slow batch, is refused as well.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_issue_passmachine import assert_exactly_once, make, read_export

from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
from passflow.store.ledger import CampaignLocked

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import sys
from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.errors import PassflowError
try:
    r = run_issue(load_campaign(sys.argv[1]))
    print("issued", r.counts.issued_new)
except PassflowError as exc:
    print(f"refused: {exc}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox_thread() as handle:
        yield handle


def test_two_runs_at_once_one_refuses_none_doubles(
    tmp_path: Path, sandbox: SandboxHandle, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.admin.reset()
    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    sandbox.admin.configure(latency_ms=60)
    path = make(tmp_path, sandbox, rows=200, chunk=50, in_flight=5, rate=100, ledger=db_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], env=env, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    # a third run while the winner is issuing: refused at once, nothing sent
    deadline = time.monotonic() + 90
    while sandbox.admin.stats()["passes_created"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    created = sandbox.admin.stats()["passes_created"]
    with pytest.raises(CampaignLocked, match="already being run"):
        run_issue(load_campaign(path))
    assert created > 0

    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for (_, err), p in zip(outs, procs, strict=True) if p.returncode == 2)
    assert "already being run" in refused and "Traceback" not in refused
    stats = sandbox.admin.stats()
    assert stats["duplicates"] == 0

    sandbox.admin.configure(latency_ms=0)
    again = run_issue(load_campaign(path))  # lock released: the rerun goes through, sends nothing new
    c = again.counts
    assert c.issued_new == 0 and c.failed == 0
    n = c.skipped_unchanged + c.changed_not_reissued
    assert_exactly_once(sandbox, path, read_export(again), n)
