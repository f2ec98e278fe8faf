"""Where vendor callbacks land: ``passflow_pass_events`` (one row per callback, idempotent) and
``passflow_install_status`` (one row per customer, never regressed by a late callback).

Both tables live in the campaign's ledger database next to ``passflow_ledger`` (defined in
:mod:`passflow.store.schema`). ``passflow_pass_events`` is an interface: the
update path's events source reads it (``event = 'uninstalled'`` → void), so its columns are fixed.

One callback is one transaction: the event insert (``ON CONFLICT DO NOTHING`` on
``(provider, vendor_event_id)``) and, only for a new event, a conditional status upsert. Both are
single statements that SQLite and PostgreSQL run atomically, so concurrent or repeated deliveries of
the same callback record it once, and two callbacks for one customer cannot lose each other's times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from passflow.store.ledger import Ledger, utcnow
from passflow.store.schema import events_table, ledger_table, pass_index_table, status_table

EVENTS = ("generated", "failed", "installed", "uninstalled", "added", "removed")
#: What each event says about the pass in the customer's wallet.
STATUS_OF_EVENT = {
    "generated": "generated",
    "failed": "failed",
    "installed": "installed",
    "added": "installed",
    "uninstalled": "uninstalled",
    "removed": "uninstalled",
}
#: Tie-break for two events with the same time: the later stage of a pass's life wins.
STATUS_RANK = {"generated": 1, "failed": 2, "installed": 3, "uninstalled": 4}

INDEX_REFRESH_S = 30.0  # at most one index refresh per campaign this often; misses in between scan


@dataclass(frozen=True)
class PassEvent:
    """One authenticated, parsed callback, mapped to a campaign and customer."""

    provider: str
    campaign: str
    customer_id: str
    pass_id: str | None
    event: str
    vendor_event_id: str
    occurred_at: datetime
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown pass event {self.event!r}; one of {', '.join(EVENTS)}")
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")


def _as_utc(value: datetime | None) -> datetime | None:
    """Timestamps read back from SQLite are naive UTC; give every caller tz-aware UTC."""
    if value is None or pd.isna(value):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rank(col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    return sa.case(*((col == s, r) for s, r in STATUS_RANK.items()), else_=0)


def _later(new: sa.ColumnElement[Any], old: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The later of two nullable timestamps."""
    return sa.case((old.is_(None), new), (new.is_(None), old), (new > old, new), else_=old)


