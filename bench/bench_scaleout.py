"""Benchmark: one Passmachine campaign split across Prefect workers on a process work pool, sharing
one vendor limit (static split: each of N shards runs at limit/N less 1/s of headroom), against the sandbox.

It starts a real Prefect server (temporary home), a ``process`` work pool, the
``issue-passes-shard`` deployment (from this checkout) and ``--workers`` worker processes, then:

1. **rate**: runs the ``issue-passes-sharded`` parent flow, which starts the N shards as child
   deployment runs; the workers pick them up. Printed, measured at the sandbox in the same run: the
   most requests in any sliding 1 s window (must be ≤ the limit) and the combined rate over the
   middle 80 % of the run (target ≥ 0.9 of the limit), plus the end-to-end rate.
2. **kill -9**: a fresh campaign; both shards start, and once a third of the passes exist the worker
   running shard 1 is killed with SIGKILL (with the flow-run process it started). Shard 0 finishes;
   shard 1 is run again (another deployment run) and completes. Then: sandbox passes = ledger
   issued = export rows = customers, and no duplicates at the vendor.

Usage:  python bench/bench_scaleout.py [--limit 100] [--customers 6000] [--workers 2] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import CAMPAIGN, steady_rate, write_segment  # noqa: E402

POOL = "passflow-scaleout"
DEPLOYMENT = "issue-passes-shard/issue-passes-shard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    port = int(env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(env["PREFECT_API_URL"] + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited; see {log}")
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not start in 240 s; see {log}")


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    # --limit 1: a worker runs one shard at a time, so N shards spread over N workers
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--limit", "1"],
        env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def write_campaign(out: Path, name: str, customers: int, limit: float, latency_ms: float, url: str) -> Path:
    write_segment(out / f"{name}.csv", customers)
    in_flight = max(2, math.ceil(limit * latency_ms / 1000 * 1.5) + 2)
    text = CAMPAIGN.format(rate=int(limit), csv=out / f"{name}.csv", chunk=1000, url=url, in_flight=in_flight, out=out)
    path = out / f"{name}.toml"
    path.write_text(text.replace(f'name = "bench-api-{int(limit)}"', f'name = "{name}"'), encoding="utf-8")
    return path


def flow_run_processes(flow_run_id: str) -> list[Any]:
    """The process a worker started for this flow run (found by its PREFECT__FLOW_RUN_ID)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


