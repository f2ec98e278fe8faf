"""Campaign files: every bundled campaign loads; errors name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.secrets import SecretRef, redact, resolve_secret

CAMPAIGNS = Path(__file__).resolve().parents[1] / "data" / "campaigns"

MINIMAL = """
[campaign]
name = "t1"
provider = "skycore"
[source]
csv = "seg.csv"
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/abc"
[skycore.params]
pass-id = "P{{ customer.customer_id }}"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("path", sorted(CAMPAIGNS.glob("*.toml")), ids=lambda p: p.name)
def test_bundled_campaigns_load(path: Path) -> None:
    c = load_campaign(path)
    from passflow.providers import registry

    assert c.name and c.provider in registry.names()
    # relative paths resolve against the campaign file, not the working directory
    if c.source.csv:
        assert Path(c.source.csv).is_absolute() and Path(c.source.csv).exists()
    assert str(CAMPAIGNS.parent) in c.ledger.url or "PASSFLOW_LEDGER_URL" in __import__("os").environ


def test_minimal_campaign_defaults(tmp_path: Path) -> None:
    c = load_campaign(write(tmp_path, MINIMAL))
    assert c.source.csv == str(tmp_path / "seg.csv")
    assert c.export.directory == str(tmp_path / "exports")
    assert c.settings.hash_input == "raw" and c.settings.salt_position == "append"


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("[source]", "[source]\nchunk_sise = 10"), "source.chunk_sise", "unknown key"),
        (('provider = "skycore"', 'provider = "skycorp"'), "campaign.provider", "skycore"),
        (('csv = "seg.csv"', 'csv = "seg.csv"\nsql_url = "sqlite:///x.db"'), "source", "exactly one"),
        (('link_base = "https://d2c.skycore.com/wallet/gc/abc"', 'link_base = "d2c.skycore.com?x=1"'), "skycore.link_base", "http"),
        (('name = "t1"', 'name = "bad name!"'), "campaign.name", "pattern"),
        (("[source]", "[source]\nchunk_size = 0"), "source.chunk_size", "greater than or equal"),
        (("[source]", '[validation]\nmax_reject_rate = 2\n[source]'), "validation.max_reject_rate", "less than"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    p = write(tmp_path, MINIMAL.replace(*change, 1))
    with pytest.raises(ConfigError) as exc:
        load_campaign(p)
    msg = str(exc.value)
    assert str(p) in msg and f"[{key}]" in msg and words in msg


def test_missing_provider_section(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL.replace('provider = "skycore"', 'provider = "passmachine"'))
    with pytest.raises(ConfigError, match=r"\[passmachine\] section is missing"):
        load_campaign(p)


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_campaign(write(tmp_path, "[campaign\nname="))
    with pytest.raises(ConfigError, match="not found"):
        load_campaign(tmp_path / "nope.toml")


def test_literal_secret_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL.replace("[skycore.params]", 'salt = "hunter2hunter2"\n[skycore.params]'))
    with pytest.raises(ConfigError) as exc:
        load_campaign(p)
    assert "[skycore.salt]" in str(exc.value) and "references" in str(exc.value)
    assert "hunter2hunter2" not in str(exc.value)


def test_secret_from_env_and_missing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SecretRef(env="PF_TEST_SALT")
    monkeypatch.delenv("PF_TEST_SALT", raising=False)
    with pytest.raises(ConfigError, match="PF_TEST_SALT is not set") as exc:
        resolve_secret(ref, file="c.toml", key="skycore.salt")
    assert "c.toml" in str(exc.value) and "[skycore.salt]" in str(exc.value)
    monkeypatch.setenv("PF_TEST_SALT", "very-secret-salt")
    value = resolve_secret(ref, file="c.toml", key="skycore.salt")
    assert value.get_secret_value() == "very-secret-salt"
    assert "very-secret-salt" not in repr(value) and "very-secret-salt" not in str(value)
    assert redact("boom very-secret-salt boom") == "boom *** boom"


def test_overrides_replace_the_source(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL)
    c = load_campaign(p, overrides={"source.csv": None, "source.sql_url": "sqlite:///crm.db", "source.table": "customers"})
    assert c.source.csv is None and c.source.sql_url == f"sqlite:///{tmp_path / 'crm.db'}"
