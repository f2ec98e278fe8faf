"""The analysts' CSV inbox (Prefect-free): good, bad, still-growing and duplicate drops.

The issuance is the real engine (``run_issue``) on a real SQLite/PostgreSQL ledger; the flow that
wraps it in Prefect is exercised by tests/test_deployments_server.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from passflow.config import load_campaign
from passflow.demo import write_segment_csv
from passflow.inbox import Inbox
from passflow.run import run_issue
from tests.test_issue_skycore import make_campaign, read_csv


def issue(campaign_path: Path, csv_path: Path) -> Mapping[str, Any]:
    return run_issue(load_campaign(campaign_path, overrides={"source.csv": str(csv_path)})).summary()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Inbox, Path]:
    campaigns = tmp_path / "campaigns"
    make_campaign(campaigns)
    return Inbox(tmp_path / "inbox", campaigns, settle_seconds=0), tmp_path / "inbox"


def drop(inbox_dir: Path, name: str, rows: int = 300, *, ready: bool = False) -> Path:
    path = inbox_dir / name
    write_segment_csv(path, rows=rows)
    if ready:
        path.with_name(name + ".ready").touch()
    return path


def ledger_issued(campaigns: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{campaigns / 'state' / 'ledger.db'}")
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from passflow_ledger where status = 'issued'")).scalar_one()
    engine.dispose()
    return n


def test_good_file_is_processed_with_its_export(setup: tuple[Inbox, Path]) -> None:
    inbox, inbox_dir = setup
    drop(inbox_dir, "test-coupon--march list.csv")
    assert inbox.poll(issue) == []  # first sighting: not known to be complete yet
    [out] = inbox.poll(issue)
    assert out.status == "processed" and out.ok and out.campaign == "test-coupon"
    assert out.summary["issued_new"] == 293 and out.summary["rejected"] == 7
    assert not list(inbox_dir.glob("*.csv"))
    moved = Path(out.moved_to)
    assert moved.parent == inbox_dir / "processed" and moved.name.endswith("-test-coupon--march list.csv")
    report = Path(out.report).read_text()
    assert Path(out.report).parent == moved.parent and "processed" in report and "| issued: new | 293 |" in report
    [export] = [f for f in out.summary["export_files"] if "moengage" in f]
    assert Path(export).name in report and len(read_csv(export)) == 293
    assert out.summary["rejects_file"] in report


def test_bad_files_are_rejected_with_reasons(setup: tuple[Inbox, Path], tmp_path: Path) -> None:
    inbox, inbox_dir = setup
    drop(inbox_dir, "no-campaign-named.csv", ready=True)
    drop(inbox_dir, "unknown-campaign--x.csv", ready=True)
    (inbox_dir / "test-coupon--no-ids.csv").write_text("name,email\nAnn,ann@example.com\n")
    (inbox_dir / "test-coupon--no-ids.csv.ready").touch()
    bad_rows = "customer_id,email,phone,first_name\n" + "".join(f"C{i},not-an-email,,Ann\n" for i in range(20))
    (inbox_dir / "test-coupon--bad-emails.csv").write_text(bad_rows)
    (inbox_dir / "test-coupon--bad-emails.csv.ready").touch()
    outcomes = {o.file: o for o in inbox.poll(issue)}
    assert len(outcomes) == 4 and all(o.status == "rejected" for o in outcomes.values())
    assert "must start with a campaign name and '--'" in outcomes["no-campaign-named.csv"].reasons[0]
    assert "no campaign named 'unknown-campaign'" in outcomes["unknown-campaign--x.csv"].reasons[0]
    assert "test-coupon" in outcomes["unknown-campaign--x.csv"].reasons[0]  # lists what exists
    assert "customer_id" in outcomes["test-coupon--no-ids.csv"].reasons[0]
    gate = outcomes["test-coupon--bad-emails.csv"].reasons[0]
    assert "20 of 20 rows rejected" in gate and "nothing was issued" in gate
    for o in outcomes.values():
        assert Path(o.moved_to).parent == inbox_dir / "rejected" and Path(o.moved_to).exists()
        text = Path(o.report).read_text()
        assert "REJECTED" in text and o.reasons[0].splitlines()[0] in text and "Traceback" not in text
    assert not list(inbox_dir.glob("*.csv*"))
    written = [f.name for f in (tmp_path / "campaigns" / "exports").iterdir()]
    assert len(written) == 1 and "-rejects-" in written[0]  # the gate's rejects file; no attribute export
    assert ledger_issued(tmp_path / "campaigns") == 0


def test_a_growing_file_is_left_alone_until_complete(setup: tuple[Inbox, Path]) -> None:
    inbox, inbox_dir = setup
    full = inbox_dir.parent / "full.csv"
    write_segment_csv(full, rows=300)
    data = full.read_bytes()
    target = inbox_dir / "test-coupon--slow-copy.csv"
    target.write_bytes(data[: len(data) // 3])  # a copy in progress
    assert inbox.poll(issue) == []
    with target.open("ab") as f:
        f.write(data[len(data) // 3 : 2 * len(data) // 3])
    assert inbox.poll(issue) == []  # it grew since the last poll: still being written
    with target.open("ab") as f:
        f.write(data[2 * len(data) // 3 :])
    assert inbox.poll(issue) == []
    [out] = inbox.poll(issue)  # unchanged since the previous poll: complete
    assert out.status == "processed" and out.summary["read"] == 300


def test_settle_time_holds_a_recently_touched_file(tmp_path: Path) -> None:
    campaigns = tmp_path / "campaigns"
    make_campaign(campaigns)
    inbox = Inbox(tmp_path / "inbox", campaigns, settle_seconds=60)
    path = drop(tmp_path / "inbox", "test-coupon--x.csv")
    assert inbox.ready_files() == [] and inbox.ready_files() == []  # stable, but touched just now
    old = time.time() - 120
    os.utime(path, (old, old))
    assert inbox.ready_files() == []  # mtime changed since the last poll
    assert inbox.ready_files() == [path]


def test_duplicate_drop_issues_nothing_new(tmp_path: Path, db_url: str) -> None:
    campaigns = tmp_path / "campaigns"
    make_campaign(campaigns, ledger=db_url)
    inbox_dir = tmp_path / "inbox"
    inbox = Inbox(inbox_dir, campaigns, settle_seconds=0)
    first = drop(inbox_dir, "test-coupon--a.csv", ready=True)
    content = first.read_bytes()
    [one] = inbox.poll(issue)
    assert one.status == "processed" and one.summary["issued_new"] == 293
    exports_before = sorted((campaigns / "exports").iterdir())

    (inbox_dir / "test-coupon--a-again.csv").write_bytes(content)  # the same file, dropped again
    (inbox_dir / "test-coupon--a-again.csv.ready").touch()
    [dup] = inbox.poll(issue)
    assert dup.status == "duplicate" and dup.summary is None
    assert "same content as test-coupon--a.csv" in dup.reasons[0] and "nothing was issued" in dup.reasons[0]
    assert Path(dup.moved_to).parent == inbox_dir / "rejected"
    assert sorted((campaigns / "exports").iterdir()) == exports_before  # no run, no new file

    (inbox_dir / "test-coupon--a-resaved.csv").write_bytes(content + b"\r\n")  # other bytes, same customers
    (inbox_dir / "test-coupon--a-resaved.csv.ready").touch()
    [again] = inbox.poll(issue)
    assert again.status == "processed"
    assert again.summary["issued_new"] == 0 and again.summary["skipped_unchanged"] == 293
    engine = sa.create_engine(load_campaign(campaigns / "campaign.toml").ledger.url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select status, count(*) from passflow_ledger group by status")).all()
        files = conn.execute(sa.text("select count(*) from passflow_inbox_files")).scalar_one()
    engine.dispose()
    assert dict(rows) == {"issued": 293} and files == 2


def _open_ledger_at(url: str, start_at: float) -> str:
    from passflow.store.ledger import Ledger

    time.sleep(max(0.0, start_at - time.time()))
    Ledger(url).close()
    return "ok"


def test_processes_creating_a_new_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    """An inbox import and a scheduled run may open a campaign's brand-new SQLite ledger together."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        start_at = time.time() + 1.0
        results = pool.starmap(_open_ledger_at, [(url, start_at)] * 4)
    assert results == ["ok"] * 4


