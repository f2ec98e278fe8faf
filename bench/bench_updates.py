"""Benchmark: what a batch diff saves. Against the provider sandbox in its own process (Skycore pass
update API, 20 ms latency), for N issued customers of whom a share changed, measured in one run:

* ``--diff`` (rerun the segment, send only the changed): wall time and vendor calls;
* updating everyone (``--customers`` with every id, a fixed notification): wall time and vendor calls;
* the ratios, and the diff's planning cost per 1 000 customers (reading, validating, fingerprinting,
  comparing against the stored baselines).

Usage:  python bench/bench_updates.py [--customers 5000] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
from pathlib import Path

from passflow.config import load_campaign
from passflow.run import run_issue
from passflow.sandbox import SandboxConfig, start_sandbox_process
from passflow.sandbox.state import DEMO_SKYCORE_API_KEY
from passflow.updates import UpdateRequest, run_update


def segment(n: int, changed: int) -> str:
    rows = [f"C{i},{'New' if i < changed else 'Name'}{i},c{i}@example.com" for i in range(n)]
    return "customer_id,first_name,email\n" + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    n, changed = args.customers, int(args.customers * args.changed)
    os.environ["BENCH_SKY_KEY"] = DEMO_SKYCORE_API_KEY
    work = Path(tempfile.mkdtemp(prefix="bench-updates-"))
    with start_sandbox_process(port=0, config=SandboxConfig(latency_ms=20)) as sb:
        (work / "segment.csv").write_text(segment(n, 0))
        (work / "c.toml").write_text(
            textwrap.dedent(
                f"""
                [campaign]
                name = "bench-upd"
                provider = "skycore"
                [source]
                csv = "segment.csv"
                [skycore]
                link_base = "https://d2c.skycore.com/wallet/gc/abc"
                [skycore.params]
                pass-id = "P{{{{ customer.customer_id }}}}"
                message4 = "Hi {{{{ customer.first_name }}}}"
                [export]
                formats = []
                [ledger]
                url = "sqlite:///ledger.db"
                [limits]
                max_in_flight = 50
                max_per_second = 1000
                [updates]
                api_base_url = "{sb.skycore_url}"
                api_key = {{ env = "BENCH_SKY_KEY" }}
                pass_template_id = "tpl1"
                diff_action = "refresh"
                chunk_size = 2000
                [updates.actions.refresh.pass_data]
                pass-update-notification = "Hi {{{{ customer.first_name }}}}"
                [updates.actions.notify.pass_data]
                pass-update-notification = "Your coupon was updated"
                """
            )
        )
        campaign = load_campaign(work / "c.toml")
        run_issue(campaign)
        sb.admin.register_skycore_passes([f"PC{i}" for i in range(n)])
        run_update(campaign, UpdateRequest(mode="diff"))  # first diff: baselines for everyone
        (work / "segment.csv").write_text(segment(n, changed))

        t0 = time.perf_counter()
        diff = run_update(campaign, UpdateRequest(mode="diff"))
        diff_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        noop = run_update(campaign, UpdateRequest(mode="diff"))  # nothing changed since: planning only
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        everyone = run_update(
            campaign, UpdateRequest(mode="customers", customer_ids=[f"C{i}" for i in range(n)], action="notify")
        )
        all_s = time.perf_counter() - t0
    print(f"customers {n}, changed {changed} ({args.changed:.1%}); sandbox latency 20 ms, 50 in flight")
    print(f"diff:     {diff_s:7.2f} s  {diff['vendor_calls']:6d} vendor calls  (sent {diff.get('sent', 0)})")
    print(f"everyone: {all_s:7.2f} s  {everyone['vendor_calls']:6d} vendor calls  (sent {everyone.get('sent', 0)})")
    print(f"ratio everyone/diff: time {all_s / diff_s:.1f}x, calls {everyone['vendor_calls'] / max(diff['vendor_calls'], 1):.0f}x")
    print(f"diff planning with nothing to send: {plan_s:.2f} s = {1e6 * plan_s / n:.0f} ms per 1000 customers "
          f"({noop['vendor_calls']} calls)")  # fmt: skip


if __name__ == "__main__":
    main()
