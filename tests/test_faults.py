"""Fault matrix: the Passmachine create flow against the real sandbox, one parametrised test.

Each case injects one kind of trouble (vendor faults through the sandbox's fault schedule, token
trouble, a locked ledger database). A run must end with every customer handled exactly once
(sandbox counters = ledger = export), or stop with a clear error whose state a rerun completes —
never a duplicate at the vendor, never a customer missing from the final export.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_issue_passmachine import assert_exactly_once, make, read_export

from passflow.config import load_campaign
from passflow.errors import PassflowError
from passflow.run import run_issue
from passflow.sandbox.runner import SandboxHandle

ROWS = 120


@pytest.fixture(autouse=True)
def _fresh(fresh_sandbox: SandboxHandle) -> None:
    """Every test: the module's sandbox, reset, and the demo credentials (tests/conftest.py)."""


def _create(kind: str, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "endpoint": "create", **kw}


@dataclass
class Fault:
    faults: list[dict[str, Any]] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)
    rate: float = 400
    ledger: str = "sqlite"  # "postgres": the run's ledger is a fresh PostgreSQL schema
    db_lock_s: float = 0.0  # hold the ledger's write lock this long, mid-run


MATRIX: dict[str, Fault] = {
    "429-retry-after-seconds": Fault([_create("status", code=429, after=20, count=15)], {"retry_after": "seconds"}),
    "429-retry-after-http-date": Fault([_create("status", code=429, after=20, count=15)], {"retry_after": "http-date"}),
    "500-burst": Fault([_create("status", code=500, after=10, count=10)]),
    "502-burst": Fault([_create("status", code=502, after=10, count=10)]),
    "503-burst-with-retry-after": Fault([_create("status", code=503, after=10, count=10, retry_after_s=1)]),
    "slower-than-timeout": Fault([_create("slow", delay_s=1.5, after=5, every=20, count=5)]),
    "slow-after-commit": Fault([_create("slow_after_commit", delay_s=1.5, after=5, every=25, count=4)]),
    "connection-reset": Fault([_create("drop", after=7, every=15, count=6)]),
    "connection-reset-after-commit": Fault([_create("drop_after_commit", after=7, every=15, count=6)]),
    "malformed-json": Fault([_create("malformed", after=3, every=20, count=6)]),
    "malformed-json-after-commit": Fault([_create("malformed_after_commit", after=3, every=30, count=4)]),
    "200-with-failure-body": Fault([_create("failure_body", after=5, every=20, count=6)]),
    "token-revoked-mid-run": Fault([_create("revoke", after=50, count=2)]),
    "token-expiry-mid-run": Fault(sandbox={"token_max_ttl_s": 1.0}, rate=150),
    "token-endpoint-down": Fault(
        [{"kind": "status", "code": 503, "endpoint": "authenticate", "count": 3}], {"token_max_ttl_s": 1.0}, rate=150
    ),
    "token-endpoint-reset": Fault(
        [{"kind": "drop", "endpoint": "authenticate", "after": 1, "count": 2}], {"token_max_ttl_s": 1.0}, rate=150
    ),
    "ledger-locked-sqlite": Fault(db_lock_s=2.0, rate=200),
    "ledger-locked-postgres": Fault(db_lock_s=2.0, rate=200, ledger="postgres"),
}


@contextmanager
def _hold_ledger_lock(
    url: str, seconds: float, started: Callable[[], bool], table: str = "passflow_ledger"
) -> Iterator[list[float]]:
    """In a thread, once the run has ``started()``, hold an exclusive lock on the ledger for ``seconds``
    (SQLite: the whole file; PostgreSQL: ``table``)."""
    held: list[float] = []

    def hold() -> None:
        deadline = time.monotonic() + 30
        while not started() and time.monotonic() < deadline:
            time.sleep(0.02)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN EXCLUSIVE")
            else:
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            time.sleep(seconds)
            conn.exec_driver_sql("ROLLBACK")
            held.append(time.monotonic() - t0)
        engine.dispose()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    yield held
    t.join(60)


@pytest.mark.parametrize("name", list(MATRIX))
def test_fault_matrix_exactly_once(
    tmp_path: Path, sandbox: SandboxHandle, request: pytest.FixtureRequest, name: str
) -> None:
    case = MATRIX[name]
    sandbox.admin.configure(latency_ms=10, faults=case.faults, **case.sandbox)
    ledger = request.getfixturevalue("pg_url") if case.ledger == "postgres" else None
    path = make(tmp_path, sandbox, rows=ROWS, chunk=50, timeout=1.0, rate=case.rate, ledger=ledger)
    campaign = load_campaign(path)

    error: PassflowError | None = None
    with lock_if(case, campaign.ledger.url, lambda: sandbox.admin.stats()["passes_created"] >= 40) as held:
        try:
            result = run_issue(campaign)
        except PassflowError as exc:  # allowed: a clear error, and a state the rerun completes
            error, result = exc, None
    stats = sandbox.admin.stats()
    fired = sum(f.get("fired", 0) for f in stats["faults"])
    assert not case.faults or fired > 0, "the fault never happened: the test would prove nothing"
    if case.db_lock_s:
        assert held and held[0] >= case.db_lock_s * 0.9, "the ledger lock was never held"
    if name.startswith("token-expiry"):
        assert stats["tokens_issued"] >= 2, "no token expired during the run"
    assert stats["duplicates"] == 0, stats["duplicate_keys"][:5]

    if error is not None or (result is not None and result.counts.failed):
        # Resumable: the rerun (faults gone) completes it, still without a duplicate.
        assert error is None or "Traceback" not in str(error)
        sandbox.admin.configure(faults=[])
        result = run_issue(load_campaign(path))
        assert result.counts.failed == 0
        c = result.counts
        done = c.issued_new + c.retried + c.reconciled + c.skipped_unchanged
        assert_exactly_once(sandbox, path, read_export(result), done)
        print(f"OUTCOME {name}: first run {error or f'{result.counts.failed} failed rows'}; rerun completed")
        return
    assert result is not None and result.counts.failed == 0
    assert_exactly_once(sandbox, path, read_export(result), result.counts.issued_new)
    print(f"OUTCOME {name}: exactly once in one run ({fired} faults fired, {result.counts.reconciled} reconciled)")


@contextmanager
def lock_if(
    case: Fault, url: str, started: Callable[[], bool], table: str = "passflow_ledger"
) -> Iterator[list[float]]:
    """The case's ledger lock (if any), taken once ``started()``; yields the seconds it was held."""
    if not case.db_lock_s:
        yield []
        return
    with _hold_ledger_lock(url, case.db_lock_s, started, table) as held:
        yield held
