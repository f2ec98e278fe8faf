"""The export-format registry and the CRM import limits: config validation, Braze, MoEngage S3
naming, Bloomreach split by bytes, the 512-character rule before anything is issued (sequential
and in staging workers), too-long API links as failed rows, and changes-only exports. Real files,
real SQLite ledgers, the provider sandbox over loopback."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from passflow.config import load_campaign
from passflow.demo import write_segment_csv
from passflow.errors import ConfigError, PassflowError
from passflow.exports import FORMATS, AttributeExport, get_format
from passflow.exports.formats import BloomreachSettings, MoEngageSettings
from passflow.exports.limits import fail_long_values, reject_long_values, value_limits
from passflow.providers.skycore.links import verify_link
from passflow.run import IssueRun, run_issue, staging
from passflow.sandbox.runner import SandboxHandle
from passflow.store.ledger import Ledger
from passflow.validate import ROW, Rejects

CAMPAIGN = """
[campaign]
name = "fmt-coupon"
provider = "skycore"
[source]
csv = "segment.csv"
chunk_size = {chunk}
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
user-email = "{{{{ customer.email }}}}"
pass-id = "T{{{{ customer.customer_id }}}}"
message4 = "{{{{ customer.message|default('hello') }}}}"
[export]
directory = "exports"
{export}
[ledger]
url = "{ledger}"
"""


def write_segment(path: Path, rows: int, long_rows: dict[int, int] | None = None) -> None:
    """``rows`` customers; ``long_rows``: row index -> length of its message (makes a long link)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "email", "phone", "message"])
        for i in range(rows):
            message = "x" * (long_rows or {}).get(i, 5)
            w.writerow([f"C{i:06d}", f"u{i}@example.com", "+420602345678", message])


def campaign_file(
    tmp_path: Path,
    export: str,
    *,
    rows: int = 40,
    chunk: int = 20,
    long_rows: dict | None = None,
    ledger: str = "sqlite:///state/ledger.db",
) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_segment(tmp_path / "segment.csv", rows, long_rows)
    p = tmp_path / "campaign.toml"
    p.write_text(CAMPAIGN.format(chunk=chunk, export=export, ledger=ledger), encoding="utf-8")
    return p


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ledger_ids(url: str, campaign: str = "fmt-coupon") -> set[str]:
    ledger = Ledger(url)
    try:
        return set(ledger.rows(campaign)["customer_id"])
    finally:
        ledger.close()


# --- the registry and the config -------------------------------------------------------------------


def test_registry_has_one_entry_per_crm_with_documented_limits() -> None:
    assert set(FORMATS) == {"moengage", "bloomreach", "braze"}
    assert (FORMATS["moengage"].id_column, FORMATS["moengage"].max_value_chars) == ("ID", 512)
    bloom = FORMATS["bloomreach"]
    assert (bloom.id_column, bloom.max_rows_per_file, bloom.max_bytes_per_file) == (
        "registered",
        1_000_000,
        10**9,
    )
    assert bloom.pass_through == ("email", "phone")
    braze = FORMATS["braze"]
    assert (braze.id_column, braze.max_bytes_per_file, braze.max_value_chars) == (
        "external_id",
        500 * 10**6,
        255,
    )
    with pytest.raises(
        ConfigError, match="unknown export format 'hubspot'; known formats: bloomreach, braze, moengage"
    ):
        get_format("hubspot")


