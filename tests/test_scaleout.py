"""Scale-out: one campaign split into shards run by separate worker processes that share the vendor
limit (static split), against the sandbox — the combined rate holds the limit in every sliding second
and reaches it, and a shard whose worker is killed with SIGKILL completes on rerun with nothing lost
and nothing sent twice (sandbox counters = ledger = exports)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.run import run_issue
from passflow.run.shards import check_shard, in_shard, shard_campaign, shard_of
from passflow.sandbox.runner import SandboxHandle
from passflow.sandbox.state import max_in_window
from passflow.store.ledger import CampaignLocked, Ledger, lock_key
from tests.test_issue_passmachine import ROOT, assert_exactly_once, make, read_export


@pytest.fixture(autouse=True)
def _fresh(fresh_sandbox: SandboxHandle) -> None:
    """Every test: the module's sandbox, reset, and the demo credentials (tests/conftest.py)."""


def test_shard_assignment_is_stable_and_partitions() -> None:
    ids = pd.Series([f"C{i:05d}" for i in range(3000)])
    # pinned: a change of the hash would move customers between shards across a crash and its rerun
    sample = pd.Series(["C00000", "C00001", "C00002", " C00002 ", "C00003", "C00004", "C00005", "C00006"])
    assert shard_of(sample, 4).tolist() == [1, 3, 2, 2, 1, 0, 0, 1]
    masks = [in_shard(ids, (i, 3)) for i in range(3)]
    assert (sum(m.astype(int) for m in masks) == 1).all()  # every customer in exactly one shard
    assert all(900 < m.sum() < 1100 for m in masks)  # and the shards are about equal
    with pytest.raises(ConfigError, match="shard"):
        check_shard((2, 2))


def test_static_split_of_the_limit(tmp_path: Path, sandbox: SandboxHandle) -> None:
    camp = load_campaign(make(tmp_path, sandbox, in_flight=9, rate=100))
    part = shard_campaign(camp, (1, 4))
    assert part.limits.max_per_second == 24 and part.limits.max_in_flight == 2  # 1/s of headroom
    low = load_campaign(make(tmp_path, sandbox, in_flight=9, rate=3))
    assert shard_campaign(low, (0, 2)).limits.max_per_second == 1.5  # a small share keeps it all
    assert shard_campaign(camp, (0, 1)) is camp


def test_lock_per_shard_and_unsharded_excludes_all(db_url: str) -> None:
    led = Ledger(db_url)
    try:
        led.acquire_lock("camp", "r0", (0, 2))
        led.acquire_lock("camp", "r1", (1, 2))  # shards of one split run side by side
        with pytest.raises(CampaignLocked, match="shard-0-of-2"):
            led.acquire_lock("camp", "again", (0, 2))  # but never one shard twice
        with pytest.raises(CampaignLocked):
            led.acquire_lock("camp", "whole")  # an unsharded run excludes every shard
        with pytest.raises(CampaignLocked):
            led.acquire_lock("camp", "other-split", (2, 3))  # so does a different split
        led.acquire_lock("camp_x", "x")  # another campaign ('_' is not a wildcard) is independent
        led.release_lock(lock_key("camp", (0, 2)), "r0")
        led.release_lock(lock_key("camp", (1, 2)), "r1")
        led.acquire_lock("camp", "whole")
        with pytest.raises(CampaignLocked, match="the whole campaign"):
            led.acquire_lock("camp", "r0", (0, 2))  # and every shard excludes an unsharded run
    finally:
        led.close()


SHARD_RUNNER = """
import sys
from passflow.config import load_campaign
from passflow.run import run_issue
run_issue(load_campaign(sys.argv[1]), shard=(int(sys.argv[2]), int(sys.argv[3])))
"""


def test_two_workers_share_the_limit_and_a_killed_shard_completes_on_rerun(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    limit, rows = 60, 500
    sandbox.admin.configure(latency_ms=50, max_per_second=limit)  # the sandbox refuses more than the limit
    path = make(tmp_path, sandbox, rows=rows, chunk=100, in_flight=12, rate=limit)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SHARD_RUNNER, str(path), str(i), "2"],
            env=env, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i, log in enumerate(logs)
    ]

    def output() -> str:
        return "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs)

    try:
        # Let both shards issue for a while, then kill shard 1's worker mid-run.
        deadline = time.monotonic() + 90
        while sandbox.admin.stats(per_customer=False)["passes_created"] < 180:
            assert time.monotonic() < deadline, f"the workers never got going\n{output()}"
            assert all(w.poll() is None for w in workers), f"a worker ended early\n{output()}"
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGKILL)
        assert workers[1].wait(timeout=10) == -signal.SIGKILL
        assert workers[0].wait(timeout=60) == 0, output()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    stats = sandbox.admin.stats(per_customer=False)
    arrivals = sandbox.admin.arrivals()
    # The vendor's limit held in every sliding second, and the two workers together reached it.
    assert stats["max_arrivals_1s"]["all"] <= limit
    assert max_in_window(arrivals) >= 0.9 * limit  # shards run at 2 × 29/s = 0.97 of the limit
    before = stats["passes_created"]

    camp = load_campaign(path)
    rerun = run_issue(camp, shard=(1, 2))
    assert rerun.counts.failed == 0
    ledger = Ledger(camp.ledger.url)
    runs = pd.read_sql("select summary from passflow_runs where status = 'completed'", ledger.engine)
    ledger.close()
    assert len(runs) == 2  # shard 0's run and shard 1's rerun (the killed run never completed)
    exports = [str(p) for p in (tmp_path / "exports").glob("*moengage*.csv")]
    rows_out = read_export(type("R", (), {"export_files": exports})())
    n = len(rows_out)
    assert n > rows * 0.8  # everyone but the segment's deliberate rejects
    assert_exactly_once(sandbox, path, rows_out, n)
    assert sandbox.admin.stats(per_customer=False)["passes_created"] - before == n - before


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_sharded_flow_runs_every_shard_as_a_child_run(tmp_path: Path, sandbox: SandboxHandle) -> None:
    from passflow.flows.issue_sharded import ShardedIssueRequest, issue_passes_sharded

    path = make(tmp_path, sandbox, rows=120, chunk=50, rate=200)
    out = asyncio.run(issue_passes_sharded(ShardedIssueRequest(campaign=str(path), shards=3, deployment=None)))
    assert out["shards"] == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    issued = out["ledger"]["issued"]
    exports = [str(p) for p in (tmp_path / "exports").glob("*moengage*.csv")]
    assert_exactly_once(sandbox, path, read_export(type("R", (), {"export_files": exports})()), issued)
