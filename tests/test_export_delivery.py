"""Delivery of exports (``[export.deliver]``) to real servers on loopback: an S3-compatible server
(moto) and an SFTP server (asyncssh), started by fixtures (tests/delivery_servers.py).

A run's files land under their final names and the report links to them; a failed upload fails the
run and the rerun delivers the same files, once; ``kill -9`` during an upload (a real subprocess)
leaves nothing under the final name, and the next delivery puts it there exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_servers import (
    CLIENT_KEY,
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    SFTP_PASSWORD,
    SFTP_USER,
    S3Server,
    SftpServer,
    running_s3_server,
    running_sftp_server,
)

from passflow.config import DeliverSettings, load_campaign
from passflow.errors import ConfigError
from passflow.exports.deliver import DeliveryError, deliver_pending, mark_undelivered, undelivered
from passflow.report import summary_markdown
from passflow.run import run_issue

CAMPAIGN = """
[campaign]
name = "drop-coupon"
provider = "skycore"
[source]
csv = "segment.csv"
chunk_size = 25
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc123"
[skycore.params]
user-email = "{{{{ customer.email }}}}"
pass-id = "T{{{{ customer.customer_id }}}}"
[export]
directory = "exports"
formats = ["moengage", "bloomreach"]
[export.deliver]
{deliver}
[ledger]
url = "{ledger}"
"""


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    with running_sftp_server(tmp_path_factory.mktemp("sftp")) as server:
        yield server


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_S3_KEY", S3_KEY)
    monkeypatch.setenv("T_S3_SECRET", S3_SECRET)
    monkeypatch.setenv("T_SFTP_PASSWORD", SFTP_PASSWORD)
    if CLIENT_KEY is not None:
        monkeypatch.setenv("T_SFTP_KEY", CLIENT_KEY.export_private_key().decode())


def s3_deliver(server: S3Server, bucket: str, prefix: str = "crm/in") -> str:
    return (
        f'url = "s3://{bucket}/{prefix}"\nendpoint_url = "{server.endpoint}"\nregion = "{S3_REGION}"\n'
        'access_key_id = { env = "T_S3_KEY" }\nsecret_access_key = { env = "T_S3_SECRET" }'
    )


def sftp_deliver(server: SftpServer, folder: str, *, auth: str = 'password = { env = "T_SFTP_PASSWORD" }') -> str:
    return (
        f'url = "sftp://{server.host}:{server.port}/{folder}"\nusername = "{SFTP_USER}"\n{auth}\n'
        f'known_hosts = "{server.known_hosts}"'
    )


def make_campaign(tmp_path: Path, deliver: str, rows: int = 60, ledger: str = "sqlite:///state/ledger.db") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    with (tmp_path / "segment.csv").open("w", encoding="utf-8") as f:
        f.write("customer_id,email\n")
        for i in range(rows):
            f.write(f"C{i:05d},u{i}@example.com\n")
    path = tmp_path / "campaign.toml"
    path.write_text(CAMPAIGN.format(deliver=deliver, ledger=ledger), encoding="utf-8")
    return path


def new_bucket(server: S3Server) -> str:
    name = f"b-{uuid.uuid4().hex[:10]}"
    server.client.create_bucket(Bucket=name)
    return name


def sftp_listing(server: SftpServer, folder: str) -> dict[str, bytes]:
    d = server.root / folder
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


def test_s3_delivery_of_a_run_and_report_links(tmp_path: Path, s3_server: S3Server, creds: None) -> None:
    bucket = new_bucket(s3_server)
    result = run_issue(load_campaign(make_campaign(tmp_path, s3_deliver(s3_server, bucket))))
    local = {Path(f).name: Path(f).read_bytes() for f in result.export_files}
    assert len(local) == 2
    assert s3_server.objects(bucket) == {f"crm/in/{name}": data for name, data in local.items()}  # no temp objects
    assert sorted(result.delivered_files) == sorted(f"s3://{bucket}/crm/in/{n}" for n in local)
    md = summary_markdown(result)
    assert all(f"(s3://{bucket}/crm/in/{n})" in md for n in local)
    assert "file://" not in md.split("rejects")[0]  # exports link to the bucket, not to dead local paths
    assert undelivered(tmp_path / "exports") == []
    assert S3_SECRET not in json.dumps(result.summary(), default=str)


def test_sftp_delivery_of_a_run(tmp_path: Path, sftp_server: SftpServer, creds: None) -> None:
    result = run_issue(load_campaign(make_campaign(tmp_path, sftp_deliver(sftp_server, "drop/in"))))
    local = {Path(f).name: Path(f).read_bytes() for f in result.export_files}
    assert sftp_listing(sftp_server, "drop/in") == local  # no .partial left
    port = sftp_server.port
    assert sorted(result.delivered_files) == sorted(f"sftp://127.0.0.1:{port}/drop/in/{n}" for n in local)


@pytest.mark.skipif(CLIENT_KEY is None, reason="asyncssh is not installed")
def test_sftp_delivery_with_a_private_key(tmp_path: Path, sftp_server: SftpServer, creds: None) -> None:
    deliver = sftp_deliver(sftp_server, "keyed", auth='private_key = { env = "T_SFTP_KEY" }')
    result = run_issue(load_campaign(make_campaign(tmp_path, deliver)))
    assert set(sftp_listing(sftp_server, "keyed")) == {Path(f).name for f in result.export_files}


def test_failed_upload_fails_the_run_and_the_rerun_delivers_the_same_files(
    tmp_path: Path, s3_server: S3Server, creds: None, db_url: str
) -> None:
    bucket = f"b-{uuid.uuid4().hex[:10]}"  # not created yet: every upload fails
    path = make_campaign(tmp_path, s3_deliver(s3_server, bucket), ledger=db_url)
    with pytest.raises(DeliveryError) as err:
        run_issue(load_campaign(path))
    assert "the next run of this campaign delivers it again" in str(err.value)
    assert S3_SECRET not in str(err.value) and S3_KEY not in str(err.value)
    first = sorted(p.name for p in undelivered(tmp_path / "exports"))
    assert len(first) == 2  # committed locally, still to deliver

    s3_server.client.create_bucket(Bucket=bucket)
    second = run_issue(load_campaign(path))
    assert second.counts.skipped_unchanged == 60  # nothing issued again
    names = sorted(first + [Path(f).name for f in second.export_files])
    objects = s3_server.objects(bucket)
    assert sorted(objects) == [f"crm/in/{n}" for n in names]  # each file once, the failed run's too
    for n in names:
        assert objects[f"crm/in/{n}"] == (tmp_path / "exports" / n).read_bytes()
    assert undelivered(tmp_path / "exports") == []
    third = run_issue(load_campaign(path))  # delivered files are not delivered again
    assert len(s3_server.objects(bucket)) == len(names) + len(third.export_files)


def test_wrong_sftp_password_is_a_loud_error_without_the_secret(
    tmp_path: Path, sftp_server: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_SFTP_PASSWORD", "not-the-password-9")
    with pytest.raises(DeliveryError) as err:
        run_issue(load_campaign(make_campaign(tmp_path, sftp_deliver(sftp_server, "denied"))))
    assert "cannot connect to sftp://" in str(err.value) and "not-the-password-9" not in str(err.value)
    assert len(undelivered(tmp_path / "exports")) == 2


# --- kill -9 during an upload -------------------------------------------------------------------------

DELIVER_SCRIPT = """
import sys
from pathlib import Path
from passflow.config import DeliverSettings
from passflow.exports.deliver import deliver_pending
settings = DeliverSettings.model_validate_json(sys.argv[2])
print(deliver_pending(Path(sys.argv[1]), "", settings, file="campaign.toml"))
"""


def _big_export(directory: Path, mib: int = 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "drop-coupon-skycore-moengage-20261207T000000Z-0badc0de.csv"
    line = b"C00001,TC00001,https://d2c.skycore.com/wallet/gc/abc123?pass-id=TC00001,2026-12-07T00:00:00Z\n"
    with path.open("wb") as f:
        f.write(b"ID,skycore_pass_id,skycore_pass_link,skycore_pass_gendate\n")
        f.write(line * ((mib << 20) // len(line)))
    mark_undelivered([path])
    return path


def _killed_delivery(exports: Path, settings: DeliverSettings, crash_at: str) -> None:
    env = {**os.environ, "PASSFLOW_CRASH_AT": crash_at}
    proc = subprocess.run(
        [sys.executable, "-c", DELIVER_SCRIPT, str(exports), settings.model_dump_json()],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize("crash_at", ["deliver_upload:2", "deliver_move"])
def test_s3_kill_during_upload_leaves_no_final_object_and_rerun_delivers_once(
    tmp_path: Path, s3_server: S3Server, creds: None, crash_at: str
) -> None:
    bucket = new_bucket(s3_server)
    path = _big_export(tmp_path / "exports")
    settings = DeliverSettings(
        url=f"s3://{bucket}/in", endpoint_url=s3_server.endpoint, region=S3_REGION,
        access_key_id={"env": "T_S3_KEY"}, secret_access_key={"env": "T_S3_SECRET"},
    )
    _killed_delivery(tmp_path / "exports", settings, crash_at)
    assert f"in/{path.name}" not in s3_server.objects(bucket)  # the CRM sees nothing under the final name
    assert undelivered(tmp_path / "exports") == [path]

    urls = deliver_pending(tmp_path / "exports", "", settings, file="campaign.toml")
    assert urls == [f"s3://{bucket}/in/{path.name}"]
    assert s3_server.objects(bucket) == {f"in/{path.name}": path.read_bytes()}  # once, whole, no temp object
    assert undelivered(tmp_path / "exports") == []


@pytest.mark.parametrize("crash_at", ["deliver_upload:2", "deliver_move"])
def test_sftp_kill_during_upload_leaves_no_final_file_and_rerun_delivers_once(
    tmp_path: Path, sftp_server: SftpServer, creds: None, crash_at: str
) -> None:
    folder = f"k-{uuid.uuid4().hex[:8]}"
    path = _big_export(tmp_path / "exports", mib=8)
    settings = DeliverSettings(
        url=f"sftp://127.0.0.1:{sftp_server.port}/{folder}", username=SFTP_USER,
        password={"env": "T_SFTP_PASSWORD"}, known_hosts=str(sftp_server.known_hosts),
    )
    _killed_delivery(tmp_path / "exports", settings, crash_at)
    remote = sftp_listing(sftp_server, folder)
    assert path.name not in remote and f".{path.name}.partial" in remote  # only the hidden temp file
    deliver_pending(tmp_path / "exports", "", settings, file="campaign.toml")
    assert sftp_listing(sftp_server, folder) == {path.name: path.read_bytes()}


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deliver", "message"),
    [
        ('url = "ftp://host/x"', r"\[export\.deliver\.url\] must be \"s3://bucket/prefix\""),
        ('url = "sftp://crm:pw@host/x"', "no user or password in the URL"),
        ('url = "sftp://host/x"\nusername = "u"\npassword = { env = "P" }', "needs `known_hosts`"),
        ('url = "sftp://host/x"\nusername = "u"\npassword = "hunter22"', "secrets must be references"),
        ('url = "s3://b/x"\nusername = "u"', "SFTP settings, but the url is s3://"),
        ('url = "s3://b/x"\naccess_key_id = { env = "K" }', "set both access_key_id and secret_access_key"),
    ],
)
def test_deliver_settings_are_checked_before_anything_runs(tmp_path: Path, deliver: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_campaign(make_campaign(tmp_path, deliver))
    assert "hunter22" not in str(err.value)


def test_dry_run_delivers_nothing(tmp_path: Path, s3_server: S3Server, creds: None) -> None:
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    path = make_campaign(tmp_path, s3_deliver(s3_server, bucket))
    with pytest.raises(DeliveryError):
        run_issue(load_campaign(path))  # no bucket yet: two files stay undelivered
    s3_server.client.create_bucket(Bucket=bucket)
    result = run_issue(load_campaign(path), dry_run=True)
    assert result.delivered_files == [] and s3_server.objects(bucket) == {}
    assert len(undelivered(tmp_path / "exports")) == 2


def test_concurrent_runs_never_upload_each_others_files(tmp_path: Path, s3_server: S3Server, creds: None) -> None:
    """A run delivers earlier runs' leftovers only if they are older than its start: the files of a
    run going on at the same time (another shard) are that run's to deliver."""
    bucket = new_bucket(s3_server)
    exports = tmp_path / "exports"
    exports.mkdir()
    old, other, own = (exports / f"c-skycore-moengage-{n}.csv" for n in ("old", "other", "own"))
    for p in (old, other, own):
        p.write_text("ID\n", encoding="utf-8")
    mark_undelivered([old, other, own])
    os.utime(old, (1_000_000_000, 1_000_000_000))
    settings = DeliverSettings(
        url=f"s3://{bucket}/in", endpoint_url=s3_server.endpoint, region=S3_REGION,
        access_key_id={"env": "T_S3_KEY"}, secret_access_key={"env": "T_S3_SECRET"},
    )
    urls = deliver_pending(exports, "c-", settings, file="c.toml", first=[own], earlier_before=1_000_000_001.0)
    assert urls == [f"s3://{bucket}/in/{old.name}", f"s3://{bucket}/in/{own.name}"]
    assert undelivered(exports, "c-") == [other]


def test_known_hosts_resolves_against_the_campaign_and_must_exist(tmp_path: Path) -> None:
    deliver = 'url = "sftp://host/x"\nusername = "u"\npassword = { env = "P" }\nknown_hosts = "keys/known_hosts"'
    path = make_campaign(tmp_path, deliver)
    with pytest.raises(ConfigError, match=r"\[export\.deliver\.known_hosts\] .*keys/known_hosts is not a file"):
        load_campaign(path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "known_hosts").write_text("host ssh-ed25519 AAAA\n", encoding="utf-8")
    assert load_campaign(path).export.deliver.known_hosts == str(tmp_path / "keys" / "known_hosts")
