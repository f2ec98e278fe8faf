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
    paths = [_campaign(tmp_path / n, vendor, f"pm-{n}", 300) for n in ("a", "b")]
    results: dict[str, Any] = {}

    errors: list[BaseException] = []

    def run(path: Path) -> None:
        try:
            results[path.parent.name] = issue_passes(campaign=str(path), dry_run=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - t0
    assert not errors, errors
    assert set(results) == {"a", "b"} and all(r["failed"] == 0 for r in results.values()), results
    stats = vendor.admin.stats()
    calls = sum(r["vendor_calls"] for r in results.values())
    peak = stats["max_arrivals_1s"]["all"]
    # …and together they use the account: from the first delivery task's start to the last one's end
    # (both runs, the hand-over included) the account is used at ≥ 0.9 of its limit.
    spans = _delivery_spans([r["run_id"] for r in results.values()])
    first, last = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    a, b = sorted(spans.values())
    assert a[1] <= b[0] + 0.5, spans  # the two delivery phases did not overlap: the lease held
    together = calls / (last - first)
    # Each run alone paces at RATE; without the lease two runs reach ~2 × RATE. Arrival lateness on
    # a loaded 2-core machine lets a run's own requests bunch by a request or two at the vendor
    # (measured 31–32 here; the lease is not involved), hence the small tolerance.
    assert peak <= RATE + 2, stats["max_arrivals_1s"]
    print(f"\ntwo runs, one account: {calls} calls, max {stats['max_arrivals_1s']['all']}/s in a sliding second, "
          f"{together:.1f}/s from the first delivery to the last (hand-over {b[0] - a[1]:.2f} s), "
          f"{elapsed:.1f} s wall")  # fmt: skip
    # measured 25–27 /s (0.85–0.9 of RATE): a run alone paces at ~0.9, plus a 1 s hand-over
    assert together >= 0.8 * RATE


def _delivery_spans(run_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Per flow run: (start of its first delivery task, end of its last), in epoch seconds."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
            )

    spans: dict[str, tuple[float, float]] = {}
    for t in asyncio.run(read()):
        if not t.name.startswith(("deliver-from-batch", "finish-deliveries")) or not t.start_time:
            continue
        key = str(t.flow_run_id)
        s, e = t.start_time.timestamp(), t.end_time.timestamp()
        old = spans.get(key, (s, e))
        spans[key] = (min(old[0], s), max(old[1], e))
    assert len(spans) == 2, spans
    return spans