def test_duplicate_passmachine_drop_creates_no_pass_at_the_vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vendor's own counters: a re-dropped file (same or re-saved) creates no pass."""
    from passflow.sandbox.runner import start_sandbox_thread
    from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN
    from tests.test_issue_passmachine import make

    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    with start_sandbox_thread() as sandbox:
        campaigns = tmp_path / "campaigns"
        campaigns.mkdir()
        make(campaigns, sandbox, rows=120)
        name = load_campaign(campaigns / "campaign.toml").name
        inbox = Inbox(tmp_path / "inbox", campaigns, settle_seconds=0)
        first = drop(tmp_path / "inbox", f"{name}--list.csv", rows=120, ready=True)
        content = first.read_bytes()
        [one] = inbox.poll(issue)
        created = sandbox.admin.stats()["passes_created"]
        assert one.status == "processed" and created == one.summary["issued_new"] > 100
        for suffix, extra in (("again", b""), ("resaved", b"\r\n")):
            (tmp_path / "inbox" / f"{name}--{suffix}.csv").write_bytes(content + extra)
            (tmp_path / "inbox" / f"{name}--{suffix}.csv.ready").touch()
        outcomes = {o.file.split("--")[1]: o for o in inbox.poll(issue)}
        assert outcomes["again.csv"].status == "duplicate"
        assert outcomes["resaved.csv"].status == "processed" and outcomes["resaved.csv"].summary["issued_new"] == 0
        stats = sandbox.admin.stats(per_customer=False)
        assert stats["passes_created"] == created and stats["duplicates"] == 0
