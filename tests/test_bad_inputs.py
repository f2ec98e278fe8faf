"""Bad input corpus (``tests/data/bad/manifest.toml``): malformed CSVs, hostile values, bad campaign
files and template abuse, each through the real CLI (``passflow issue``).

Every case must end with its expected exit code and a clear message (or rejects with reasons), no
traceback anywhere the user looks (CLI output and Prefect's run logs), and no partial export. The
fast test drives the CLI in-process (the Prefect API started once per session); the slow one runs a
few cases as real subprocesses, exactly as a user would.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

BAD = Path(__file__).parent / "data" / "bad"
ROOT = Path(__file__).resolve().parents[1]
SALT = "pf-bad-input-salt-value-7781"

CAMPAIGN = """
[campaign]
name = "bad-input"
provider = "skycore"
pass_type = "coupon"
[source]
csv = "SEGMENT"
chunk_size = 50
[validation]
max_reject_rate = 0.3
[skycore]
link_base = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
salt = { env = "PF_BAD_SALT" }
[skycore.params]
user-email = "{{ customer.email }}"
user-phone = "{{ customer.phone|default('') }}"
pass-id = "C{{ customer.customer_id }}"
message4 = '''MESSAGE4'''
[export]
directory = "exports"
formats = ["moengage", "bloomreach"]
[ledger]
url = "sqlite:///ledger.db"
"""


@dataclass
class Case:
    name: str
    exit: int
    segment: str = "good.csv"
    replace: dict[str, str] = field(default_factory=dict)
    message4: str = "Hi {{ customer.first_name|default('there') }}"
    stderr: str = ""
    rejects: list[str] = field(default_factory=list)
    absent: str = ""


CASES = [Case(**c) for c in tomllib.loads((BAD / "manifest.toml").read_text(encoding="utf-8"))["case"]]


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


def _write_huge_field(path: Path) -> None:
    """A 50 MB single field, made here rather than committed."""
    with path.open("w", encoding="utf-8") as f:
        f.write("customer_id,email,phone,first_name\n1,a@example.com,+14155550001,")
        chunk = "x" * (1 << 20)
        for _ in range(50):
            f.write(chunk)
        f.write("\n2,b@example.com,+14155550002,Bob\n")


def _prepare(case: Case, tmp_path: Path) -> Path:
    if case.segment == "@huge_field":
        segment = tmp_path / "huge_field.csv"
        _write_huge_field(segment)
    else:
        segment = BAD / case.segment
    if "sqlite:///crm.db" in "".join(case.replace.values()):
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
        with engine.begin() as conn:
            conn.exec_driver_sql("create table customers (customer_id text, email text, phone text)")
        engine.dispose()
    text = CAMPAIGN
    for old, new in case.replace.items():
        assert old in text, f"{case.name}: {old!r} is not in the base campaign"
        text = text.replace(old, new)
    text = text.replace("SEGMENT", segment.as_posix()).replace("MESSAGE4", case.message4)
    path = tmp_path / "campaign.toml"
    path.write_text(text, encoding="utf-8")
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture
def prefect_logs(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> _Records:
    """What Prefect's console handlers would print (message and traceback), recorded instead: in
    process, they would write to the CLI runner's closed output buffers."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = _Records()
    monkeypatch.setattr(PrefectConsoleHandler, "emit", lambda self, record: handler.emit(record))
    return handler


def _check_outcome(case: Case, tmp_path: Path, code: int, output: str) -> None:
    assert code == case.exit, f"{case.name}: exit {code}, expected {case.exit}\n{output[-3000:]}"
    assert "Traceback" not in output, f"{case.name}: a traceback reached the user\n{output[-3000:]}"
    if case.stderr:
        assert case.stderr.lower() in output.lower(), f"{case.name}: {case.stderr!r} not in\n{output[-3000:]}"
    exports = tmp_path / "exports"
    files = sorted(exports.iterdir()) if exports.exists() else []
    assert not [f for f in files if f.name.startswith(".")], f"{case.name}: temp files left {files}"
    attribute_files = [f for f in files if "-moengage-" in f.name or "-bloomreach-" in f.name]
    if case.exit != 0:
        assert attribute_files == [], f"{case.name}: a failed run left exports {attribute_files}"
    else:
        assert len(attribute_files) == 2
        for f in attribute_files:
            with f.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            assert all(len(r) == len(rows[0]) for r in rows)
            for row in rows[1:]:  # formula neutralisation holds for every cell
                assert not any(v.startswith(("=", "@", "+cmd")) for v in row), row
    if case.rejects:
        rejects = [f for f in files if "-rejects-" in f.name]
        assert rejects, f"{case.name}: no rejects file"
        with rejects[0].open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert all(r["reason"] for r in rows)
        missing = set(case.rejects) - {r["reason_code"] for r in rows}
        assert not missing, f"{case.name}: reason codes {missing} not in {rows}"
    if case.absent:
        texts = [output] + [f.read_text(encoding="utf-8", errors="replace") for f in files if f.is_file()]
        assert not any(case.absent in t for t in texts), f"{case.name}: {case.absent!r} leaked"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_clear_outcome(
    case: Case, tmp_path: Path, prefect_logs: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passflow.cli import app

    monkeypatch.setenv("PF_BAD_SALT", SALT)
    path = _prepare(case, tmp_path)
    result = CliRunner().invoke(app, ["issue", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.name}: unexpected exception {result.exception!r}"
    )
    output = result.output + "\n".join(prefect_logs.texts)
    _check_outcome(case, tmp_path, result.exit_code, output)
    assert SALT not in output
    print(f"OUTCOME {case.name}: exit {result.exit_code}; {_last_line(result.output)}")


def _last_line(text: str) -> Any:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = next((ln for ln in lines if ln.startswith(("configuration error", "error", "stopped", "run failed"))), "")
    return msg[:160] or (lines[-1][:160] if lines else "")


SUBPROCESS_CASES = ["too-many-bad-rows", "nul-bytes", "literal-secret", "tpl-subclasses-escape"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_real_cli_subprocess(name: str, tmp_path: Path, prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    case = next(c for c in CASES if c.name == name)
    path = _prepare(case, tmp_path)
    env = {**os.environ, "PF_BAD_SALT": SALT, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = subprocess.run(
        [sys.executable, "-m", "passflow.cli", "issue", str(path)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    _check_outcome(case, tmp_path, proc.returncode, proc.stdout + proc.stderr)
