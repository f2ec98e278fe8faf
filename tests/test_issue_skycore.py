"""End to end (without Prefect): a Skycore campaign from CSV and SQL to verified exports, reruns,
changed rows, the reject-rate gate, and failures that leave no partial export."""

from __future__ import annotations

import csv
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from passflow.config import load_campaign
from passflow.demo import build_crm_db, write_segment_csv
from passflow.errors import ConfigError, RejectRateExceeded
from passflow.providers.skycore.links import LinkRecipe, parse_link, verify_link
from passflow.run import IssueRun, run_issue
from passflow.store.ledger import Ledger

CAMPAIGN = """
[campaign]
name = "test-coupon"
provider = "skycore"
[source]
{source}
chunk_size = {chunk}
[validation]
require_email = true
max_reject_rate = {max_reject}
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
{salt}
[skycore.params]
user-email = "{{{{ customer.email }}}}"
user-phone = "{{{{ customer.phone|default('MOE_NOT_SEND') }}}}"
pass-id = "T{{{{ customer.customer_id }}}}"
message4 = "Hi {{{{ customer.first_name|default('there') }}}} & welcome: 10% off"
[export]
directory = "exports"
formats = ["moengage", "bloomreach"]
[ledger]
url = "{ledger}"
"""


def make_campaign(
    tmp_path: Path,
    *,
    source: str | None = None,
    chunk: int = 50,
    max_reject: float = 0.2,
    salt: str = "",
    ledger: str | None = None,
) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    if source is None:
        write_segment_csv(tmp_path / "segment.csv", rows=300)
        source = 'csv = "segment.csv"'
    p = tmp_path / "campaign.toml"
    p.write_text(
        CAMPAIGN.format(
            source=source,
            chunk=chunk,
            max_reject=max_reject,
            salt=salt,
            ledger=ledger or "sqlite:///state/ledger.db",
        ),
        encoding="utf-8",
    )
    return p


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_segment_to_verified_exports(tmp_path: Path, db_url: str) -> None:
    campaign = load_campaign(make_campaign(tmp_path, ledger=db_url))
    result = run_issue(campaign)
    c = result.counts
    assert c.read == 300
    # the bundled segment's planted bad rows: bad/missing emails, bad phone, empty/duplicate id, bad pass-id
    assert result.reject_reasons == {
        "invalid_email": 2,
        "missing_email": 1,
        "invalid_phone": 1,
        "missing_customer_id": 1,
        "duplicate_customer_id": 1,
        "invalid_pass_id": 1,
    }
    assert c.rejected == 7 and c.issued_new == 293 and c.exported == 293
    moe = next(f for f in result.export_files if "moengage" in f)
    rows = read_csv(moe)
    assert list(rows[0]) == ["ID", "skycore_pass_id", "skycore_pass_link", "skycore_pass_gendate"]
    assert len(rows) == 293 and len({r["ID"] for r in rows}) == 293
    assert all(verify_link(r["skycore_pass_link"]) for r in rows)
    # values survive encoding: the '+' in emails and '&' in the message come back from the link
    plus = next(r for r in rows if "%2Bwallet" in r["skycore_pass_link"])
    params = dict(parse_link(plus["skycore_pass_link"]).params)
    assert "+" in params["user-email"] and params["message4"].endswith("& welcome: 10% off")
    assert params["pass-id"] == plus["skycore_pass_id"] == "T" + plus["ID"]
    bloom = read_csv(next(f for f in result.export_files if "bloomreach" in f))
    assert list(bloom[0])[:3] == ["registered", "email", "phone"]
    assert all(r["phone"] == "" or r["phone"].startswith("+") for r in bloom)  # E.164, not neutralised
    rejects = read_csv(result.rejects_file)
    assert {r["reason_code"] for r in rejects} == set(result.reject_reasons)
    assert {r["row"] for r in rejects if r["reason_code"] == "duplicate_customer_id"} == {"16"}
    ledger = Ledger(campaign.ledger.url)
    assert ledger.status_counts("test-coupon") == {"issued": 293}


