"""Big runs stage in worker processes and record the ledger in the background: same results as a
sequential run, byte for byte; plus the shared key set, the link encoder's fast paths, and the
regex class that replaced Python's ``\\s``."""

from __future__ import annotations

import csv
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from passflow.config import load_campaign
from passflow.providers.skycore.links import build_link, build_links
from passflow.run import IssueRun, staging
from passflow.seen import SeenKeys, hash_keys
from passflow.validate import _PHONE_PUNCT_RE2

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CAMPAIGN = """
[campaign]
name = "stage-test"
provider = "skycore"
[source]
csv = "segment.csv"
chunk_size = 150
[validation]
max_reject_rate = 0.9
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
salt = {{ env = "STAGE_TEST_SALT" }}
[skycore.params]
user-email = "{{{{ customer.email }}}}"
user-phone = "{{{{ customer.phone }}}}"
pass-id = "P{{{{ customer.code }}}}"
message4 = "Hi {{{{ customer.first_name|default('there') }}}}, {{{{ 100 // (customer.points|int) }}}} points"
[export]
directory = "exports"
formats = ["moengage", "bloomreach"]
[ledger]
url = "sqlite:///ledger.db"
"""


def write_segment(path: Path, rows: int = 1500) -> None:
    """Every kind of reject, duplicates within and across chunks, blank and ragged lines."""
    rng = random.Random(5)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "first_name", "email", "phone", "code", "points"])
        for i in range(rows):
            r = rng.random()
            cid = f"C{i:05d}"
            if r < 0.04:
                cid = f"C{rng.randint(0, i):05d}"  # duplicate id, maybe of a row rejected later on
            elif r < 0.05:
                cid = ""
            email = rng.choice([f"u{i}@example.com", f"u{i}+x@example.com", "nope", f"U{i}@Example.COM", ""])
            phone = rng.choice(["+420602345678", "(555) 123-4567", "12", "00420 602 345 678", ""])
            code = rng.choice([f"K{i % 1200}", f"K{i % 1200}", f"K-{i}"])  # duplicate and invalid pass ids
            points = rng.choice(["0", "5", "10"])  # 0: a template error
            first = rng.choice(["Anna", "Zoë", "José", "", "Mary, Jr.", '"Q"', "=cmd"])
            w.writerow([cid, first, email, phone, code, points])
            if i % 97 == 0:
                f.write("\n")
            if i % 301 == 0:
                f.write("a,b,c,d,e,f,g,h\n")


def run_campaign(directory: Path, *, pooled: bool) -> tuple[dict, IssueRun]:
    directory.mkdir()
    write_segment(directory / "segment.csv")
    (directory / "campaign.toml").write_text(CAMPAIGN.format(), encoding="utf-8")
    run = IssueRun(load_campaign(directory / "campaign.toml"), run_id="0123456789abcdef" * 2, now=NOW)
    try:
        if run._pool is not None:
            run._pool._up.wait(60)
        if pooled:
            assert run._pool is not None, "the test lowers POOL_MIN_CSV_BYTES"
            assert run._pool.ready, run._pool.failed
        for chunk in run.source_chunks():
            run.stage_chunk(chunk)
        run.end_staging()
        assert run._pooling is pooled
        assert (run._ledger_writer is not None) is pooled
        for i in range(run.batch_count):
            run.deliver_batch(i)
        result = run.commit()
    except BaseException as exc:
        run.abort(exc)
        raise
    summary = {k: v for k, v in result.summary().items() if not k.endswith("_s")}
    for key in ("export_files", "rejects_file", "failures_file", "run_id"):
        summary.pop(key)
    return summary, run


def outputs(directory: Path) -> dict[str, bytes]:
    out = {}
    for p in (directory / "exports").glob("*.csv"):
        kind = next(k for k in ("rejects", "moengage", "bloomreach") if f"-{k}-" in p.name)
        out[kind] = p.read_bytes()
    return out


def ledger_rows(directory: Path) -> list[tuple]:
    with sqlite3.connect(directory / "ledger.db") as conn:
        return conn.execute(
            "select campaign, customer_id, provider, status, pass_id, pass_link, fingerprint, attempts, "
            "last_error, run_id, issued_at from passflow_ledger order by customer_id"
        ).fetchall()


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE_TEST_SALT", "s3cr3t-pepper")