async def wait_final(client: Any, flow_run_id: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = await client.read_flow_run(flow_run_id)
        if fr.state is not None and fr.state.is_final():
            return fr.state.type.value
        await asyncio.sleep(1)
    return "TIMEOUT"


def check_exactly_once(campaign_path: Path, sandbox: Any, customers: int) -> dict[str, int]:
    from passflow.config import load_campaign
    from passflow.store.ledger import Ledger

    camp = load_campaign(campaign_path)
    ledger = Ledger(camp.ledger.url)
    issued = ledger.rows(camp.name, status="issued")
    ledger.close()
    ids: list[str] = []
    for f in Path(camp.export.directory).glob(f"{camp.name}-*moengage*.csv"):
        with f.open(newline="", encoding="utf-8") as fh:
            ids += [r["ID"] for r in csv.DictReader(fh)]
    stats = sandbox.admin.stats(per_customer=False)
    out = {
        "customers": customers,
        "sandbox_passes": stats["passes_created"],
        "sandbox_duplicates": stats["duplicates"],
        "ledger_issued": len(issued),
        "export_rows": len(ids),
        "export_unique": len(set(ids)),
    }
    ok = (
        out["sandbox_passes"] == out["ledger_issued"] == out["export_rows"] == out["export_unique"] == customers
        and out["sandbox_duplicates"] == 0
        and set(ids) == set(issued["customer_id"])
    )
    out["exactly_once"] = int(ok)
    return out


async def scenario(args: argparse.Namespace, env: dict[str, str], out: Path, sandbox: Any, workers: list[Any]) -> None:
    from passflow.flows.issue_sharded import ShardedIssueRequest, ShardRequest, issue_passes_sharded
    from prefect.client.orchestration import get_client
    from prefect.deployments import arun_deployment

    from passflow.config import load_campaign
    from passflow.run.shards import shard_campaign

    limit = args.limit
    # 1. the rate, through the parent flow and child deployment runs
    path = write_campaign(out, "scaleout-rate", args.customers, limit, args.latency_ms, sandbox.passmachine_url)
    t0 = time.perf_counter()
    result = await issue_passes_sharded(ShardedIssueRequest(campaign=str(path), shards=args.workers, deployment=DEPLOYMENT))
    wall = time.perf_counter() - t0
    shard_share = shard_campaign(load_campaign(path), (0, args.workers)).limits.max_per_second
    stats = sandbox.admin.stats(per_customer=False)
    arrivals = sandbox.admin.arrivals()
    steady = steady_rate(arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    print(
        f"rate: {args.workers} workers, {args.customers} customers, limit {limit:g}/s (each shard {shard_share:g}/s): "
        f"sandbox ≤{stats['max_arrivals_1s']['all']} per 1 s window (accepted ≤{stats['max_arrivals_1s']['accepted']}, "
        f"{sum(c.get('429', 0) for c in stats['requests'].values())} × 429; limit {limit:g}); steady {steady:.1f}/s = "
        f"{steady / limit:.3f} of the limit; first→last arrival {len(arrivals) / span:.1f}/s = "
        f"{len(arrivals) / span / limit:.3f}; parent flow wall {wall:.1f} s (Prefect start-up of the child runs "
        f"included) ; shards {result['shards']}",
        flush=True,
    )
    print("  exactly once:", check_exactly_once(path, sandbox, args.customers), flush=True)

    # 2. kill -9 a worker mid-run; its shard completes on rerun
    sandbox.admin.reset(keep_config=True)
    path = write_campaign(out, "scaleout-kill", args.customers, limit, args.latency_ms, sandbox.passmachine_url)

    def shard_params(i: int) -> dict[str, Any]:
        return {"request": ShardRequest(campaign=str(path), shard_index=i, shard_count=2).model_dump()}

    async with get_client() as client:
        runs = [await arun_deployment(DEPLOYMENT, parameters=shard_params(i), timeout=0) for i in range(2)]
        while sandbox.admin.stats(per_customer=False)["passes_created"] < args.customers // 3:
            await asyncio.sleep(0.2)
        victims = flow_run_processes(str(runs[1].id))
        if not victims:
            raise RuntimeError("could not find the flow-run process of shard 1")
        for w in workers:  # the worker that started it, too: the whole "machine" dies
            if any(v.pid in {c.pid for c in _children(w.pid)} for v in victims):
                os.killpg(w.pid, signal.SIGKILL)
        for v in victims:
            v.send_signal(signal.SIGKILL)
        killed_at = sandbox.admin.stats(per_customer=False)["passes_created"]
        print(f"kill -9: killed shard 1's worker and flow run at {killed_at} passes", flush=True)
        state0 = await wait_final(client, runs[0].id, 600)
        rerun = await arun_deployment(DEPLOYMENT, parameters=shard_params(1), timeout=0)
        state1 = await wait_final(client, rerun.id, 600)
    print(f"  shard 0: {state0}; shard 1 rerun: {state1}", flush=True)
    print("  exactly once:", check_exactly_once(path, sandbox, args.customers), flush=True)


def _children(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def main() -> None:
    from passflow.sandbox.runner import start_sandbox_process
    from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=100)
    ap.add_argument("--customers", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=100)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    sandbox = start_sandbox_process(latency_ms=args.latency_ms, max_per_second=int(args.limit))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="passflow-scaleout-") as tmp:
        out = Path(tmp)
        env = {
            **os.environ,
            "PREFECT_HOME": str(out / "prefect-home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PF_BENCH_PUBLIC": DEMO_PUBLIC_TOKEN,
            "PF_BENCH_SECRET": DEMO_SECRET_TOKEN,
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        try:
            t0 = time.perf_counter()
            procs.append(start_server(env, out / "server.log"))
            print(f"prefect server up in {time.perf_counter() - t0:.1f} s", flush=True)
            subprocess.run(
                [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"],
                env=env, check=True, capture_output=True,
            )
            from passflow.flows.issue_sharded import issue_passes_shard

            issue_passes_shard.from_source(
                source=str(ROOT), entrypoint="flows/issue_sharded.py:issue_passes_shard"
            ).deploy(name="issue-passes-shard", work_pool_name=POOL, print_next_steps=False)
            workers = [start_worker(env, f"w{i}", out / f"worker{i}.log") for i in range(args.workers)]
            procs += workers
            asyncio.run(scenario(args, env, out, sandbox, workers))
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            sandbox.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