def test_rerun_issues_nothing_and_changed_rows_reissue(tmp_path: Path) -> None:
    path = make_campaign(tmp_path)
    first = run_issue(load_campaign(path))
    assert first.counts.issued_new == 293
    second = run_issue(load_campaign(path))
    assert second.counts.issued_new == 0 and second.counts.reissued_changed == 0
    assert second.counts.skipped_unchanged == 293 and second.counts.exported == 293
    # the second export still carries every customer's link, with the original generation date
    rows1 = {r["ID"]: r for r in read_csv(next(f for f in first.export_files if "moengage" in f))}
    rows2 = {r["ID"]: r for r in read_csv(next(f for f in second.export_files if "moengage" in f))}
    assert rows1 == rows2
    # ...rebuilt, not read back: the ledger keeps pass ids and checksums (fingerprints), not links
    ledger = Ledger(load_campaign(path).ledger.url)
    kept = ledger.rows("test-coupon")
    ledger.close()
    assert len(kept) == 293 and kept["pass_link"].isna().all()
    assert kept["pass_id"].notna().all() and kept["fingerprint"].str.len().eq(64).all()

    seg = tmp_path / "segment.csv"
    text = seg.read_text(encoding="utf-8-sig").replace("C000005,", "C000005X,", 1)  # not a change: new id
    lines = text.splitlines()
    lines[2] = lines[2].replace("@example.com", "@example.org")  # customer C000002 changed email
    seg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    third = run_issue(load_campaign(path))
    assert third.counts.reissued_changed == 1
    assert third.counts.issued_new == 1  # C000005X
    assert third.counts.skipped_unchanged == 291


def test_sql_segment_sqlite(tmp_path: Path) -> None:
    build_crm_db(tmp_path / "crm.db", rows=120)
    src = 'sql_url = "sqlite:///crm.db"\nquery = "select customer_id, first_name, email, phone from customers where opted_in = 1"'
    path = make_campaign(tmp_path, source=src, chunk=25)
    # write the attributes back into the CRM database too
    path.write_text(path.read_text() + '\n[export.db]\nurl = "sqlite:///crm.db"\ntable = "pass_attributes"\n')
    result = run_issue(load_campaign(path))
    assert result.counts.read == 96 and result.counts.issued_new == 96 and result.counts.rejected == 0
    with sqlite3.connect(tmp_path / "crm.db") as con:
        rows = con.execute("select customer_id, skycore_pass_link from pass_attributes").fetchall()
    assert len(rows) == 96 and all(verify_link(link) for _, link in rows)


