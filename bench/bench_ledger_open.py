"""Benchmark: what opening a ledger costs (``Ledger(url)``, one read, close) and its schema check alone.

The ledger is opened often — each Prefect task, each pool worker, the callbacks server, each inbox
file — and every open checks the database's schema revision (passflow.store.migrate). This measures
N opens of a database already at head, in one process, on a SQLite file and on PostgreSQL, for this
checkout and optionally another one (e.g. 6f50e4d, whose open ran ``create_all`` instead), each in
its own fresh process. Medians; a whole open is dominated by making a connection and is noisy on a
shared machine, the schema check alone (on a warm engine) is what the revision check adds.

Usage:  python bench/bench_ledger_open.py [--opens 300] [--other /tmp/pf-6f50e4d] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
import sqlalchemy as sa
try:
    from passflow.store import migrate
    from passflow.store.ledger import Ledger
    check = migrate.ensure_current
except ImportError:  # a checkout from before passflow/store: its open ran create_all (ledger tables)
    from passflow.ledger import Ledger, create_tables, metadata
    check = lambda engine: create_tables(engine, metadata)
url, n = sys.argv[1], int(sys.argv[2])
Ledger(url).close()  # the database exists, at this code's schema


def median_ms(fn):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * sorted(times)[n // 2], 3)


def open_read_close():
    ledger = Ledger(url)
    ledger.has_rows("bench")
    ledger.close()


engine = sa.create_engine(url)  # warm: its pool holds one connection, as an open ledger's does
check(engine)
print(json.dumps({"open_read_close_ms": median_ms(open_read_close), "schema_check_ms": median_ms(lambda: check(engine))}))
"""


def measure(checkout: Path, url: str, opens: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    # cwd: "python -c" puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", _CHILD, url, str(opens)], env=env, cwd=checkout, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def fresh_pg(admin_url: str, name: str) -> str:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=300)
    parser.add_argument("--other", type=Path, help="another checkout to compare with")
    parser.add_argument("--pg", default=os.environ.get("PASSFLOW_TEST_PG_URL"), help="PostgreSQL admin URL")
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"other": args.other} if args.other else {})}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, checkout in checkouts.items():
            results[f"sqlite/{label}"] = measure(checkout, f"sqlite:///{tmp}/{label}.db", args.opens)
            if args.pg:
                name = f"bench_open_{label}"
                try:
                    results[f"postgresql/{label}"] = measure(checkout, fresh_pg(args.pg, name), args.opens)
                finally:
                    drop_pg(args.pg, name)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
