"""The analysts' CSV inbox, Prefect-free: pick up finished CSV drops, run the issuance, file them away.

Conventions (README "Analysts: drop a CSV"):

* **Which campaign**: the file name starts with the campaign's name (``[campaign] name``) or its
  campaign file's name, then ``--``: ``spring-coupon-2026--march-list.csv`` or
  ``skycore-coupon--march-list.csv``. No sidecar files to forget.
* **When**: a file is taken once it has stopped changing — the same size and modification time as
  at the previous poll, and untouched for ``settle_seconds`` — so a copy still in progress (a slow
  share, a big export) is never read half-written. ``NAME.csv.ready`` (an empty marker file) skips
  the wait: the file is taken at the next poll.
* **Once**: the file's SHA-256 is recorded in the campaign's ledger database; the same content
  dropped again issues nothing and is filed as a duplicate. A re-saved file (different bytes, same
  customers) is still safe: the ledger skips every customer already issued.
* **Where it goes**: ``processed/`` or ``rejected/`` (under the inbox), renamed
  ``<UTC time>-<name>.csv``, with ``<UTC time>-<name>.report.md`` next to it: counts, reasons and
  where the export went.

The issuance itself is a callable, so the Prefect flow (``flows/import_inbox.py``) runs it as the
``issue-passes`` flow and tests can run it without Prefect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from passflow.config import Campaign, load_campaign
from passflow.errors import ConfigError, PassflowError
from passflow.report import summary_markdown
from passflow.secrets import redact
from passflow.store.ledger import Ledger
from passflow.store.schema import inbox_files

log = logging.getLogger("passflow.inbox")

SEPARATOR = "--"
READY_SUFFIX = ".ready"
STATE_FILE = ".passflow-inbox-state.json"  # sizes and times seen at the previous poll
PROCESSED, REJECTED, WORKING = "processed", "rejected", ".working"

# (campaign file, CSV file) -> the run's summary dict; raises on a failed run.
IssueFn = Callable[[Path, Path], Mapping[str, Any]]


@dataclass
class FileOutcome:
    """What happened to one dropped file."""

    file: str
    status: str  # processed | rejected | duplicate
    campaign: str | None = None
    reasons: list[str] = field(default_factory=list)
    summary: Mapping[str, Any] | None = None
    moved_to: str | None = None
    report: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == PROCESSED and not (self.summary or {}).get("failed")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Inbox:
    def __init__(self, directory: str | Path, campaigns: str | Path, *, settle_seconds: float = 10.0) -> None:
        self.dir = Path(directory)
        self.campaigns_dir = Path(campaigns)
        self.settle_seconds = settle_seconds
        for sub in (self.dir, self.dir / PROCESSED, self.dir / REJECTED, self.dir / WORKING):
            sub.mkdir(parents=True, exist_ok=True)

    # --- which files are complete -----------------------------------------------------------------
    def ready_files(self, now: float | None = None) -> list[Path]:
        """CSV files that stopped changing (or have a ``.ready`` marker), oldest first.

        Every call is a poll: it remembers each file's size and mtime for the next one.
        """
        now = time.time() if now is None else now
        state_path = self.dir / STATE_FILE
        try:
            previous = json.loads(state_path.read_text())
        except (OSError, ValueError):
            previous = {}
        seen: dict[str, list[int]] = {}
        ready: list[tuple[int, Path]] = []
        for path in self.dir.iterdir():
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() != ".csv":
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # moved away between listing and stat
                continue
            seen[path.name] = [st.st_size, st.st_mtime_ns]
            marker = path.with_name(path.name + READY_SUFFIX).exists()
            stable = previous.get(path.name) == seen[path.name] and now - st.st_mtime >= self.settle_seconds
            if marker or stable:
                ready.append((st.st_mtime_ns, path))
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(seen))
        os.replace(tmp, state_path)
        return [p for _, p in sorted(ready)]

    # --- which campaign ----------------------------------------------------------------------------
    def campaign_files(self) -> dict[str, Path]:
        """Campaign name and campaign file stem → campaign file (files that do not load are skipped)."""
        out: dict[str, Path] = {}
        for path in sorted(self.campaigns_dir.glob("*.toml")):
            out.setdefault(path.stem, path)
            try:
                out.setdefault(load_campaign(path).name, path)
            except PassflowError:
                continue
        return out

    def campaign_for(self, csv_path: Path) -> Path:
        if SEPARATOR not in csv_path.stem:
            raise ConfigError(
                f"the file name must start with a campaign name and '{SEPARATOR}', e.g. "
                f"spring-coupon-2026{SEPARATOR}{csv_path.name}; campaigns: {self._known()}"
            )
        key = csv_path.stem.split(SEPARATOR, 1)[0]
        path = self.campaign_files().get(key)
        if path is None:
            raise ConfigError(f"no campaign named {key!r} in {self.campaigns_dir}; campaigns: {self._known()}")
        return path

    def _known(self) -> str:
        return ", ".join(sorted(self.campaign_files())) or "(none)"

    # --- one poll ---------------------------------------------------------------------------------
    def poll(self, issue: IssueFn) -> list[FileOutcome]:
        """Process every complete file once; files still being written are left for a later poll."""
        return [self.process(path, issue) for path in self.ready_files()]

    def process(self, path: Path, issue: IssueFn) -> FileOutcome:
        outcome = FileOutcome(file=path.name, status=REJECTED)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # Out of the inbox first: the next poll (or a second worker) must not take it again.
        working = self.dir / WORKING / f"{stamp}-{path.name}"
        try:
            os.replace(path, working)
        except FileNotFoundError:
            outcome.reasons.append("the file disappeared before it was taken")
            return outcome
        path.with_name(path.name + READY_SUFFIX).unlink(missing_ok=True)
        registry: Ledger | None = None
        try:
            campaign_path = self.campaign_for(path)
            campaign = load_campaign(campaign_path, overrides={"source.csv": str(working.resolve())})
            outcome.campaign = campaign.name
            digest = file_sha256(working)
            registry = _open_registry(campaign)
            earlier = _registered(registry, campaign.name, digest)
            if earlier is not None and earlier["status"] == PROCESSED:
                outcome.status = "duplicate"
                outcome.reasons.append(
                    f"same content as {earlier['file_name']} (taken {earlier['received_at']:%Y-%m-%d %H:%M} UTC, "
                    f"run {earlier['run_id']}); nothing was issued again"
                )
            else:
                _register(registry, campaign.name, digest, path.name, "failed", None)
                try:
                    outcome.summary = dict(issue(campaign_path, working.resolve()))
                except PassflowError as exc:
                    outcome.reasons.append(redact(str(exc)))
                else:
                    outcome.status = PROCESSED
                    failed = outcome.summary.get("failed")
                    if failed:
                        outcome.reasons.append(f"{failed} rows failed at the vendor; drop the file again to retry them")
                    _register(
                        registry, campaign.name, digest, path.name, "partial" if failed else PROCESSED,
                        outcome.summary.get("run_id"),
                    )  # fmt: skip
        except PassflowError as exc:
            outcome.reasons.append(redact(str(exc)))
        except Exception as exc:  # noqa: BLE001 - an unexpected error still files the drop away, loudly
            log.exception("inbox: %s failed", path.name)
            outcome.reasons.append(redact(f"unexpected error: {type(exc).__name__}: {exc}"))
        finally:
            if registry is not None:
                registry.close()
        dest_dir = self.dir / (PROCESSED if outcome.status == PROCESSED else REJECTED)
        dest = dest_dir / working.name
        shutil.move(str(working), dest)
        outcome.moved_to = str(dest)
        report = dest.with_suffix(".report.md")
        report.write_text(file_report(outcome), encoding="utf-8")
        outcome.report = str(report)
        return outcome


def _open_registry(campaign: Campaign) -> Ledger:
    return Ledger(campaign.ledger.url)  # ``passflow_inbox_files`` (content hashes) is one of its tables


def _registered(ledger: Ledger, campaign: str, digest: str) -> Mapping[str, Any] | None:
    with ledger.engine.connect() as conn:
        row = conn.execute(
            sa.select(inbox_files).where(inbox_files.c.campaign == campaign, inbox_files.c.sha256 == digest)
        ).first()
    return row._mapping if row is not None else None


def _register(ledger: Ledger, campaign: str, digest: str, name: str, status: str, run_id: str | None) -> None:
    values = {"file_name": name, "status": status, "run_id": run_id, "received_at": datetime.now(UTC)}
    key = (inbox_files.c.campaign == campaign) & (inbox_files.c.sha256 == digest)
    with ledger.engine.begin() as conn:
        if conn.execute(sa.update(inbox_files).where(key).values(**values)).rowcount == 0:
            conn.execute(sa.insert(inbox_files).values(campaign=campaign, sha256=digest, **values))


def file_report(outcome: FileOutcome) -> str:
    """The short report filed next to a processed or rejected file."""
    head = {PROCESSED: "processed", REJECTED: "REJECTED", "duplicate": "duplicate — nothing issued"}[outcome.status]
    lines = [f"# {outcome.file}: {head}", ""]
    if outcome.campaign:
        lines.append(f"Campaign: `{outcome.campaign}`")
    lines.append(f"Filed as: `{outcome.moved_to}`")
    lines.append("")
    if outcome.reasons:
        lines += ["## Reasons" if outcome.status != PROCESSED else "## Warnings", ""]
        lines += [f"- {r}" for r in outcome.reasons]
        lines.append("")
    if outcome.status == REJECTED:
        lines += ["Fix the file (or its name) and drop it into the inbox again.", ""]
    if outcome.summary:
        lines.append(summary_markdown(outcome.summary, title=f"Issuance for {outcome.campaign}"))
    return "\n".join(lines).rstrip() + "\n"