def test_pooled_run_equals_sequential_run(
    tmp_path: Path, salt: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequential, _ = run_campaign(tmp_path / "seq", pooled=False)
    monkeypatch.setattr(staging, "POOL_MIN_CSV_BYTES", 0)
    pooled, _ = run_campaign(tmp_path / "pool", pooled=True)
    assert pooled == sequential
    reasons = sequential["reject_reasons"]
    for code in (
        "duplicate_customer_id",
        "duplicate_pass_id",
        "invalid_pass_id",
        "template_error",
        "malformed_row",
    ):
        assert reasons.get(code), f"the segment should produce {code} rejects: {reasons}"
    assert outputs(tmp_path / "pool") == outputs(tmp_path / "seq")
    assert set(outputs(tmp_path / "seq")) == {"rejects", "moengage", "bloomreach"}
    assert ledger_rows(tmp_path / "pool") == ledger_rows(tmp_path / "seq")


def test_background_ledger_failure_leaves_no_export(
    tmp_path: Path, salt: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging, "POOL_MIN_CSV_BYTES", 0)
    d = tmp_path / "run"
    d.mkdir()
    write_segment(d / "segment.csv")
    (d / "campaign.toml").write_text(CAMPAIGN.format(), encoding="utf-8")
    run = IssueRun(load_campaign(d / "campaign.toml"))
    assert run._pool is not None
    run._pool._up.wait(60)
    with pytest.raises(sa.exc.DBAPIError, match="ledger is read-only today"):
        try:
            for chunk in run.source_chunks():
                run.stage_chunk(chunk)
            run.end_staging()
            assert run._ledger_writer is not None
            with sqlite3.connect(d / "ledger.db") as conn:  # the worker's writes will fail
                conn.execute(
                    "create trigger no_writes before insert on passflow_ledger "
                    "begin select raise(abort, 'ledger is read-only today'); end"
                )
            for i in range(run.batch_count):
                run.deliver_batch(i)
            run.commit()
        except BaseException as exc:
            run.abort(exc)
            raise
    assert not [p for p in (d / "exports").iterdir() if "-moengage-" in p.name or "-bloomreach-" in p.name]
    assert ledger_rows(d) == []


def test_workers_that_cannot_start_leave_the_run_to_stage_alone(
    tmp_path: Path, salt: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sequential, _ = run_campaign(tmp_path / "seq", pooled=False)

    def no_workers(pool: staging.StagePool) -> None:
        pool.failed = OSError("no processes here")
        pool._up.set()

    monkeypatch.setattr(staging, "POOL_MIN_CSV_BYTES", 0)
    monkeypatch.setattr(staging.StagePool, "_warm_up", no_workers)
    alone, run = run_campaign(tmp_path / "alone", pooled=False)
    assert alone == sequential and run._pool is None
    assert outputs(tmp_path / "alone") == outputs(tmp_path / "seq")
    assert "staging without worker processes: no processes here" in caplog.text


def test_small_segments_do_not_start_workers(tmp_path: Path, salt: None) -> None:
    _, run = run_campaign(tmp_path / "small", pooled=False)
    assert run._pool is None


# -- the shared key set ---------------------------------------------------------------------------


def reference_first_rows(chunks: list[tuple[list[str], list[int]]]) -> list[list[int]]:
    first: dict[str, int] = {}
    out = []
    for keys, rows in chunks:
        got = []
        for k, r in zip(keys, rows, strict=True):
            got.append(first.get(k, -1))
            first.setdefault(k, r)
        out.append(got)
    return out


def test_seen_keys_first_rows_match_a_dict() -> None:
    rng = random.Random(3)
    for _ in range(50):
        chunks, row = [], 2
        for _ in range(rng.randint(1, 8)):
            n = rng.randint(0, 200)
            keys = [f"k{rng.randint(0, 150)}" for _ in range(n)]
            rows = list(range(row, row + n))
            row += n + rng.randint(0, 3)
            chunks.append((keys, rows))
        seen = SeenKeys()
        got = [seen.check_and_add(pd.Series(k, dtype="str"), pd.Series(r)).tolist() for k, r in chunks]
        assert got == reference_first_rows(chunks)


def test_seen_keys_as_a_set() -> None:
    seen = SeenKeys()
    values = hash_keys(pd.Series([f"x{i}" for i in range(3000)], dtype="str"))
    for start in range(0, 3000, 250):
        assert not seen.contains(values[start : start + 250]).any()
        seen.add(values[start : start + 250])
    assert seen.contains(values).all() and len(seen) == 3000
    with pytest.raises(ValueError, match="not both"):
        seen.check_and_add_hashes(values[:1], np.array([1]))


@pytest.mark.parametrize("spill_keys", [1, 7, 60, 400])
def test_seen_keys_spilled_to_disk_answer_like_in_memory(spill_keys: int) -> None:
    """Big sets move their keys to disk (Bloom filter + pages): same first rows, same membership."""
    rng = random.Random(spill_keys)
    for _ in range(10):
        memory, disk, row = SeenKeys(), SeenKeys(spill_keys=spill_keys), 2
        for _ in range(rng.randint(1, 25)):
            n = rng.randint(0, 250)
            keys = pd.Series([f"k{rng.randint(0, 1500)}" for _ in range(n)], dtype="str")
            rows = pd.Series(range(row, row + n))
            row += n
            assert disk.check_and_add(keys, rows).tolist() == memory.check_and_add(keys, rows).tolist()
        assert len(disk) == len(memory)
        assert disk._spilled or len(memory) <= spill_keys
    as_set, ref = SeenKeys(spill_keys=spill_keys), SeenKeys()
    for _ in range(15):
        values = hash_keys(
            pd.Series([f"z{rng.randint(0, 2000)}" for _ in range(rng.randint(0, 200))], dtype="str")
        )
        assert (as_set.contains(values) == ref.contains(values)).all()
        new = np.unique(values[~ref.contains(values)])
        as_set.add(new)
        ref.add(new)
    with pytest.raises(ValueError, match="not both"):
        as_set.check_and_add_hashes(hash_keys(pd.Series(["x"], dtype="str")), np.array([1]))


# -- link encoding and validation fast paths -------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        ["Hi Zoë, 10% off & more"] * 40 + ["Hi José, 10% off & more"] * 40,  # few distinct values
        ["".join(chr(c) for c in range(0x20, 0x7F)) + f"-{i}" for i in range(50)],  # many reserved bytes
        [f"ĉĝĥĵŝŭ ľščťžýáíé ÄÖÜß ЖЩЮ 漢字 😀 {i}" for i in range(50)],  # many distinct non-ASCII bytes
        [f"user{i}+tag@example.com" for i in range(50)],  # one reserved byte
    ],
)
def test_vectorised_encoding_equals_quote(values: list[str]) -> None:
    base = "https://d2c.skycore.com/wallet/gc/abc123"
    links = build_links(base, [("message4", pd.Series(values, dtype="str"))], salt="pepper").links
    assert links.tolist() == [build_link(base, [("message4", v)], salt="pepper") for v in values]
    assert all(f"message4={quote(v, safe='@:/')}&" in link for v, link in zip(values, links, strict=True))