def test_formats_validated_against_the_registry(tmp_path: Path) -> None:
    path = campaign_file(tmp_path, 'formats = ["moengage", "salesforce"]')
    with pytest.raises(ConfigError) as err:
        load_campaign(path)
    text = str(err.value)
    assert (
        "[export.formats]" in text
        and "'salesforce'" in text
        and "known formats: bloomreach, braze, moengage" in text
    )
    path.write_text(
        CAMPAIGN.format(chunk=20, ledger="sqlite:///l.db", export='formats = ["braze", "braze"]'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="listed more than once: braze"):
        load_campaign(path)


def test_per_format_sections_and_their_limits(tmp_path: Path) -> None:
    path = campaign_file(
        tmp_path,
        'formats = ["moengage", "bloomreach"]\n[export.moengage]\nfile_naming = "s3_import"\n'
        '[export.bloomreach]\nid_column = "customer_key"\nmax_bytes_per_file = 5000',
    )
    exp = load_campaign(path).export
    assert exp.format_settings("moengage") == MoEngageSettings(file_naming="s3_import")
    assert exp.format_settings("bloomreach") == BloomreachSettings(
        id_column="customer_key", max_bytes_per_file=5000
    )
    # a limit may be lowered, never raised past the CRM's documented one
    for section, key in (("bloomreach", "max_rows_per_file = 2000000"), ("braze", "max_value_chars = 300")):
        path.write_text(
            CAMPAIGN.format(chunk=20, ledger="sqlite:///l.db", export=f"[export.{section}]\n{key}"),
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match=rf"\[export\.{section}\.{key.split()[0]}\]"):
            load_campaign(path)
    path.write_text(
        CAMPAIGN.format(chunk=20, ledger="sqlite:///l.db", export='[export.moengage]\nfile_naming = "sftp"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"\[export\.moengage\.file_naming\]"):
        load_campaign(path)
    path.write_text(
        CAMPAIGN.format(chunk=20, ledger="sqlite:///l.db", export="[export.bloomreach]\nid_colum = 'x'"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"\[export\.bloomreach\.id_colum\] unknown key"):
        load_campaign(path)


def test_old_bloomreach_id_column_key_still_works(tmp_path: Path) -> None:
    path = campaign_file(tmp_path, 'bloomreach_id_column = "crm_id"')
    campaign = load_campaign(path)
    assert campaign.export.format_settings("bloomreach").id_column == "crm_id"
    result = run_issue(campaign)
    bloom = next(f for f in result.export_files if "-bloomreach-" in f)
    assert list(read_csv(bloom)[0])[:3] == ["crm_id", "email", "phone"]
    path.write_text(
        CAMPAIGN.format(
            chunk=20,
            ledger="sqlite:///l.db",
            export='bloomreach_id_column = "a"\n[export.bloomreach]\nid_column = "b"',
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="disagree"):
        load_campaign(path)


# --- formats end to end ------------------------------------------------------------------------------


def test_braze_export_is_one_registry_entry(tmp_path: Path) -> None:
    result = run_issue(load_campaign(campaign_file(tmp_path, 'formats = ["braze"]')))
    assert len(result.export_files) == 1 and "-braze-" in Path(result.export_files[0]).name
    rows = read_csv(result.export_files[0])
    # external_id, then the pass attributes only: email/phone would overwrite Braze profiles
    assert list(rows[0]) == ["external_id", "skycore_pass_id", "skycore_pass_link", "skycore_pass_gendate"]
    assert len(rows) == 40 and all(verify_link(r["skycore_pass_link"]) for r in rows)
    assert all(r["skycore_pass_gendate"].endswith("Z") and "T" in r["skycore_pass_gendate"] for r in rows)


def test_moengage_s3_import_naming(tmp_path: Path) -> None:
    path = campaign_file(tmp_path, 'formats = ["moengage"]\n[export.moengage]\nfile_naming = "s3_import"')
    result = run_issue(load_campaign(path))
    (name,) = [Path(f).name for f in result.export_files]
    assert name.startswith("registered_user_data_fmt-coupon-skycore-") and name.endswith(".csv")
    assert list(read_csv(result.export_files[0])[0])[0] == "ID"


def test_bloomreach_export_split_by_bytes(tmp_path: Path) -> None:
    path = campaign_file(
        tmp_path,
        'formats = ["bloomreach"]\n[export.bloomreach]\nmax_bytes_per_file = 4096',
        rows=200,
        chunk=70,
    )
    result = run_issue(load_campaign(path))
    parts = sorted(result.export_files)
    assert len(parts) > 3 and all("-part00" in p for p in parts)
    sizes = [Path(p).stat().st_size for p in parts]
    assert max(sizes) <= 4096 and min(sizes[:-1]) > 4096 - 300  # full parts, a row short of the limit at most
    rows = [r for p in parts for r in read_csv(p)]  # every part has its header
    assert [r["registered"] for r in rows] == [f"C{i:06d}" for i in range(200)]


def test_writer_refuses_a_row_bigger_than_the_byte_limit(tmp_path: Path) -> None:
    exp = AttributeExport(
        kind="bloomreach",
        directory=tmp_path,
        campaign="c",
        provider="skycore",
        run_id="r" * 16,
        max_bytes_per_file=1024,
    )
    frame = pd.DataFrame(
        {
            "customer_id": ["a"],
            "pass_id": ["p"],
            "pass_link": ["x" * 2000],
            "pass_gendate": ["2026-01-01T00:00:00Z"],
        },
        dtype="str",
    )
    with pytest.raises(PassflowError, match="more than the Bloomreach file limit of 1024 bytes"):
        exp.write(frame)
    exp.abort()
    assert list(tmp_path.iterdir()) == []


# --- the 512-character rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("pooled", [False, True], ids=["sequential", "staging-workers"])
def test_600_character_link_is_rejected_before_anything_is_issued(
    tmp_path: Path, pooled: bool, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    if pooled:
        monkeypatch.setattr(staging, "POOL_MIN_CSV_BYTES", 0)
    # the message makes row 7's link 600+ characters; row 8's stays just under 512
    path = campaign_file(
        tmp_path, 'formats = ["moengage", "bloomreach"]', long_rows={7: 500, 8: 330}, ledger=db_url
    )
    run = IssueRun(load_campaign(path))
    try:
        if pooled:
            assert run._pool is not None
            run._pool._up.wait(60)
        for chunk in run.source_chunks():
            run.stage_chunk(chunk)
        run.end_staging()
        assert run._pooling is pooled
        for i in range(run.batch_count):
            run.deliver_batch(i)
        result = run.commit()
    except BaseException as exc:
        run.abort(exc)
        raise
    assert result.reject_reasons == {"value_too_long": 1}
    (reject,) = read_csv(result.rejects_file)
    assert reject["customer_id"] == "C000007" and reject["row"] == "9"
    assert "pass_link is" in reject["reason"] and "MoEngage accepts at most 512" in reject["reason"]
    assert int(reject["reason"].split()[2]) >= 600
    issued = ledger_ids(load_campaign(path).ledger.url)
    assert len(issued) == 39 and "C000007" not in issued  # nothing issued for it
    for f in result.export_files:
        rows = read_csv(f)
        assert "C000007" not in {r.get("ID") or r.get("registered") for r in rows}
        links = [r["skycore_pass_link"] for r in rows]
        assert len(links) == 39 and all(len(x) <= 512 and verify_link(x) for x in links)  # nothing truncated
        assert any(len(x) > 450 for x in links)  # row 8: long, under the limit, kept whole


def test_braze_rule_is_stricter_and_names_braze(tmp_path: Path) -> None:
    path = campaign_file(tmp_path, 'formats = ["moengage", "braze"]', long_rows={3: 200})
    result = run_issue(load_campaign(path))
    (reject,) = read_csv(result.rejects_file)
    assert reject["customer_id"] == "C000003" and "Braze accepts at most 255" in reject["reason"]


def test_value_rules_are_pure_functions_of_the_frame() -> None:
    limits = value_limits([(FORMATS["moengage"], None), (FORMATS["bloomreach"], None)])
    frame = pd.DataFrame(
        {
            ROW: [2, 3, 4, 5],
            "customer_id": ["a", "b" * 513, "c", "d"],
            "pass_id": ["p", "q", "r", "s"],
            "pass_link": ["l" * 512, "l", "é" * 513, "é" * 500],
        },  # é: 2 bytes, 1 character
        dtype="str",
    ).astype({ROW: "int64"})
    rejects = Rejects()
    kept = reject_long_values(frame, limits, rejects)
    assert kept["customer_id"].tolist() == ["a", "d"] and frame.shape == (4, 4)  # input untouched
    reasons = rejects.frame().set_index("row")["reason"]
    assert reasons[3].startswith("customer_id is 513 characters") and reasons[4].startswith(
        "pass_link is 513"
    )
    assert not reject_long_values(frame, value_limits([(FORMATS["bloomreach"], None)]), Rejects()).empty


def test_too_long_api_link_is_a_failed_row_never_truncated() -> None:
    limits = value_limits([(FORMATS["moengage"], None)])
    outcomes = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "pass_id": ["1", "2", "3"],
            "pass_link": ["https://x/" + "y" * 600, "https://x/ok", "https://x/" + "z" * 600],
            "status": ["issued", "issued", "failed"],
            "last_error": [None, None, "HTTP500"],
        }
    )
    out = fail_long_values(outcomes, limits)
    assert out["status"].tolist() == ["failed", "issued", "failed"]
    assert "pass_link is 610 characters; MoEngage accepts at most 512" in out["last_error"][0]
    assert out["last_error"][2] == "HTTP500" and out["pass_link"].tolist() == outcomes["pass_link"].tolist()


def test_passmachine_link_over_the_limit_fails_the_row(tmp_path: Path, fresh_sandbox: SandboxHandle) -> None:
    write_segment_csv(tmp_path / "segment.csv", rows=30)
    (tmp_path / "campaign.toml").write_text(
        f"""
[campaign]
name = "pm-limits"
provider = "passmachine"
pass_type = "loyaltycard"
[source]
csv = "segment.csv"
[passmachine]
api_base_url = "{fresh_sandbox.passmachine_url}"
account = "demo"
template_id = "tpl-loyalty"
public_token = {{ env = "PF_PM_PUBLIC" }}
secret_token = {{ env = "PF_PM_SECRET" }}
[limits]
max_per_second = 500
max_in_flight = 20
[export]
directory = "exports"
formats = ["moengage"]
[export.moengage]
max_value_chars = 30
""",
        encoding="utf-8",
    )
    result = run_issue(load_campaign(tmp_path / "campaign.toml"))
    created = fresh_sandbox.admin.stats()["passes_created"]
    assert created > 20 and result.counts.failed == created and result.counts.issued == 0
    rows = read_csv(result.failures_file)
    assert len(rows) == created
    assert all(
        r["reason"].startswith("pass_link is ") and "MoEngage accepts at most 30" in r["reason"] for r in rows
    )
    assert read_csv(result.export_files[0]) == []  # not exported, and never cut to 30 characters


# --- changes-only exports ------------------------------------------------------------------------------


def test_changes_mode_exports_only_this_runs_customers(tmp_path: Path, db_url: str) -> None:
    path = campaign_file(tmp_path, 'formats = ["moengage"]\nmode = "changes"', ledger=db_url)
    first = run_issue(load_campaign(path))
    assert len(read_csv(first.export_files[0])) == 40
    seg = tmp_path / "segment.csv"
    text = seg.read_text(encoding="utf-8").replace("u3@example.com", "u3@example.org")
    seg.write_text(text + "C999999,new@example.com,,hi\n", encoding="utf-8")
    second = run_issue(load_campaign(path))
    rows = read_csv(second.export_files[0])
    assert sorted(r["ID"] for r in rows) == ["C000003", "C999999"]  # re-issued (changed) and new
    assert second.counts.skipped_unchanged == 39 and second.counts.exported == 2
    third = run_issue(load_campaign(path))
    assert read_csv(third.export_files[0]) == []  # header only: nothing changed
    # the default stays the full snapshot
    snap = campaign_file(tmp_path / "snap", 'formats = ["moengage"]')
    run_issue(load_campaign(snap))
    assert len(read_csv(run_issue(load_campaign(snap)).export_files[0])) == 40


# --- through the CLI -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_braze_export_through_the_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from passflow.cli import app

    path = campaign_file(tmp_path, 'formats = ["braze"]', long_rows={5: 200})
    res = CliRunner().invoke(app, ["issue", str(path)])
    assert res.exit_code == 0, res.output
    (export,) = (tmp_path / "exports").glob("*-braze-*.csv")
    rows = read_csv(export)
    assert list(rows[0]) == ["external_id", "skycore_pass_id", "skycore_pass_link", "skycore_pass_gendate"]
    assert len(rows) == 39 and "C000005" not in {r["external_id"] for r in rows}  # its link is over 255
    assert all(len(r["skycore_pass_link"]) <= 255 and verify_link(r["skycore_pass_link"]) for r in rows)
    (rejects,) = (tmp_path / "exports").glob("*-rejects-*.csv")
    assert "Braze accepts at most 255" in rejects.read_text(encoding="utf-8")
    # an unknown format stops before Prefect starts, naming the file, the key and the known formats
    bad = campaign_file(tmp_path / "bad", 'formats = ["brze"]')
    res = CliRunner().invoke(app, ["issue", str(bad)])
    assert res.exit_code == 2
    text = " ".join(res.output.split())  # the terminal wraps long lines
    assert "[export.formats]" in text and "known formats: bloomreach, braze, moengage" in text