class CallbackStore:
    """The callbacks' view of one ledger database (SQLite file or PostgreSQL)."""

    def __init__(self, ledger_url: str) -> None:
        self.ledger = Ledger(ledger_url)  # creates every passflow table if this is a fresh database
        self.engine: Engine = self.ledger.engine
        self.dialect = self.ledger.dialect
        self._refreshed: dict[str, float] = {}  # campaign -> monotonic time of the last index refresh

    def close(self) -> None:
        self.ledger.close()

    # --- mapping callbacks to customers ------------------------------------------------------------
    def customer_for_pass(self, campaign: str, pass_id: str) -> str | None:
        """The customer holding ``pass_id`` in this campaign's ledger (None if unknown or ambiguous).

        Through ``passflow_pass_index`` (primary-key reads), checked against the ledger row; on a
        miss the index is refreshed from the ledger (one scan), at most every ``INDEX_REFRESH_S``
        per campaign — a miss in between scans the ledger for this pass alone.
        """
        hit = self._indexed(campaign, pass_id)
        if hit is not None and self.pass_of_customer(campaign, hit) == pass_id:
            return hit
        last = self._refreshed.get(campaign)
        if last is None or time.monotonic() - last >= INDEX_REFRESH_S:
            self._refresh_index(campaign)
            hit = self._indexed(campaign, pass_id)
            if hit is not None and self.pass_of_customer(campaign, hit) == pass_id:
                return hit
        return self._scan_for_pass(campaign, pass_id)

    def _indexed(self, campaign: str, pass_id: str) -> str | None:
        t = pass_index_table.c
        q = sa.select(t.customer_id).where(t.campaign == campaign, t.pass_id == pass_id)
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def _refresh_index(self, campaign: str) -> None:
        """Add the campaign's ledger pass ids to the index (existing entries stay; stale ones are
        corrected one by one by :meth:`_scan_for_pass`)."""
        self._refreshed[campaign] = time.monotonic()
        lt = ledger_table.c
        rows = (
            sa.select(lt.campaign, lt.pass_id, sa.func.min(lt.customer_id))
            .where(lt.campaign == campaign, lt.pass_id.is_not(None), lt.pass_id != "")
            .group_by(lt.campaign, lt.pass_id)
        )
        stmt = self._insert(pass_index_table).from_select(["campaign", "pass_id", "customer_id"], rows)
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["campaign", "pass_id"]))

    def _scan_for_pass(self, campaign: str, pass_id: str) -> str | None:
        q = (
            sa.select(ledger_table.c.customer_id)
            .where(ledger_table.c.campaign == campaign, ledger_table.c.pass_id == pass_id)
            .limit(2)
        )
        with self.engine.connect() as conn:
            found = conn.execute(q).scalars().all()
        if len(found) != 1:
            return None
        fix = self._insert(pass_index_table).values(campaign=campaign, pass_id=pass_id, customer_id=found[0])
        fix = fix.on_conflict_do_update(
            index_elements=["campaign", "pass_id"], set_={"customer_id": fix.excluded.customer_id}
        )
        with self.engine.begin() as conn:  # correct a stale or missing index entry
            conn.execute(fix)
        return found[0]

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def pass_of_customer(self, campaign: str, customer_id: str) -> str | None | bool:
        """The customer's pass id; ``False`` when the customer is not in the campaign's ledger."""
        q = sa.select(ledger_table.c.pass_id).where(
            ledger_table.c.campaign == campaign, ledger_table.c.customer_id == customer_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return False if row is None else row[0]

    # --- recording ---------------------------------------------------------------------------------
    def record(self, ev: PassEvent) -> bool:
        """Record one callback; ``False`` if this (provider, vendor_event_id) was recorded before."""
        now = utcnow()
        occurred = ev.occurred_at.astimezone(UTC)
        ins = (
            self._insert(events_table)
            .values(
                provider=ev.provider,
                campaign=ev.campaign,
                customer_id=ev.customer_id,
                pass_id=ev.pass_id,
                event=ev.event,
                vendor_event_id=ev.vendor_event_id,
                occurred_at=occurred,
                received_at=now,
                payload=json.dumps(ev.payload, sort_keys=True, default=str),
            )
            .on_conflict_do_nothing(index_elements=["provider", "vendor_event_id"])
        )
        status = STATUS_OF_EVENT[ev.event]
        up = self._insert(status_table).values(
            campaign=ev.campaign,
            customer_id=ev.customer_id,
            provider=ev.provider,
            pass_id=ev.pass_id,
            status=status,
            status_at=occurred,
            installed_at=occurred if status == "installed" else None,
            uninstalled_at=occurred if status == "uninstalled" else None,
            updated_at=now,
        )
        t, x = status_table.c, up.excluded
        # Out-of-order delivery: a callback older than the one that set the status only fills in
        # its own timestamp; it never moves the status back.
        newer = sa.or_(x.status_at > t.status_at, sa.and_(x.status_at == t.status_at, _rank(x.status) > _rank(t.status)))
        up = up.on_conflict_do_update(
            index_elements=["campaign", "customer_id"],
            set_={
                "status": sa.case((newer, x.status), else_=t.status),
                "status_at": sa.case((newer, x.status_at), else_=t.status_at),
                "pass_id": sa.func.coalesce(x.pass_id, t.pass_id),
                "installed_at": _later(x.installed_at, t.installed_at),
                "uninstalled_at": _later(x.uninstalled_at, t.uninstalled_at),
                "updated_at": x.updated_at,
            },
        )
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # psycopg reports rowcount 1 even when ON CONFLICT skipped the row: ask for the id
                new = conn.execute(ins.returning(events_table.c.id)).first() is not None
            else:
                new = conn.execute(ins).rowcount == 1
            if not new:
                return False
            conn.execute(up)
        return True

    # --- reading -----------------------------------------------------------------------------------
    def events(self, campaign: str, event: str | None = None) -> pd.DataFrame:
        q = sa.select(events_table).where(events_table.c.campaign == campaign)
        if event:
            q = q.where(events_table.c.event == event)
        with self.engine.connect() as conn:
            df = pd.DataFrame(conn.execute(q.order_by(events_table.c.id)).mappings().all())
        for col in ("occurred_at", "received_at"):
            if col in df:
                df[col] = df[col].map(_as_utc)
        return df

    def install_status(self, campaign: str, customer_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Install status rows of a campaign (optionally only these customers), timestamps tz-aware UTC."""
        return read_install_status(self.engine, campaign, customer_ids)


def read_install_status(engine: Engine, campaign: str, customer_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """What :meth:`CallbackStore.install_status` returns, on the engine of an open :class:`Ledger`
    (the issue run's exports use its own)."""
    cols = ["customer_id", "pass_id", "status", "status_at", "installed_at", "uninstalled_at", "updated_at"]
    base = sa.select(*(status_table.c[c] for c in cols)).where(status_table.c.campaign == campaign)
    frames = []
    with engine.connect() as conn:
        if customer_ids is None:
            frames.append(pd.DataFrame(conn.execute(base).all(), columns=cols))
        else:
            ids = list(customer_ids)
            for i in range(0, len(ids), 5_000):  # bound parameters per query
                q = base.where(status_table.c.customer_id.in_(ids[i : i + 5_000]))
                frames.append(pd.DataFrame(conn.execute(q).all(), columns=cols))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    for col in ("status_at", "installed_at", "uninstalled_at", "updated_at"):
        df[col] = df[col].map(_as_utc).astype(object)
    return df
