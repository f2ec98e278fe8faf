"""Benchmark: Skycore signed links for a generated N-row CSV segment, through the real flow.

Measured in one run, so the ratios hold on a noisy machine:

* **naive** — what people write instead: ``csv`` module + ``hashlib`` + ``urllib.parse.quote`` in a
  per-row loop, writing one output CSV (no validation, no ledger, no rejects).
* **passflow** — the ``issue-passes`` Prefect flow on the same file: validation, templates, signing,
  ledger (SQLite), MoEngage + Bloomreach exports. Each side runs in its own subprocess so peak RSS is
  its own. The flow's time is measured after a warm-up flow run, so the ephemeral API server's
  start-up (a fixed cost, printed separately) is not counted per row.

The segment comes from a CSV file (``--source csv``) or from a table in SQLite or PostgreSQL
(``--source sqlite|postgres``, loaded once from the generated CSV); the naive loop reads the same
source (``csv`` module, or the driver's cursor). Peak RSS (VmHWM) is measured inside each
subprocess: the run's own process, and the sum over its worker processes (the forkserver's tree,
sampled from /proc).

Usage:  python bench/bench_links.py [--rows 1000000] [--source csv|sqlite|postgres] [--chunk-size 50000]
                                    [--no-naive] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

NAIVE_ROWS = {
    "csv": """
import csv
f = open(sys.argv[1], newline="", encoding="utf-8")
rows = csv.DictReader(f)
""",
    "sqlite": """
import sqlite3
conn = sqlite3.connect(sys.argv[1])
cur = conn.execute("SELECT * FROM segment")
names = [d[0] for d in cur.description]
rows = (dict(zip(names, r)) for r in cur)
""",
    "postgres": """
import psycopg
conn = psycopg.connect(sys.argv[1])
cur = conn.cursor(name="naive")  # server-side: streams like the CSV reader
cur.itersize = 10000
cur.execute("SELECT * FROM " + sys.argv[3])
rows = None
""",
}

NAIVE = r"""
import csv, hashlib, sys, time
from urllib.parse import quote
t0 = time.perf_counter()
{rows}
if rows is None:  # psycopg: column names once the cursor has run
    names = [d[0] for d in cur.description]
    rows = (dict(zip(names, r)) for r in cur)
base = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
with open(sys.argv[2], "w", newline="", encoding="utf-8") as g:
    w = csv.writer(g)
    w.writerow(["ID", "skycore_pass_id", "skycore_pass_link"])
    for row in rows:
        pid = "SPRING" + row["customer_id"]
        params = [("user-email", row["email"]), ("user-phone", row["phone"]), ("pass-id", pid),
                  ("barcode-value", pid), ("message4", "Hi " + (row["first_name"] or "there") + ", enter this coupon code while checking out.")]
        raw = base + "?" + "&".join(k + "=" + v for k, v in params)
        checksum = hashlib.sha256(raw.encode()).hexdigest()
        url = base + "?" + "&".join(k + "=" + quote(v, safe="@:/") for k, v in params) + "&checksum=" + checksum
        w.writerow([row["customer_id"], pid, url])
print(time.perf_counter() - t0)
{peak}
print(peak_rss_kb())
"""

# A process's own peak RSS. Not ru_maxrss: Linux carries it over an exec from the process that
# forked, so a run started right after this script generated a 10M-row segment (~1.4 GB of pandas)
# reported that instead (the "unexplained" 1,47x MB peaks). VmHWM belongs to the process's own
# address space, which starts at the exec.
PEAK_RSS = """
def peak_rss_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):  # no /proc: the rusage figure, with that caveat
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

