"""Benchmark: Skycore signed links for a generated N-row CSV segment, through the real flow.

Measured in one run, so the ratios hold on a noisy machine:

* **naive** — what people write instead: ``csv`` module + ``hashlib`` + ``urllib.parse.quote`` in a
  per-row loop, writing one output CSV (no validation, no ledger, no rejects).
* **passflow** — the ``issue-passes`` Prefect flow on the same file: validation, templates, signing,
  ledger (SQLite), MoEngage + Bloomreach exports. Each side runs in its own subprocess so peak RSS is
  its own. The flow's time is measured after a warm-up flow run, so the ephemeral API server's
  start-up (a fixed cost, printed separately) is not counted per row.

Usage:  python bench/bench_links.py [--rows 1000000] [--chunk-size 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

NAIVE = r"""
import csv, hashlib, sys, time
from urllib.parse import quote
src, dst = sys.argv[1], sys.argv[2]
base = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
t0 = time.perf_counter()
with open(src, newline="", encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as g:
    r = csv.DictReader(f)
    w = csv.writer(g)
    w.writerow(["ID", "skycore_pass_id", "skycore_pass_link"])
    for row in r:
        pid = "SPRING" + row["customer_id"]
        params = [("user-email", row["email"]), ("user-phone", row["phone"]), ("pass-id", pid),
                  ("barcode-value", pid), ("message4", "Hi " + (row["first_name"] or "there") + ", enter this coupon code while checking out.")]
        raw = base + "?" + "&".join(k + "=" + v for k, v in params)
        checksum = hashlib.sha256(raw.encode()).hexdigest()
        url = base + "?" + "&".join(k + "=" + quote(v, safe="@:/") for k, v in params) + "&checksum=" + checksum
        w.writerow([row["customer_id"], pid, url])
print(time.perf_counter() - t0)
"""

FLOW = r"""
import json, os, sys, time
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
from prefect import flow
from flows.issue_passes import IssueRequest, issue_passes

@flow
def warm_up():
    return 1

t0 = time.perf_counter(); warm_up(); startup = time.perf_counter() - t0
t0 = time.perf_counter()
summary = issue_passes(IssueRequest(campaign=sys.argv[1]))
elapsed = time.perf_counter() - t0
print(json.dumps({"startup_s": startup, "flow_s": elapsed, "summary": summary}))
"""

CAMPAIGN = """
[campaign]
name = "bench-links"
provider = "skycore"
[source]
csv = "{csv}"
chunk_size = {chunk}
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
[skycore.params]
user-email = "{{{{ customer.email }}}}"
user-phone = "{{{{ customer.phone }}}}"
pass-id = "SPRING{{{{ customer.customer_id }}}}"
barcode-value = "SPRING{{{{ customer.customer_id }}}}"
message4 = "Hi {{{{ customer.first_name|default('there') }}}}, enter this coupon code while checking out."
[export]
directory = "{out}/exports"
formats = ["moengage", "bloomreach"]
[ledger]
url = "sqlite:///{out}/ledger.db"
"""


def generate_segment(path: Path, rows: int) -> None:
    """A realistic segment: ids, names, emails (some with '+'), E.164 phones."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    ids = pd.Series(np.arange(1, rows + 1)).map("C{:08d}".format)
    first = pd.Series(rng.choice(["Anna", "Jan", "Zoë", "Liam", "José", "", "Mary"], rows))
    tag = pd.Series(np.where(rng.random(rows) < 0.1, "+wallet", ""))
    emails = "user" + pd.Series(np.arange(rows)).astype(str) + tag + "@example.com"
    phones = "+4206" + pd.Series(rng.integers(10_000_000, 99_999_999, rows)).astype(str)
    df = pd.DataFrame(
        {
            "customer_id": ids,
            "first_name": first,
            "last_name": "Novák",
            "email": emails,
            "phone": phones,
            "tier": "gold",
            "loyalty_points": "100",
        }
    )
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), path)


def run(cmd: list[str], **kw: object) -> tuple[str, float, float]:
    """Run a subprocess; return (stdout, wall seconds, its peak RSS in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)  # type: ignore[call-overload]
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {cmd}\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: run the biggest one last
    return proc.stdout, wall, max(peak, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    # The campaigns' default: 100k-row chunks are no faster and hold ~100 MB more at the peak.
    ap.add_argument("--chunk-size", type=int, default=50_000)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    seg = OUT / f"segment-{args.rows}.csv"
    if not seg.exists():
        print(f"generating {seg} …", flush=True)
        generate_segment(seg, args.rows)
    with tempfile.TemporaryDirectory(prefix="passflow-bench-") as tmp:
        out = Path(tmp)
        camp = out / "bench.toml"
        camp.write_text(CAMPAIGN.format(csv=seg, chunk=args.chunk_size, out=out), encoding="utf-8")
        naive_out, _, naive_rss = run([sys.executable, "-c", NAIVE, str(seg), str(out / "naive.csv")])
        naive_s = float(naive_out.strip().splitlines()[-1])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        flow_out, _, flow_rss = run([sys.executable, "-c", textwrap.dedent(FLOW), str(camp)], env=env)
        res = json.loads(flow_out.strip().splitlines()[-1])
    s = res["summary"]
    assert s["issued_new"] == args.rows, s
    rows = args.rows
    print()
    print(f"rows                         {rows:,}")
    print(
        f"naive csv+hashlib loop       {naive_s:8.2f} s   {rows / naive_s:>10,.0f} rows/s   peak RSS {naive_rss:6.0f} MB"
    )
    print(
        f"passflow issue-passes flow   {res['flow_s']:8.2f} s   {rows / res['flow_s']:>10,.0f} rows/s   peak RSS {flow_rss:6.0f} MB"
    )
    print(f"  of which stage/deliver     {s.get('stage_s', 0):8.2f} s / {s.get('deliver_s', 0):.2f} s")
    other = s.get("total_s", 0) - s.get("read_s", 0) - s.get("stage_s", 0) - s.get("deliver_s", 0)
    print(f"  read source / rest of run  {s.get('read_s', 0):8.2f} s / {other:.2f} s")
    print(
        f"  Prefect tasks & artifacts  {res['flow_s'] - s.get('total_s', 0):8.2f} s   (flow time outside the run)"
    )
    print(f"  Prefect API start-up       {res['startup_s']:8.2f} s   (fixed cost per process, not per row)")
    print(f"speed-up vs naive            {naive_s / res['flow_s']:8.2f} x")
    result = {
        "rows": rows,
        "naive_s": naive_s,
        "flow_s": res["flow_s"],
        "ratio": naive_s / res["flow_s"],
        "peak_rss_mb": flow_rss,
        "startup_s": res["startup_s"],
        "chunk_size": args.chunk_size,
    }
    (OUT / f"bench_links-{rows}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