def test_phone_punctuation_class_is_what_phonenumbers_skips() -> None:
    # the fast path removes only separators phonenumbers' parser also accepts, so it cannot accept a
    # number the library calls NOT_A_NUMBER (a tab, a line separator, ...)
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    every = "".join(chr(c) for c in range(0x3000 + 1))
    kept = pc.replace_substring_regex(pa.array([every]), _PHONE_PUNCT_RE2, "")[0].as_py()
    removed = set(every) - set(kept)
    assert removed == set(" \xa0().-/")
    assert all(ch in _VALID_PUNCTUATION for ch in removed)


def test_sharded_pooled_run_refreshes_its_own_lock(
    tmp_path: Path, salt: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a shard whose batches the pool's workers record must keep *its* lock row fresh
    (the workers once refreshed the unsharded key, so another host could take a running shard over)."""
    monkeypatch.setattr(staging, "POOL_MIN_CSV_BYTES", 0)
    directory = tmp_path / "shard"
    directory.mkdir()
    write_segment(directory / "segment.csv", rows=3000)
    (directory / "campaign.toml").write_text(CAMPAIGN.format(), encoding="utf-8")
    run = IssueRun(load_campaign(directory / "campaign.toml"), now=NOW, shard=(1, 2))
    old = datetime(2000, 1, 1)
    try:
        assert run._pool is not None and run._pool._up.wait(60) and run._pool.ready, run._pool.failed
        for chunk in run.source_chunks():
            run.stage_chunk(chunk)
        run.end_staging()
        assert run._ledger_writer is not None, "batches are recorded by the pool's workers"
        ledger = run.journal.ledger
        key = run.journal.lock.key
        assert key == "stage-test/shard-1-of-2"
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("update passflow_locks set heartbeat_at = :t"), {"t": old})
        for i in range(run.batch_count):
            run.deliver_batch(i)
        run._wait_for_ledger()
        with ledger.engine.connect() as conn:
            rows = dict(conn.execute(sa.text("select campaign, heartbeat_at from passflow_locks")).all())
        assert list(rows) == [key]
        assert str(rows[key]) > "2026", f"the shard's lock was not refreshed: {rows}"
        run.commit()
    except BaseException as exc:
        run.abort(exc)
        raise
