"""The bundled Google Wallet example through the CLI, as the README's first command runs it: save
links for the sample segment, exported with the googlewallet_pass_* attributes, every link verified
by ``passflow verify-link``; a rerun issues nothing; CRM formats whose value limit a save link
exceeds reject the rows instead of truncating a link."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from passflow.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "campaigns" / "googlewallet-loyalty.toml"


def _campaign(tmp_path: Path, formats: str = '["bloomreach"]') -> Path:
    text = EXAMPLE.read_text()
    text = text.replace(
        '"../segments/customers.csv"',
        repr(str(ROOT / "data" / "segments" / "customers.csv")).replace("'", '"'),
    )
    text = text.replace('formats = ["bloomreach"]', f"formats = {formats}")
    text = text.replace('"../exports"', '"exports"').replace("sqlite:///../state/", "sqlite:///")
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_bundled_example_issues_verifiable_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_WALLET_SA_KEY", raising=False)
    runner = CliRunner()
    path = _campaign(tmp_path)
    res = runner.invoke(app, ["issue", str(path)])
    assert res.exit_code == 0, res.output
    export = next((tmp_path / "exports").glob("*googlewallet-bloomreach*.csv"))
    with export.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 294
    assert {"googlewallet_pass_id", "googlewallet_pass_link", "googlewallet_pass_gendate"} <= set(rows[0])
    assert rows[0]["googlewallet_pass_id"] == "3388000000022200000.C000001"
    assert "PRIVATE KEY" not in export.read_text() and "PRIVATE KEY" not in res.output
    res = runner.invoke(app, ["verify-link", "--export", str(export), "--campaign", str(path)])
    assert res.exit_code == 0 and "294 of 294 links verify" in res.output, res.output
    res = runner.invoke(app, ["issue", str(path)])
    assert res.exit_code == 0, res.output
    assert re.search(r"skipped \(already issued, unchanged\)\s*│\s*294\s*│", res.output), res.output
    assert re.search(r"issued: new\s*│\s*0\s*│", res.output), res.output


def test_formats_with_short_value_limits_reject_rather_than_truncate(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["issue", str(_campaign(tmp_path, '["braze"]'))])
    assert res.exit_code == 3 and "nothing was issued" in res.output, res.output
    rejects = next((tmp_path / "exports").glob("*rejects*.csv")).read_text()
    assert "value_too_long" in rejects and "255" in rejects
