"""Benchmark: vendor callbacks recorded per second through the real callbacks server.

Seeds a ledger (SQLite file) with N issued passes, starts the callbacks server (a thread, real HTTP
on loopback) and sends M signed Skycore postbacks one at a time over a keep-alive connection, as
a vendor does. Measured in one run, for a small and a big ledger:

* callbacks/s when the postback carries only the pass id (found by scanning the campaign's ledger
  rows: the ledger has no pass_id index, to keep bulk issuance writes fast);
* callbacks/s when it also echoes the customer id (a primary-key read);
* the ratios big/small ledger for both — how much the scan costs as the campaign grows.

Usage:  python bench/bench_callbacks.py [--small 1000] [--big 300000] [--callbacks 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from passflow.callbacks.auth import signed_headers  # noqa: E402
from passflow.callbacks.server import start_callbacks_thread  # noqa: E402
from passflow.config import load_campaign  # noqa: E402
from passflow.store.ledger import Ledger  # noqa: E402

SECRET = "bench-callback-secret"
CAMPAIGN = """
[campaign]
name = "bench-cb"
provider = "skycore"
[source]
csv = "unused.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
pass-id = "P{{{{ customer.customer_id }}}}"
[ledger]
url = "{ledger}"
[callbacks]
secret = {{ env = "PASSFLOW_BENCH_CB_SECRET" }}
emit_events = false
"""


def seed(url: str, n: int) -> None:
    ledger = Ledger(url, bulk_writer=True)
    ids = [f"{i:08d}" for i in range(n)]
    for i in range(0, n, 100_000):
        part = ids[i : i + 100_000]
        rows = pd.DataFrame(
            {"customer_id": part, "status": "issued", "pass_id": [f"P{c}" for c in part], "pass_link": "",
             "fingerprint": "f", "last_error": None, "issued_at": datetime.now(UTC)}
        )
        ledger.record("bench-cb", "skycore", rows, "bench")
    ledger.checkpoint()
    ledger.close()


def rate(url: str, n_ledger: int, count: int, *, echo: bool, tag: str) -> float:
    client = httpx.Client(timeout=30)
    step = max(1, n_ledger // count)
    t0 = time.perf_counter()
    for k in range(count):
        cid = f"{(k * step) % n_ledger:08d}"
        doc = {"postback-id": f"{tag}-{k}", "status-code": "N804", "pass-id": f"P{cid}",
               "timestamp": "2026-12-01T12:00:00Z"}
        if echo:
            doc["customer-id"] = cid
        body = json.dumps(doc).encode()
        r = client.post(url, content=body, headers=signed_headers(SECRET, body))
        assert r.status_code == 200 and r.json()["recorded"], r.text
    client.close()
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--big", type=int, default=300_000)
    ap.add_argument("--callbacks", type=int, default=300)
    args = ap.parse_args()
    os.environ["PASSFLOW_BENCH_CB_SECRET"] = SECRET
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.small, args.big):
            db = f"sqlite:///{Path(tmp) / f'ledger-{size}.db'}"
            seed(db, size)
            path = Path(tmp) / f"c-{size}.toml"
            path.write_text(CAMPAIGN.format(ledger=db), encoding="utf-8")
            base, stop = start_callbacks_thread([load_campaign(path)])
            url = f"{base}/callbacks/bench-cb/skycore"
            try:
                results[size] = {
                    "pass id only": rate(url, size, args.callbacks, echo=False, tag="a"),
                    "pass id + customer id": rate(url, size, args.callbacks, echo=True, tag="b"),
                }
            finally:
                stop()
    print(f"callbacks/s, {args.callbacks} signed postbacks each, sequential keep-alive, SQLite ledger")
    for mode in ("pass id only", "pass id + customer id"):
        small, big = results[args.small][mode], results[args.big][mode]
        print(f"  {mode:22s} ledger {args.small:>7,}: {small:7.1f}/s   ledger {args.big:>7,}: {big:7.1f}/s   "
              f"big/small {big / small:.2f}")


if __name__ == "__main__":
    main()