FLOW = r"""
import json, os, sys, time
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
from prefect import flow
from passflow.flows.issue_passes import issue_passes

@flow
def warm_up():
    return 1

t0 = time.perf_counter(); warm_up(); startup = time.perf_counter() - t0

# The staging workers are children of multiprocessing's forkserver, not of this process, so
# RUSAGE_CHILDREN never sees them: sample the forkserver's tree from /proc instead (sum of VmRSS).
import threading
def _kids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
def _cmd(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
workers_peak = [0]
main_peak = [0, 0.0]  # this process's own RSS samples: the highest, and when (s into the flow)
done = threading.Event()
def _sample():
    while not done.wait(0.1):
        servers = [k for k in _kids(os.getpid()) if b"forkserver" in _cmd(k)]
        tree = servers + [w for s in servers for w in _kids(s)]
        workers_peak[0] = max(workers_peak[0], sum(map(_rss_kb, tree)))
        own = _rss_kb(os.getpid())
        if own > main_peak[0]:
            main_peak[:] = [own, time.perf_counter() - t0]
t0 = time.perf_counter()
threading.Thread(target=_sample, daemon=True).start()

summary = issue_passes(campaign=sys.argv[1])
elapsed = time.perf_counter() - t0
done.set()
{peak}
rss = {"main_rss_kb": peak_rss_kb(), "workers_rss_kb": workers_peak[0],
       "main_sampled_kb": main_peak[0], "main_sampled_at_s": main_peak[1]}
print(json.dumps({"startup_s": startup, "flow_s": elapsed, "summary": summary, **rss}))
"""

