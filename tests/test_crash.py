"""Crash safety: ``kill -9`` landed in each phase of a run (reading, issuing, recording, exporting,
committing the exports), then a rerun; and SIGTERM, which must stop gracefully.

The kill is placed with the product's ``PASSFLOW_CRASH_AT=point:n`` hook (``passflow.shutdown``): the
process SIGKILLs itself the n-th time it passes that point, n drawn at random per trial. After the
rerun: no duplicate at the vendor, everyone in the export, no temp file or half-written export left.
``PASSFLOW_CRASH_TRIALS=N`` runs N more random trials per phase in the slow-marked test.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_issue_passmachine import assert_exactly_once, make, read_export

from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle
from passflow.shutdown import CRASH_ENV
from passflow.store.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
ROWS, CHUNK = 160, 40  # 4 chunks → 4 batches → 2 exports × 4 writes

RUNNER = """
import sys
from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.errors import RunStopped
try:
    run_issue(load_campaign(sys.argv[1]))
except RunStopped as exc:
    print(f"stopped: {exc}", file=sys.stderr)
    sys.exit(143)
"""

# point → how many times a run passes it (the kill lands at a random one of those)
PHASES = {"read": 4, "issue": 140, "record": 4, "export": 8, "commit": 1}


@pytest.fixture(autouse=True)
def _fresh(fresh_sandbox: SandboxHandle) -> None:
    """Every test: the module's sandbox, reset, and the demo credentials (tests/conftest.py)."""


def _spawn(path: Path, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path)], env=full, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )


def _check_files(exports: Path, customers: int) -> None:
    """No temp files; every export with a final name parses completely; the newest is complete."""
    assert not list(exports.glob(".*")), f"temp files left: {list(exports.glob('.*'))}"
    moengage = sorted(exports.glob("*-moengage-*.csv"), key=lambda p: p.stat().st_mtime)
    for f in exports.glob("*.csv"):
        with f.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows and all(len(r) == len(rows[0]) for r in rows), f"{f.name} is torn"
    with moengage[-1].open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == customers


def _crash_then_rerun(tmp_path: Path, sandbox: SandboxHandle, point: str, nth: int) -> dict[str, int]:
    sandbox.admin.configure(latency_ms=5)
    path = make(tmp_path, sandbox, rows=ROWS, chunk=CHUNK, in_flight=8, rate=300)
    proc = _spawn(path, **{CRASH_ENV: f"{point}:{nth}"})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the kill at {point}:{nth} never happened: {stderr[-2000:]}"
    campaign = load_campaign(path)
    ledger = Ledger(campaign.ledger.url)
    before = ledger.status_counts(campaign.name) if ledger.has_rows(campaign.name) else {}
    ledger.close()
    created_before = sandbox.admin.stats()["passes_created"]

    result = run_issue(load_campaign(path))
    c = result.counts
    # changed_not_reissued: the campaign's changeMessage moves with the clock; an issued pass stays
    n = c.issued_new + c.retried + c.reconciled + c.skipped_unchanged + c.changed_not_reissued
    assert c.failed == 0 and n == ROWS - c.rejected
    assert_exactly_once(sandbox, path, read_export(result), n)
    _check_files(tmp_path / "exports", n)
    return {"ledger_before": sum(before.values()), "pending_before": before.get("pending", 0),
            "vendor_before": created_before, "reconciled": c.reconciled, "skipped": c.skipped_unchanged}


@pytest.mark.parametrize("point", list(PHASES))
@pytest.mark.parametrize("trial", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_kill_9_in_each_phase_then_rerun(tmp_path: Path, sandbox: SandboxHandle, point: str, trial: int) -> None:
    nth = random.Random(f"{point}-{trial}").randint(1, PHASES[point])
    out = _crash_then_rerun(tmp_path, sandbox, point, nth)
    print(f"OUTCOME kill -9 at {point}:{nth}: {out}")
    if point in ("record", "export", "commit") or (point == "issue" and nth > 10):
        assert out["vendor_before"] > 0, "the kill should land after passes were created"


@pytest.mark.slow
def test_kill_9_random_trials(tmp_path: Path, sandbox: SandboxHandle) -> None:
    trials = int(os.environ.get("PASSFLOW_CRASH_TRIALS", "1"))
    rng = random.Random(os.environ.get("PASSFLOW_CRASH_SEED", "7"))
    for t in range(trials):
        for point, hits in PHASES.items():
            sandbox.admin.reset()
            _crash_then_rerun(tmp_path / f"{t}-{point}", sandbox, point, rng.randint(1, hits))


def test_sigterm_finishes_in_flight_calls_and_records_them(tmp_path: Path, sandbox: SandboxHandle) -> None:
    # Slow vendor: many calls are in flight when the signal lands.
    sandbox.admin.configure(latency_ms=300)
    path = make(tmp_path, sandbox, rows=ROWS, chunk=CHUNK, in_flight=10, rate=100)
    proc = _spawn(path)
    deadline = time.monotonic() + 60
    while sandbox.admin.stats()["passes_created"] < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr

    campaign = load_campaign(path)
    ledger = Ledger(campaign.ledger.url)
    counts = ledger.status_counts(campaign.name)
    ledger.close()
    stats = sandbox.admin.stats()
    # every call that reached the vendor finished and is recorded: nothing left pending, none lost
    assert counts.get("pending", 0) == 0, counts
    assert counts.get("issued", 0) == stats["passes_created"] > 0
    assert stats["passes_created"] < ROWS - 10, "it should have stopped taking new work"
    assert not list((tmp_path / "exports").glob("*moengage*")), "a stopped run exports nothing"

    sandbox.admin.configure(latency_ms=0)
    result = run_issue(load_campaign(path))
    c = result.counts
    assert c.reconciled == 0 and c.failed == 0
    n = c.issued_new + c.retried + c.skipped_unchanged + c.changed_not_reissued
    assert_exactly_once(sandbox, path, read_export(result), n)
    _check_files(tmp_path / "exports", n)
