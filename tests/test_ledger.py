"""The ledger on SQLite and PostgreSQL: upserts, lookups, intents, the campaign lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from passflow.store.ledger import CampaignLocked, Ledger


def outcome(ids: list[str], status: str = "issued", fp: str = "f") -> pd.DataFrame:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "status": status,
            "pass_id": [f"P{i}" for i in ids],
            "pass_link": [f"https://x/{i}" for i in ids],
            "fingerprint": fp,
            "last_error": None,
            "issued_at": now,
        }
    )


def test_record_lookup_and_upsert(db_url: str) -> None:
    led = Ledger(db_url)
    led.record("c1", "skycore", outcome(["a", "b"]), "run1")
    led.record("c2", "skycore", outcome(["a"]), "run1")  # campaigns are separate
    led.record("c1", "skycore", outcome(["b", "c"], fp="g"), "run2")
    got = led.lookup("c1", ["a", "b", "c", "zz"]).set_index("customer_id")
    assert sorted(got.index) == ["a", "b", "c"]
    assert got.loc["a", "fingerprint"] == "f" and got.loc["b", "fingerprint"] == "g"
    assert led.status_counts("c1") == {"issued": 3}
    assert led.status_counts("c2") == {"issued": 1}
    led.close()


def test_lookup_in_batches(db_url: str) -> None:
    led = Ledger(db_url)
    ids = [f"id{i}" for i in range(12_000)]
    led.record("big", "skycore", outcome(ids), "r")
    assert len(led.lookup("big", ids)) == 12_000
    led.close()


def test_pending_intent_counts_attempts(db_url: str) -> None:
    led = Ledger(db_url)
    rows = pd.DataFrame({"customer_id": ["a", "b"], "fingerprint": ["x", "y"]})
    led.mark_pending("c", "passmachine", rows, "r1")
    led.mark_pending("c", "passmachine", rows.iloc[:1], "r2")
    got = led.rows("c").set_index("customer_id")
    assert got.loc["a", "status"] == "pending" and got.loc["a", "attempts"] == 2
    assert got.loc["b", "attempts"] == 1
    led.record("c", "passmachine", outcome(["a"]), "r2")
    assert led.status_counts("c") == {"issued": 1, "pending": 1}
    led.close()


def test_one_active_run_per_campaign(db_url: str) -> None:
    led = Ledger(db_url)
    led.acquire_lock("c", "run-a")
    with pytest.raises(CampaignLocked, match="already being run"):
        led.acquire_lock("c", "run-b")
    led.acquire_lock("other", "run-b")  # other campaigns are not blocked
    led.release_lock("c", "run-a")
    led.acquire_lock("c", "run-b")
    led.close()


def test_a_run_that_loses_the_lock_race_is_told_who_holds_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs look at the same moment and both see no holder; the second insert then conflicts.
    # Its refusal names the holder like any other ("already being run …"), not a bare race message.
    led = Ledger(db_url)
    led.acquire_lock("c", "run-a")
    original, looks = Ledger._lock_conflicts, []

    def look(self: Ledger, *args: object) -> list:
        looks.append(args)
        return [] if len(looks) == 1 else original(self, *args)  # the first look misses run-a's row

    monkeypatch.setattr(Ledger, "_lock_conflicts", look)
    with pytest.raises(CampaignLocked, match="already being run .*run run-a"):
        led.acquire_lock("c", "run-b")
    assert len(looks) >= 2  # it did lose the race, and looked again
    led.close()


def test_lock_of_a_dead_process_is_taken_over(db_url: str) -> None:
    led = Ledger(db_url)
    code = (
        "import sys; from passflow.store.ledger import Ledger; Ledger(sys.argv[1]).acquire_lock('c', 'crashed-run')"
    )
    subprocess.run([sys.executable, "-c", code, db_url], check=True, env=os.environ.copy())
    led.acquire_lock("c", "next-run")  # the holder's pid is gone: not a live run
    led.close()


def test_unreachable_database_is_a_clear_error() -> None:
    from passflow.errors import PassflowError

    with pytest.raises(PassflowError, match="cannot open the ledger") as exc:
        Ledger("postgresql+psycopg://user:pw-s3cret@127.0.0.1:1/nodb")
    assert "pw-s3cret" not in str(exc.value)


def test_big_batches_upsert_like_small_ones(db_url: str) -> None:
    # On PostgreSQL a batch of PG_COPY_MIN_ROWS or more goes through COPY + one upsert: same result.
    from passflow.store.ledger import PG_COPY_MIN_ROWS

    led = Ledger(db_url)
    ids = [f"id{i:05d}" for i in range(PG_COPY_MIN_ROWS + 500)]
    first = outcome(ids)
    first.loc[len(ids) - 2, "last_error"] = "timeout"  # rows the second batch leaves alone
    first.loc[len(ids) - 3, "pass_link"] = ""  # stored as NULL, like the row-by-row path
    led.record("big", "skycore", first, "r1")
    again = outcome(ids[:PG_COPY_MIN_ROWS] + ["id00001"], fp="g")  # a customer twice: the last row wins
    again.loc[len(again) - 1, "status"] = "failed"
    led.record("big", "skycore", again, "r2")
    led.record("big", "skycore", outcome(ids[:1], fp="h"), "r3")  # small batch after a big one
    got = led.rows("big").set_index("customer_id")
    assert len(got) == len(ids)
    assert got.loc["id00000", "fingerprint"] == "h" and got.loc["id00000", "run_id"] == "r3"
    assert got.loc["id00001", "status"] == "failed" and got.loc["id00002", "fingerprint"] == "g"
    assert got.loc[ids[-1], "fingerprint"] == "f" and got.loc[ids[-1], "run_id"] == "r1"
    assert got.loc[ids[-2], "last_error"] == "timeout" and pd.isna(got.loc[ids[-3], "pass_link"])
    assert (got["attempts"] == 1).all() and got["issued_at"].notna().all()
    assert led.lookup("big", ids)["issued_at"].dt.year.eq(2026).all()
    led.close()


def test_values_alike_in_a_whole_batch_are_stored_for_every_row(db_url: str) -> None:
    # A link run's batch: status, link (none kept), error and issue time are the same in every row
    # (SQLite binds them once per batch); a failed batch has no issue time at all.
    led = Ledger(db_url)
    ids = [f"id{i:04d}" for i in range(1234)]
    links = outcome(ids).assign(pass_link="", fingerprint=[f"fp{i}" for i in range(len(ids))])
    led.record("alike", "skycore", links, "r1")
    failed = outcome(["x1", "x2"], status="failed").assign(pass_id="", issued_at=pd.NaT, last_error="boom")
    led.record("alike", "skycore", failed, "r1")
    got = led.rows("alike").set_index("customer_id")
    assert len(got) == len(ids) + 2
    issued = got.loc[ids]
    assert (issued["status"] == "issued").all() and issued["pass_link"].isna().all()
    assert issued["last_error"].isna().all() and issued["issued_at"].notna().all()
    assert issued.loc["id0007", "fingerprint"] == "fp7" and issued.loc["id1233", "pass_id"] == "Pid1233"
    assert (got.loc[["x1", "x2"], "last_error"] == "boom").all()
    assert got.loc[["x1", "x2"], "issued_at"].isna().all() and got.loc[["x1", "x2"], "pass_id"].isna().all()
    led.close()


def test_sqlite_batch_is_bound_without_the_ledger_write_lock(tmp_path: Path) -> None:
    # A bulk writer binds its rows into a temporary table while another process holds the ledger's
    # write lock; only the merge (under ``serialize``) waits for it.
    import contextlib
    import sqlite3

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    statements = led.record_statements("c", "skycore", outcome([f"id{i}" for i in range(1000)]), "r1")
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    blocker.execute("INSERT INTO passflow_runs (run_id, campaign, flow, started_at, status) "
                    "VALUES ('other', 'x', 'f', '2026-01-01', 'running')")
    seen: list[bool] = []

    @contextlib.contextmanager
    def merge_turn():  # noqa: ANN202
        seen.append(blocker.in_transaction)  # the batch is bound, the other writer still holds the lock
        blocker.execute("COMMIT")
        yield

    led.write(statements, serialize=merge_turn())
    assert seen == [True]
    assert len(led.rows("c")) == 1000
    blocker.close()
    led.close()


_CREATOR = """
import sys
from passflow.store.ledger import Ledger
from passflow.store.updates import UpdateStore
from passflow.store.events import CallbackStore
barrier_file = sys.argv[2]
import os, time
while not os.path.exists(barrier_file):  # start together: the race is the point
    time.sleep(0.005)
ledger = Ledger(sys.argv[1])
UpdateStore(ledger)
CallbackStore(sys.argv[1])
print("ok")
"""


def test_many_processes_create_the_tables_of_a_new_database_at_once(db_url: str, tmp_path) -> None:  # noqa: ANN001
    """A scheduled run, an inbox import and a callback server starting on one new database: every
    one of them opens it, none fails on another's half-created table (PostgreSQL's catalog race)."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CREATOR, db_url, str(go)], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    time.sleep(1.5)  # let every interpreter reach the barrier
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-2000:] for _, err in outs]