@pytest.mark.postgres
def test_sql_segment_postgres(tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table customers (customer_id text, first_name text, email text, phone text)"))
        conn.execute(
            sa.text("insert into customers values (:a, :b, :c, :d)"),
            [{"a": f"P{i}", "b": "Ann" if i % 2 else None, "c": f"p{i}@example.com", "d": None} for i in range(250)],
        )
    engine.dispose()
    src = f'sql_url = "{pg_url}"\ntable = "customers"'
    result = run_issue(load_campaign(make_campaign(tmp_path, source=src, chunk=100, ledger=pg_url)))
    assert result.counts.issued_new == 250
    rows = read_csv(next(f for f in result.export_files if "moengage" in f))
    assert all(verify_link(r["skycore_pass_link"]) for r in rows)
    assert "Hi%20there" in rows[0]["skycore_pass_link"]  # NULL first name → default('there')


def test_salted_campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_SALT", "pepper-and-salt")
    path = make_campaign(tmp_path, salt='salt = { env = "PF_SALT" }\nhex_case = "upper"')
    result = run_issue(load_campaign(path))
    rows = read_csv(next(f for f in result.export_files if "moengage" in f))
    recipe = LinkRecipe(hex_case="upper")
    assert all(verify_link(r["skycore_pass_link"], salt="pepper-and-salt", recipe=recipe) for r in rows)
    assert not verify_link(rows[0]["skycore_pass_link"], recipe=recipe)
    # the salt appears in no output
    for f in [*result.export_files, result.rejects_file]:
        assert "pepper-and-salt" not in Path(f).read_text(encoding="utf-8")
    monkeypatch.delenv("PF_SALT")
    with pytest.raises(ConfigError, match="PF_SALT is not set"):
        run_issue(load_campaign(path))


def test_reject_rate_gate_stops_before_issuing(tmp_path: Path) -> None:
    path = make_campaign(tmp_path, max_reject=0.01)
    campaign = load_campaign(path)
    with pytest.raises(RejectRateExceeded, match="7 of 300 rows rejected") as exc:
        run_issue(campaign)
    assert "nothing was issued" in str(exc.value)
    exports = tmp_path / "exports"
    files = sorted(p.name for p in exports.iterdir())
    assert len(files) == 1 and "rejects" in files[0]  # the analyst gets the reasons, nothing else
    assert Ledger(campaign.ledger.url).status_counts("test-coupon") == {}


def test_failure_mid_run_leaves_no_partial_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    campaign = load_campaign(make_campaign(tmp_path, chunk=50))
    calls = {"n": 0}
    original = IssueRun.deliver_batch

    def flaky(self: IssueRun, index: int) -> dict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return original(self, index)

    monkeypatch.setattr(IssueRun, "deliver_batch", flaky)
    with pytest.raises(OSError, match="disk full"):
        run_issue(campaign)
    leftovers = [p.name for p in (tmp_path / "exports").iterdir() if "rejects" not in p.name]
    assert leftovers == []
    monkeypatch.setattr(IssueRun, "deliver_batch", original)
    recorded = Ledger(campaign.ledger.url).status_counts("test-coupon")["issued"]
    assert 0 < recorded < 293  # the first two batches
    # the rerun resumes: what was recorded is skipped, the rest issued, everything exported once
    result = run_issue(campaign)
    assert result.counts.skipped_unchanged == recorded
    assert result.counts.issued_new == 293 - recorded and result.counts.exported == 293


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    campaign = load_campaign(make_campaign(tmp_path))
    result = run_issue(campaign, dry_run=True)
    assert result.counts.issued_new == 293 and result.export_files == []
    assert result.preview is not None and len(result.preview) == 5
    assert verify_link(result.preview["pass_link"].iloc[0])
    assert not (tmp_path / "exports").exists() and not (tmp_path / "state").exists()


def test_missing_column_is_a_config_error_before_anything_is_written(tmp_path: Path) -> None:
    seg = tmp_path / "segment.csv"
    seg.write_text("id,email\n1,a@b.cz\n", encoding="utf-8")
    campaign = load_campaign(make_campaign(tmp_path, source='csv = "segment.csv"'))
    with pytest.raises(ConfigError, match="no column 'customer_id'"):
        run_issue(campaign)
    assert not (tmp_path / "exports").exists()


def test_secrets_and_pii_not_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PF_SALT", "s3cret-salt-value")
    caplog.set_level(logging.DEBUG)
    run_issue(load_campaign(make_campaign(tmp_path, salt='salt = { env = "PF_SALT" }')))
    text = caplog.text
    assert "s3cret-salt-value" not in text
    assert "@example.com" not in text


def test_segment_copied_to_other_directory_still_runs(tmp_path: Path) -> None:
    # relative paths resolve against the campaign file, whatever the working directory
    path = make_campaign(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(path, other / "c.toml")
    shutil.copy(tmp_path / "segment.csv", other / "segment.csv")
    result = run_issue(load_campaign(other / "c.toml"))
    assert all(str(other) in f for f in result.export_files)
    assert sqlite3.connect(other / "state" / "ledger.db").execute("select count(*) from passflow_ledger").fetchone()[0] == 293


def test_pass_ids_around_the_customer_id_skip_their_own_uniqueness_check(tmp_path: Path) -> None:
    """"T{{ customer.customer_id }}" is unique once customer ids are (staging rejects repeats), so the
    run does not hash and check every pass id a second time; a pass id from another column is checked."""
    from datetime import UTC, datetime

    from passflow.providers.skycore.issuer import SkycoreLinkIssuer

    path = make_campaign(tmp_path)
    around = SkycoreLinkIssuer(load_campaign(path), datetime.now(UTC))
    assert not around.claims_pass_ids
    path.write_text(path.read_text(encoding="utf-8").replace("T{{ customer.customer_id }}", "T{{ customer.email }}"))
    other = SkycoreLinkIssuer(load_campaign(path), datetime.now(UTC))
    assert other.claims_pass_ids
    # and the run with the segment's repeated customer id still exports one pass id per customer
    result = run_issue(load_campaign(make_campaign(tmp_path / "run")))
    ids = [r["skycore_pass_id"] for r in read_csv(next(f for f in result.export_files if "moengage" in f))]
    assert result.reject_reasons["duplicate_customer_id"] == 1 and len(ids) == len(set(ids)) == 293