CAMPAIGN = """
[campaign]
name = "bench-links"
provider = "skycore"
[source]
{source}
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
    # Czech mobiles (+420 601–608 …), numbers phonenumbers itself calls valid
    phones = "+42060" + pd.Series(rng.integers(1_000_000, 9_000_000, rows)).astype(str)
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


def ensure_segment(rows: int) -> Path:
    """The generated CSV segment of ``rows`` rows in ``bench/out`` (generated once, then reused)."""
    OUT.mkdir(parents=True, exist_ok=True)
    seg = OUT / f"segment-{rows}.csv"
    if not seg.exists():
        print(f"generating {seg} …", flush=True)
        generate_segment(seg, rows)
    return seg


def sqlite_segment(csv_path: Path, rows: int) -> Path:
    """The segment as table ``segment`` of a SQLite file (all TEXT, as exported), built once."""
    db = OUT / f"segment-{rows}.sqlite"
    if db.exists():
        return db
    import sqlite3

    import pyarrow.csv as pacsv

    tmp = db.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    reader = pacsv.open_csv(csv_path, convert_options=_all_text(csv_path))
    names = reader.schema.names
    conn.execute(f"CREATE TABLE segment ({', '.join(n + ' TEXT' for n in names)})")
    insert = f"INSERT INTO segment VALUES ({', '.join('?' * len(names))})"
    for batch in reader:
        conn.executemany(insert, zip(*(c.to_pylist() for c in batch.columns), strict=True))
    conn.commit()
    conn.close()
    tmp.rename(db)
    return db


def postgres_segment(csv_path: Path, rows: int, url: str) -> str:
    """The segment as table ``bench_segment_<rows>`` in PostgreSQL (all TEXT), loaded once by COPY."""
    import psycopg

    table = f"bench_segment_{rows}"
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if found and found[0] and conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (rows,):
            return table
        header = csv_path.open(encoding="utf-8").readline().strip().replace('"', "").split(",")
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({', '.join(n + ' TEXT' for n in header)})")
        copy_sql = f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
        with conn.cursor() as cur, cur.copy(copy_sql) as copy, csv_path.open("rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
    return table


def _all_text(csv_path: Path):  # noqa: ANN202 - pyarrow.csv.ConvertOptions
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = csv_path.open(encoding="utf-8").readline().strip().replace('"', "").split(",")
    return pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def run(cmd: list[str], **kw: object) -> tuple[str, float]:
    """Run a subprocess; return (stdout, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)  # type: ignore[call-overload]
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {cmd[:2]}\n{proc.stderr[-3000:]}")
    return proc.stdout, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--source", choices=["csv", "sqlite", "postgres"], default="csv")
    # The campaigns' default (see passflow/config.py and bench_overhead.py for why 50k).
    ap.add_argument("--chunk-size", type=int, default=50_000)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (e.g. for a 10M memory run)")
    ap.add_argument("--pg-url", default=os.environ.get("PASSFLOW_TEST_PG_URL", PG_URL))
    args = ap.parse_args()
    seg = ensure_segment(args.rows)
    if args.source == "csv":
        source_toml = f'csv = "{seg}"'
        naive_args = [str(seg), "{out}"]
    elif args.source == "sqlite":
        db = sqlite_segment(seg, args.rows)
        source_toml = f'sql_url = "sqlite:///{db}"\ntable = "segment"'
        naive_args = [str(db), "{out}"]
    else:
        table = postgres_segment(seg, args.rows, args.pg_url)
        source_toml = f'sql_url = "{args.pg_url}"\ntable = "{table}"'
        naive_args = [_libpq(args.pg_url), "{out}", table]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="passflow-bench-") as tmp:
        out = Path(tmp)
        camp = out / "bench.toml"
        camp.write_text(CAMPAIGN.format(source=source_toml, chunk=args.chunk_size, out=out), encoding="utf-8")
        naive_s = naive_rss = None
        # Each side starts with nothing left to write back: the naive loop's ~340 MB output (or a
        # freshly generated segment) would otherwise be flushed by the kernel during the flow, and
        # charged to it (the same as bench_engine.py between its runs).
        os.sync()
        if not args.no_naive:
            script = NAIVE.replace("{rows}", NAIVE_ROWS[args.source]).replace("{peak}", PEAK_RSS)
            naive_args = [a.replace("{out}", str(out / "naive.csv")) for a in naive_args]
            naive_out, _ = run([sys.executable, "-c", script, *naive_args])
            naive_s, naive_kb = map(float, naive_out.strip().splitlines()[-2:])
            naive_rss = naive_kb / 1024
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        os.sync()
        flow_out, _ = run([sys.executable, "-c", textwrap.dedent(FLOW).replace("{peak}", PEAK_RSS), str(camp)], env=env)
        res = json.loads(flow_out.strip().splitlines()[-1])
    s = res["summary"]
    assert s["issued_new"] == args.rows, s
    rows = args.rows
    main_mb, workers_mb = res["main_rss_kb"] / 1024, res["workers_rss_kb"] / 1024
    print()
    print(f"rows / source / chunk        {rows:,} / {args.source} / {args.chunk_size:,}")
    print(f"load average (1 min, start)  {load:.2f} on {os.cpu_count()} cores")
    if naive_s is not None:
        print(
            f"naive loop                   {naive_s:8.2f} s   {rows / naive_s:>10,.0f} rows/s   "
            f"peak RSS {naive_rss:6.0f} MB"
        )
    print(
        f"passflow issue-passes flow   {res['flow_s']:8.2f} s   {rows / res['flow_s']:>10,.0f} rows/s   "
        f"peak RSS {main_mb:6.0f} MB (run) + {workers_mb:.0f} MB (workers)"
    )
    print(
        f"  run's RSS, sampled every 0.1 s: highest {res['main_sampled_kb'] / 1024:.0f} MB, "
        f"{res['main_sampled_at_s']:.1f} s into the flow"
    )
    print(f"  of which stage/deliver     {s.get('stage_s', 0):8.2f} s / {s.get('deliver_s', 0):.2f} s")
    other = s.get("total_s", 0) - s.get("read_s", 0) - s.get("stage_s", 0) - s.get("deliver_s", 0)
    print(f"  read source / rest of run  {s.get('read_s', 0):8.2f} s / {other:.2f} s")
    print(f"  waiting for ledger writes  {s.get('ledger_wait_s', 0):8.2f} s")
    print(
        f"  Prefect tasks & artifacts  {res['flow_s'] - s.get('total_s', 0):8.2f} s   (flow time outside the run)"
    )
    print(f"  Prefect API start-up       {res['startup_s']:8.2f} s   (fixed cost per process, not per row)")
    if naive_s is not None:
        print(f"speed-up vs naive            {naive_s / res['flow_s']:8.2f} x")
    result = {
        "rows": rows,
        "source": args.source,
        "chunk_size": args.chunk_size,
        "load_avg_1m": load,
        "naive_s": naive_s,
        "naive_rss_mb": naive_rss,
        "flow_s": res["flow_s"],
        "rows_per_s": rows / res["flow_s"],
        "ratio": naive_s / res["flow_s"] if naive_s else None,
        "peak_rss_mb": main_mb,
        "workers_peak_rss_mb": workers_mb,
        "sampled_peak_rss_mb": res["main_sampled_kb"] / 1024,
        "sampled_peak_at_s": res["main_sampled_at_s"],
        "startup_s": res["startup_s"],
        "timings": {k: v for k, v in s.items() if k.endswith("_s") and not k.endswith("per_s")},
    }
    (OUT / f"bench_links-{args.source}-{rows}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
