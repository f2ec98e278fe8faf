"""Benchmark: Passmachine API issuance at the vendor's limit, against the provider sandbox.

For each configured limit (requests/second) it issues N customers through the real issuance code
(engine + Passmachine issuer + limiter + pooled async client) against a sandbox running in its own
process with 100 ms latency and the same limits enforced (so a violation would show up as 429s),
and prints, measured in the same run:

* achieved rate / configured limit (target ≥ 0.95), and what the sandbox observed: the most
  requests in any sliding 1 s window and the most in flight at once;
* CPU time per request in the client process (the ceiling of one process);
* the rate of a plain sequential httpx loop (one request at a time, as a generic REST destination
  does) and the ratio ours / sequential.

Usage:  python bench/bench_api.py [--customers 10000] [--rates 10 50 200] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

CAMPAIGN = """
[campaign]
name = "bench-api-{rate}"
provider = "passmachine"
[source]
csv = "{csv}"
chunk_size = {chunk}
[passmachine]
api_base_url = "{url}"
account = "demo"
template_id = "tpl-bench"
public_token = {{ env = "PF_BENCH_PUBLIC" }}
secret_token = {{ env = "PF_BENCH_SECRET" }}
[passmachine.template_variables]
kpFirstName = "{{{{ customer.first_name }}}}"
kpCardNumber = "{{{{ customer.customer_id }}}}"
[passmachine.metadata]
email = "{{{{ customer.email }}}}"
[limits]
max_in_flight = {in_flight}
max_per_second = {rate}
timeout_s = 10
[export]
directory = "{out}/exports"
formats = ["moengage"]
[ledger]
url = "sqlite:///{out}/ledger.db"
"""


def write_segment(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("customer_id,first_name,email\n")
        for i in range(n):
            f.write(f"B{i:07d},Name{i % 97},bench{i}@example.com\n")


def sequential_rate(base_url: str, seconds: float = 10.0) -> float:
    """One request at a time with a plain httpx client: the generic-REST-destination baseline."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        token = client.get(
            "/authenticate", params={"validTo": int(time.time()) + 600}, auth=("pm-public-demo", "pm-secret-demo")
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            body = {"templateId": "tpl-seq", "templateVariables": {}, "metadata": {"registered": f"S{n}"}}
            r = client.post("/accounts/demo/passes", json=body, headers={**headers, "X-Timestamp": str(int(time.time()))})
            r.raise_for_status()
            n += 1
        return n / (time.perf_counter() - t0)


def main() -> None:
    from passflow.config import load_campaign
    from passflow.engine import IssueRun
    from passflow.sandbox.runner import start_sandbox_process
    from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--rates", type=float, nargs="+", default=[10, 50, 200])
    ap.add_argument("--latency-ms", type=float, default=100)
    args = ap.parse_args()
    os.environ["PF_BENCH_PUBLIC"], os.environ["PF_BENCH_SECRET"] = DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for rate in args.rates:
        # enough in flight that the rate, not latency, is the bound (Little's law, with headroom)
        in_flight = max(2, math.ceil(rate * args.latency_ms / 1000 * 1.5) + 2)
        sandbox = start_sandbox_process(
            latency_ms=args.latency_ms, max_in_flight=in_flight, max_per_second=int(rate)
        )
        try:
            with tempfile.TemporaryDirectory(prefix="passflow-bench-api-") as tmp:
                out = Path(tmp)
                write_segment(out / "seg.csv", args.customers)
                chunk = int(min(5000, max(500, rate * 20)))
                camp = out / "c.toml"
                camp.write_text(
                    CAMPAIGN.format(rate=int(rate), csv=out / "seg.csv", chunk=chunk, url=sandbox.passmachine_url,
                                    in_flight=in_flight, out=out),
                    encoding="utf-8",
                )
                run = IssueRun(load_campaign(camp))
                try:
                    for c in run.source_chunks():
                        run.stage_chunk(c)
                    run.end_staging()
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    for i in range(run.batch_count):
                        run.deliver_batch(i)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                    result = run.commit()
                except BaseException as exc:
                    run.abort(exc)
                    raise
            stats = sandbox.admin.stats()
            assert stats["passes_created"] == args.customers and stats["duplicates"] == 0, stats
            seq = sequential_rate(sandbox.passmachine_url, seconds=min(10.0, 200 / max(rate, 1)) + 3)
        finally:
            sandbox.stop()
        achieved = result.counts.issued_new / wall
        row = {
            "limit_per_s": rate,
            "max_in_flight": in_flight,
            "customers": args.customers,
            "achieved_per_s": round(achieved, 2),
            "ratio_to_limit": round(achieved / rate, 3),
            "sandbox_max_arrivals_1s": stats["max_arrivals_1s"]["all"],
            "sandbox_max_in_flight": stats["max_in_flight"]["all"],
            "http_429": stats["requests"].get("429", 0) if isinstance(stats["requests"], dict) else None,
            "cpu_ms_per_request": round(cpu / max(1, result.vendor_calls) * 1000, 3),
            "sequential_per_s": round(seq, 2),
            "ratio_to_sequential": round(achieved / seq, 2),
        }
        results.append(row)
        print(
            f"limit {rate:6.0f}/s  in-flight {in_flight:3d}: achieved {achieved:8.2f}/s = {achieved / rate:.3f} of limit; "
            f"sandbox saw ≤{row['sandbox_max_arrivals_1s']} per 1 s window, ≤{row['sandbox_max_in_flight']} in flight; "
            f"CPU {row['cpu_ms_per_request']} ms/request; sequential loop {seq:.2f}/s → ours {achieved / seq:.1f}×",
            flush=True,
        )
    (OUT / "bench_api.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
