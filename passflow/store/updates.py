"""What the update path keeps in the ledger database, next to the ledger's own tables (defined in
:mod:`passflow.store.schema`):

* ``passflow_update_history`` — one row per update attempt (what was sent, without secrets; result,
  vendor error code, time, run id, source). Answers "what did customer X get, and when".
* ``passflow_update_events`` — the keys of events already handled, so a re-imported events file (or
  a callback seen twice) sends nothing new.
* ``passflow_update_baseline`` — per customer, the fingerprint of the pass-relevant values last sent
  successfully, which ``--diff`` compares against.

All writes are bulk, one transaction per chunk; the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from passflow.store.ledger import Ledger
from passflow.store.schema import baseline_table, handled_table, history_table

HISTORY_COLUMNS = [
    "customer_id", "pass_id", "action", "source", "event_key", "request", "status", "error_code",
    "error", "attempts",
]  # fmt: skip
_BATCH = 5_000  # keys per IN (...) query


class UpdateStore:
    """The update tables on a ledger's engine (opening the ledger made sure they exist)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine = ledger.engine

    def _upsert(self, table: sa.Table, keys: list[str], rows: list[dict[str, Any]], update: list[str]) -> None:
        if not rows:
            return
        if self.ledger.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys], set_={c: stmt.excluded[c] for c in update}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    # --- history ------------------------------------------------------------------------------
    def record(
        self, campaign: str, provider: str, rows: pd.DataFrame, run_id: str, now: datetime
    ) -> None:
        """Append attempts (``HISTORY_COLUMNS``) to the history; mark handled events and move the
        diff baseline of successful rows (``baseline`` column, when present) in the same transaction."""
        if rows.empty:
            return
        frame = rows.astype(object).where(rows.notna(), None)
        records = [
            {**{c: r.get(c) for c in HISTORY_COLUMNS}, "campaign": campaign, "provider": provider,
             "run_id": run_id, "created_at": now, "attempts": int(r.get("attempts") or 0)}
            for r in frame.to_dict("records")
        ]  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(history_table.insert(), records)
        # An event is handled when the vendor answered for good (sent, or a permanent failure) or
        # there is nothing to update; a transient failure stays open for the next import.
        done = frame.loc[frame["event_key"].notna() & frame["status"].isin(["sent", "failed", "skipped"])]
        if "retryable" in frame:
            done = done.loc[~done["retryable"].fillna(False).astype(bool)]
        self._upsert(
            handled_table,
            ["campaign", "event_key"],
            [
                {"campaign": campaign, "event_key": k, "customer_id": c, "status": s, "run_id": run_id,
                 "handled_at": now}
                for k, c, s in zip(done["event_key"], done["customer_id"], done["status"], strict=True)
            ],  # fmt: skip
            ["status", "run_id", "handled_at"],
        )
        if "baseline" in frame:
            moved = frame.loc[(frame["status"] == "sent") & frame["baseline"].notna()]
            self.set_baseline(campaign, moved["customer_id"], moved["baseline"], run_id, now)

    def history(self, campaign: str, customer_id: str | None = None) -> pd.DataFrame:
        """Update attempts, oldest first (all customers of the campaign, or one)."""
        q = sa.select(history_table).where(history_table.c.campaign == campaign)
        if customer_id is not None:
            q = q.where(history_table.c.customer_id == customer_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(history_table.c.id)).mappings().all()
        out = pd.DataFrame(rows, columns=[c.name for c in history_table.columns])
        out["created_at"] = pd.to_datetime(out["created_at"], utc=True)  # SQLite gives naive UTC
        return out

    # --- handled events -----------------------------------------------------------------------
    def handled(self, campaign: str, keys: Iterable[str]) -> set[str]:
        """The event keys among ``keys`` that were handled before."""
        ids = list(dict.fromkeys(keys))
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _BATCH):
                q = sa.select(handled_table.c.event_key).where(
                    handled_table.c.campaign == campaign, handled_table.c.event_key.in_(ids[i : i + _BATCH])
                )
                out.update(conn.execute(q).scalars())
        return out

    # --- diff baseline ------------------------------------------------------------------------
    def baseline(self, campaign: str, customer_ids: Iterable[str]) -> dict[str, str]:
        ids = list(customer_ids)
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _BATCH):
                q = sa.select(baseline_table.c.customer_id, baseline_table.c.fingerprint).where(
                    baseline_table.c.campaign == campaign, baseline_table.c.customer_id.in_(ids[i : i + _BATCH])
                )
                out.update({c: f for c, f in conn.execute(q).all()})
        return out

    def set_baseline(
        self, campaign: str, customer_ids: Iterable[str], fingerprints: Iterable[str], run_id: str, now: datetime
    ) -> None:
        self._upsert(
            baseline_table,
            ["campaign", "customer_id"],
            [
                {"campaign": campaign, "customer_id": c, "fingerprint": f, "run_id": run_id, "updated_at": now}
                for c, f in zip(customer_ids, fingerprints, strict=True)
            ],
            ["fingerprint", "run_id", "updated_at"],
        )
