"""Benchmark: Google Wallet save links (RS256 JWTs), the engine vs a naive loop vs openssl.

Measured in one run, so the ratios hold on a noisy machine:

* **openssl** — ``openssl speed -seconds S rsa2048``: RSA-2048 signatures/s on one core, and with
  ``-multi N`` on N cores — the ceiling, since one link costs one private-key operation.
* **naive** — what people write: per row a dict, ``jwt.encode(claims, pem, "RS256")`` (PyJWT parses
  the PEM key on every call) and the link.
* **passflow** — ``SaveLinkIssuer.prepare_rows`` (render the object template, check ids and link
  lengths, sign) over chunks of the bundled example campaign, in one process; then in N worker
  processes (what the run's staging pool does for a big segment), vs N × openssl's one-core rate.

Peak RSS (VmHWM) of this process is printed at the end.

Usage:  python bench/bench_gwallet_links.py [--rows 20000] [--naive-rows 3000] [--workers N] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "data" / "campaigns" / "googlewallet-loyalty.toml"
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
CHUNK = 5000


def openssl_rate(seconds: int, multi: int = 1) -> float:
    cmd = ["openssl", "speed", "-seconds", str(seconds)] + (["-multi", str(multi)] if multi > 1 else []) + ["rsa2048"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"cannot read openssl's output:\n{out}")
    return float(m.group(1))


def frame(n: int, start: int = 0) -> pd.DataFrame:
    ids = [f"C{i:07d}" for i in range(start, start + n)]
    return pd.DataFrame({"__row__": range(start + 2, start + 2 + n), "customer_id": ids,
                         "email": [f"{i.lower()}@example.com" for i in ids], "phone": "",
                         "first_name": "Ann", "last_name": "Novak", "loyalty_points": "1143"})  # fmt: skip


def _issuer():  # noqa: ANN202
    from passflow.config import load_campaign
    from passflow.providers.googlewallet.issuer import SaveLinkIssuer
    from passflow.providers.googlewallet.sandbox import demo_key_json

    os.environ.setdefault("GOOGLE_WALLET_SA_KEY", demo_key_json())
    return SaveLinkIssuer(load_campaign(CAMPAIGN), NOW)


_worker = None


def _chunk(args: tuple[int, int]) -> int:
    global _worker
    from passflow.validate import Rejects

    if _worker is None:
        _worker = _issuer()
    return len(_worker.prepare_rows(frame(args[1], args[0]), Rejects()))


def engine(rows: int) -> float:
    from passflow.validate import Rejects

    issuer = _issuer()
    issuer.prepare_rows(frame(100), Rejects())  # warm-up: template compile, key load
    t0 = time.perf_counter()
    done = 0
    for start in range(0, rows, CHUNK):
        done += len(issuer.prepare_rows(frame(min(CHUNK, rows - start), start), Rejects()))
    assert done == rows
    return rows / (time.perf_counter() - t0)


def parallel(rows: int, workers: int) -> float:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_chunk, [(0, 50)] * workers))  # start and warm every worker
        t0 = time.perf_counter()
        done = sum(pool.map(_chunk, [(s, min(CHUNK, rows - s)) for s in range(0, rows, CHUNK)]))
        assert done == rows
        return rows / (time.perf_counter() - t0)


def naive(rows: int) -> float:
    import json

    import jwt

    from passflow.providers.googlewallet.sandbox import demo_key_json

    key = json.loads(demo_key_json())
    df = frame(rows)
    t0 = time.perf_counter()
    links = []
    for r in df.to_dict("records"):
        obj = {"id": f"3388000000022200000.{r['customer_id']}", "classId": "3388000000022200000.loyalty-2026",
               "state": "ACTIVE", "accountId": r["customer_id"], "accountName": f"{r['first_name']} {r['last_name']}",
               "loyaltyPoints": {"label": "Points", "balance": {"int": int(r["loyalty_points"])}},
               "barcode": {"type": "QR_CODE", "value": r["customer_id"]}}  # fmt: skip
        claims = {"iss": key["client_email"], "aud": "google", "typ": "savetowallet", "iat": int(time.time()),
                  "origins": [], "payload": {"loyaltyObjects": [obj]}}  # fmt: skip
        token = jwt.encode(claims, key["private_key"], algorithm="RS256", headers={"kid": key["private_key_id"]})
        links.append("https://pay.google.com/gp/v/save/" + token)
    return rows / (time.perf_counter() - t0)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--naive-rows", type=int, default=3_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=int, default=3, help="openssl speed's time per measurement")
    a = ap.parse_args()
    ssl1 = openssl_rate(a.seconds)
    sslN = openssl_rate(a.seconds, a.workers) if a.workers > 1 else ssl1
    nv = naive(a.naive_rows)
    one = engine(a.rows)
    par = parallel(a.rows, a.workers) if a.workers > 1 else one
    print(f"openssl speed rsa2048: {ssl1:,.0f} sign/s on 1 core, {sslN:,.0f} sign/s on {a.workers} (-multi)")
    print(f"naive PyJWT loop:      {nv:,.0f} links/s ({a.naive_rows:,} rows)")
    print(f"passflow, 1 process:   {one:,.0f} links/s ({a.rows:,} rows) = {one / nv:.2f}x naive, "
          f"{one / ssl1:.2f} of openssl's 1-core rate")  # fmt: skip
    print(f"passflow, {a.workers} workers:   {par:,.0f} links/s = {par / (a.workers * ssl1):.2f} of "
          f"{a.workers} x openssl's 1-core rate, {par / sslN:.2f} of openssl -multi {a.workers}")  # fmt: skip
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
