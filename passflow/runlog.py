"""The run log: every run's summary from the ledger's runs table (``passflow runs``, ``passflow
status``), and campaigns found by name. Read-only: a ledger that does not exist yet is an empty log,
never a new file (a read-only command creates nothing).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from passflow.errors import ConfigError
from passflow.paths import project_root, resolve_user_path
from passflow.store.schema import locks_table, runs_table

CAMPAIGNS_ENV = "PASSFLOW_CAMPAIGNS_DIR"


def campaigns_dir() -> Path:
    """Where campaigns are found by name: ``PASSFLOW_CAMPAIGNS_DIR``, else the project's ``data/campaigns``."""
    configured = os.environ.get(CAMPAIGNS_ENV)
    return Path(configured).expanduser() if configured else project_root() / "data" / "campaigns"


def campaign_files(folder: Path | None = None) -> dict[str, Path]:
    """``[campaign] name`` → file, for every TOML file of the folder (unreadable files: by stem)."""
    out: dict[str, Path] = {}
    for path in sorted((folder or campaigns_dir()).glob("*.toml")):
        try:
            name = tomllib.loads(path.read_text(encoding="utf-8")).get("campaign", {}).get("name")
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            name = None
        out[name if isinstance(name, str) and name else path.stem] = path
    return out


def resolve_campaign(value: str | Path, folder: Path | None = None) -> Path:
    """A campaign file path as given (working directory, then the project), or a campaign's name or
    file stem looked up in the campaigns folder."""
    text = str(value)
    path = resolve_user_path(text)
    if path.exists() or text.endswith(".toml") or os.sep in text:
        return path
    files = campaign_files(folder)
    by_stem = {p.stem: p for p in files.values()}
    found = files.get(text) or by_stem.get(text)
    if found is None:
        known = ", ".join(sorted(files)) or "none"
        raise ConfigError(
            f"no campaign file or campaign named '{text}' in {folder or campaigns_dir()} (campaigns there: {known})"
        )
    return found


def _engine(url: str) -> sa.Engine | None:
    """An engine on an existing ledger, or None when a SQLite ledger file does not exist (yet)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or not Path(db).exists():
            return None
    return sa.create_engine(url)


def read_runs(url: str, campaign: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs first, each with its parsed summary (without the preview rows)."""
    engine = _engine(url)
    if engine is None:
        return []
    query = sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(limit)
    if campaign:
        query = query.where(runs_table.c.campaign == campaign)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
    except sa.exc.OperationalError:  # no runs table: a ledger no run has written to
        return []
    finally:
        engine.dispose()
    out = []
    for r in rows:
        summary = json.loads(r.pop("summary") or "{}")
        summary.pop("preview", None)
        out.append(
            {
                **{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()},
                "headline": run_headline(summary),
                "summary": summary,
            }
        )
    return out


def read_locks(url: str) -> list[dict[str, Any]]:
    """Runs holding a campaign's lock right now (campaign, run id, host, pid, heartbeat)."""
    engine = _engine(url)
    if engine is None:
        return []
    try:
        with engine.connect() as conn:
            return [
                {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in dict(r._mapping).items()}
                for r in conn.execute(sa.select(locks_table))
            ]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def run_headline(summary: dict[str, Any]) -> str:
    """``293 issued · 7 rejected · 0 failed`` from a stored summary ('' when there is none)."""
    if not summary or "error" in summary and len(summary) == 1:
        return f"error: {summary['error']}" if summary else ""
    if "issued_new" in summary:
        issued = sum(
            int(summary.get(k) or 0) for k in ("issued_new", "reissued_changed", "retried", "reconciled")
        )
        return f"{issued} issued · {summary.get('rejected', 0)} rejected · {summary.get('failed', 0)} failed"
    return f"{summary.get('sent', 0)} sent · {summary.get('failed', 0)} failed"
