"""One limit per vendor account across runs (tasks/vendor_limit.py): two campaigns on one Passmachine
account run at the same time through a real Prefect API; the sandbox (its own process, as a vendor
is) counts their requests in every sliding second."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from passflow.flows.issue_passes import issue_passes
from passflow.tasks.vendor_limit import vendor_account_key

from passflow.config import load_campaign
from passflow.sandbox.runner import SandboxHandle, start_sandbox_process
from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
from tests.test_issue_passmachine import make

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
RATE = 30


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    with start_sandbox_process() as handle:
        yield handle


def _campaign(folder: Path, sandbox: SandboxHandle, name: str, rows: int) -> Path:
    path = make(folder, sandbox, rows=rows, chunk=50, in_flight=4, rate=RATE)
    path.write_text(path.read_text().replace('name = "pm-test"', f'name = "{name}"'))
    return path


def test_the_account_key_names_no_secret(tmp_path: Path, vendor: SandboxHandle) -> None:
    a = load_campaign(_campaign(tmp_path / "a", vendor, "pm-a", 10))
    b = load_campaign(_campaign(tmp_path / "b", vendor, "pm-b", 10))
    assert vendor_account_key(a) == vendor_account_key(b)  # two campaigns, one account: one limit
    assert vendor_account_key(a).startswith("passflow-vendor-passmachine-")
    assert DEMO_SECRET_TOKEN not in vendor_account_key(a) and DEMO_PUBLIC_TOKEN not in vendor_account_key(a)


def test_two_runs_on_one_account_stay_within_its_limit_together(
    tmp_path: Path, vendor: SandboxHandle
) -> None:
    vendor.admin.configure(latency_ms=40, jitter_ms=20, max_in_flight=8, max_per_second=RATE * 2)
    paths = [_campaign(tmp_path / n, vendor, f"pm-{n}", 150) for n in ("a", "b")]
    results: dict[str, Any] = {}

    def run(path: Path) -> None:
        results[path.parent.name] = issue_passes(campaign=str(path), dry_run=False)

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - t0
    assert set(results) == {"a", "b"} and all(r["failed"] == 0 for r in results.values()), results
    stats = vendor.admin.stats()
    calls = sum(r["vendor_calls"] for r in results.values())
    deliver = sum(r["deliver_s"] for r in results.values())
    # Each run alone may send at RATE; together they must not exceed it in any sliding second.
    assert stats["max_arrivals_1s"]["all"] <= RATE, stats["max_arrivals_1s"]
    # …and together they use the account: the two delivery phases back to back run at ≥ 0.9 of it.
    together = calls / deliver
    print(f"\ntwo runs, one account: {calls} calls, max {stats['max_arrivals_1s']['all']}/s in a sliding second, "
          f"{together:.1f}/s while delivering, {calls / elapsed:.1f}/s over {elapsed:.1f} s wall")  # fmt: skip
    assert together >= 0.9 * RATE
