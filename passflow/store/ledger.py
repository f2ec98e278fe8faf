"""The ledger: one row per (campaign, customer) — what was issued, when, and from which inputs.
(Skycore rows carry no link: it is a pure function of the values its checksum, the row's
fingerprint, covers; see ``Issuer.ledger_keeps_links``.)

It makes reruns idempotent (issued rows with an unchanged fingerprint are skipped), lets a crashed
run resume (``pending`` rows are intents whose outcome is unknown), and lets updates find pass ids.
SQLite file by default, any SQLAlchemy URL (PostgreSQL in production). Writes are bulk upserts, one
transaction per chunk.

Statuses: ``pending`` (intent written, vendor call under way or interrupted), ``issued``,
``failed`` (permanent vendor error or attempts exhausted; retried on the next run).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from passflow.config import LEDGER_URL_ENV
from passflow.errors import ConfigError, PassflowError
from passflow.store import migrate
from passflow.store.schema import ledger_table, locks_table, runs_table

LOOKUP_BATCH = 5_000  # ids per IN (...) query; well under SQLite's and PostgreSQL's parameter limits
_RECORD_COLUMNS = [
    "campaign", "customer_id", "provider", "status", "pass_id", "pass_link", "fingerprint",
    "attempts", "last_error", "run_id", "created_at", "updated_at", "issued_at",
]  # fmt: skip
# The columns of record() that differ from row to row; the others are one value for the batch.
_ROW_COLUMNS = ["customer_id", "status", "pass_id", "pass_link", "fingerprint", "last_error", "issued_at"]
# Parameters per INSERT into the SQLite staging table: within SQLite's limit (32766 since 3.32,
# 999 before), and enough rows a statement that stepping it costs little next to binding.
SQLITE_PARAMS_PER_STATEMENT = 1400 if sqlite3.sqlite_version_info >= (3, 32) else 980
STALE_LOCK = timedelta(minutes=10)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _record_sql(dialect: str, rows: int) -> str:
    """The upsert of ``Ledger.record`` for ``rows`` rows per statement."""
    update = [
        "status",
        "pass_id",
        "pass_link",
        "fingerprint",
        "last_error",
        "run_id",
        "updated_at",
        "issued_at",
    ]
    mark = "?" if dialect == "sqlite" else "%s"
    values = ", ".join(["(" + ", ".join([mark] * len(_RECORD_COLUMNS)) + ")"] * rows)
    return (
        f"INSERT INTO {ledger_table.name} ({', '.join(_RECORD_COLUMNS)}) VALUES {values} "
        "ON CONFLICT (campaign, customer_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in update)
    )


# SQLite: record() inserts the batch's per-row values into a temporary table of its connection,
# then upserts them into the ledger in one INSERT … SELECT. Binding Python values row by row is most
# of the cost, and a temporary table takes no lock on the ledger file: two bulk writers bind their
# batches at the same time, and only the C-speed merge holds the ledger's one write lock (see
# passflow.run.staging.LedgerWriter). Rows merge in insertion order, so a later row of a customer wins.
_SQLITE_STAGE_TABLE = "passflow_ledger_rows"


@functools.cache
def _sqlite_record_sql(varying: tuple[str, ...]) -> tuple[str, str, str, str, int]:
    """(create the connection's staging table, insert ``rows_per_statement`` rows, insert one row,
    merge the staged rows into the ledger, rows_per_statement) for a batch whose ``varying`` columns
    (of ``_ROW_COLUMNS``) differ from row to row; the merge binds every other column once."""
    marks = "(" + ", ".join(["?"] * len(varying)) + ")"
    insert = f"INSERT INTO temp.{_SQLITE_STAGE_TABLE} ({', '.join(varying)}) VALUES "
    per_row = {c: f"s.{c}" for c in varying}
    select = ", ".join(per_row.get(c, "?") for c in _RECORD_COLUMNS)  # "?": one value for the batch
    update = _record_sql("sqlite", 1).split(" DO UPDATE SET ", 1)[1]
    rows_per_statement = SQLITE_PARAMS_PER_STATEMENT // len(varying)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {_SQLITE_STAGE_TABLE} ({', '.join(_ROW_COLUMNS)})",
        insert + ", ".join([marks] * rows_per_statement),
        insert + marks,
        # "WHERE true": SQLite's parser needs it between a SELECT and ON CONFLICT
        f"INSERT INTO {ledger_table.name} ({', '.join(_RECORD_COLUMNS)}) "
        f"SELECT {select} FROM temp.{_SQLITE_STAGE_TABLE} AS s WHERE true ORDER BY s.rowid "
        f"ON CONFLICT (campaign, customer_id) DO UPDATE SET {update}",
        rows_per_statement,
    )


def _same_everywhere(values: np.ndarray) -> bool:
    """Whether an object array holds one value (None included) in every row."""
    first = values[0]
    if first is None:
        return all(v is None for v in values)
    return bool((values == first).all()) if isinstance(first, str) else False  # NaN, dates: per row


# PostgreSQL: a batch of at least this many rows is COPYed into a temporary table and upserted from
# there in one statement: ~5x less time than executemany's row-by-row upserts. Smaller batches are
# not worth the extra round trips.
PG_COPY_MIN_ROWS = 1_000
_COPY = "COPY"  # record_statements' marker for the COPY path (the parameters are the rows)
_MERGE = "MERGE"  # record_statements' marker: what follows runs under write()'s ``serialize``
_STAGE_TABLE = "passflow_ledger_in"


@functools.cache
def _copy_upsert_sql() -> tuple[str, str, str]:
    """(create the session's staging table, COPY into it, upsert from it)."""
    cols = ", ".join(_RECORD_COLUMNS)
    update = _record_sql("postgresql", 1).split(" DO UPDATE SET ", 1)[1]
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE_TABLE} "
        f"(LIKE {ledger_table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        f"COPY {_STAGE_TABLE} ({cols}) FROM STDIN (FORMAT csv)",
        f"INSERT INTO {ledger_table.name} ({cols}) SELECT {cols} FROM {_STAGE_TABLE} "
        f"ON CONFLICT (campaign, customer_id) DO UPDATE SET {update}",
    )


def _text_or_none(values: pd.Series) -> np.ndarray:
    """Object array of the values, with missing values and "" as None (SQL NULL)."""
    out = values.to_numpy(dtype=object, na_value=None)
    empty = out == ""
    return np.where(empty, None, out) if empty.any() else out


class CampaignLocked(PassflowError):
    """Another run of the same campaign is active."""


class Ledger:
    def __init__(self, url: str, *, bulk_writer: bool = False) -> None:
        """``bulk_writer``: this process writes big batches and runs :meth:`checkpoint` itself (off its
        write path) instead of letting SQLite copy the WAL into the database inside each commit."""
        self.url = url
        parsed = make_url(url)
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            # Waiting beats failing when another process briefly holds the write lock.
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_bulk_pragmas if bulk_writer else _sqlite_pragmas)
        try:
            # Creates an empty database at the schema's head, upgrades an old SQLite file, or
            # stops with the command that upgrades it (once per process for a server database).
            migrate.ensure_current(self.engine)
        except (migrate.SchemaBehind, migrate.SchemaTooNew):
            self.engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            cause = exc.orig or exc
            detail = (str(cause).strip().splitlines() or [""])[0][:200]
            # A configuration problem (exit 2, names the key), with the driver's reason: "refused",
            # "does not exist"… — never the password.
            if parsed.password:
                detail = detail.replace(str(parsed.password), "***")
            raise ConfigError(
                f"cannot open the ledger at {self.safe_url}: {type(cause).__name__}: {detail} "
                f"(check the URL and that the database is running; {LEDGER_URL_ENV} overrides it)",
                key="ledger.url",
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the SQLite database file, without blocking writers or
        readers (a no-op for other databases)."""
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # --- upserts -----------------------------------------------------------------------------
    def lookup(self, campaign: str, customer_ids: Iterable[str]) -> pd.DataFrame:
        """Existing ledger rows for these customers (missing customers are absent).

        Driver-level SQL: compiling an expanding IN of thousands of bound parameters through
        SQLAlchemy costs more than the query itself.
        """
        ids = list(customer_ids)
        cols = ["customer_id", "status", "fingerprint", "pass_id", "pass_link", "issued_at", "attempts"]
        select = f"SELECT {', '.join(cols)} FROM {ledger_table.name} WHERE campaign = "
        frames = []
        with self.engine.connect() as conn:
            # Plain DBAPI tuples: SQLAlchemy Row objects make DataFrame construction ~10x slower.
            cursor = conn.connection.driver_connection.cursor()
            try:
                for i in range(0, len(ids), LOOKUP_BATCH):
                    batch = ids[i : i + LOOKUP_BATCH]
                    if self.dialect == "postgresql":
                        cursor.execute(select + "%s AND customer_id = ANY(%s)", (campaign, batch))
                    else:
                        marks = ",".join("?" * len(batch))
                        cursor.execute(select + f"? AND customer_id IN ({marks})", (campaign, *batch))
                    frames.append(pd.DataFrame(cursor.fetchall(), columns=cols))
            finally:
                cursor.close()
        if not frames:
            return pd.DataFrame(columns=cols)
        out = pd.concat(frames, ignore_index=True)
        # SQLite returns timestamps as text at the driver level.
        out["issued_at"] = pd.to_datetime(out["issued_at"], utc=True, format="ISO8601")
        return out

    def has_rows(self, campaign: str) -> bool:
        with self.engine.connect() as conn:
            q = sa.select(ledger_table.c.customer_id).where(ledger_table.c.campaign == campaign).limit(1)
            return conn.execute(q).first() is not None

    def mark_pending(self, campaign: str, provider: str, rows: pd.DataFrame, run_id: str) -> None:
        """Write the intent before calling a vendor: status pending, attempts + 1."""
        now = utcnow()
        records = [
            {
                "campaign": campaign,
                "customer_id": cid,
                "provider": provider,
                "status": "pending",
                "fingerprint": fp,
                "attempts": 1,
                "run_id": run_id,
                "created_at": now,
                "updated_at": now,
            }
            for cid, fp in zip(rows["customer_id"], rows["fingerprint"], strict=True)
        ]
        if not records:
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(ledger_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ledger_table.c.campaign, ledger_table.c.customer_id],
            set_={
                "status": "pending",
                "fingerprint": stmt.excluded.fingerprint,
                "attempts": ledger_table.c.attempts + 1,
                "run_id": stmt.excluded.run_id,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, records)

    def record(self, campaign: str, provider: str, rows: pd.DataFrame, run_id: str) -> None:
        """Record outcomes. ``rows``: customer_id, status, pass_id, pass_link, fingerprint, last_error, issued_at.

        The hot path of a big link run (one row per customer), so it goes straight to the driver
        with tuples: building a dict per row and letting SQLAlchemy process each parameter cost
        ~25 µs/row. On SQLite only the values that differ from row to row are bound (of 7 that may;
        a link batch has 3), many rows a statement, into a temporary table merged in one statement;
        on PostgreSQL a big batch is COPYed.
        """
        self.write(self.record_statements(campaign, provider, rows, run_id))

    def record_statements(
        self, campaign: str, provider: str, rows: pd.DataFrame, run_id: str
    ) -> list[tuple[str, Any]]:
        """What :meth:`record` executes: (SQL, parameters) pairs for :meth:`write`. (A bulk writer
        builds the next batch's while another one is written.)"""
        if rows.empty:
            return []
        now = self._db_time(utcnow())
        n = len(rows)
        # A run stamps most rows with the same time: convert each distinct value once.
        codes, uniques = pd.factorize(rows["issued_at"], use_na_sentinel=True)
        issued_at = np.array([self._db_time(u) for u in uniques] + [None], dtype=object)[codes]  # -1: None
        values = {
            "campaign": campaign,
            "customer_id": rows["customer_id"].to_numpy(dtype=object),
            "provider": provider,
            "status": rows["status"].to_numpy(dtype=object),
            "pass_id": _text_or_none(rows["pass_id"]),
            "pass_link": _text_or_none(rows["pass_link"]),
            "fingerprint": rows["fingerprint"].to_numpy(dtype=object),
            "attempts": 1,
            "last_error": _text_or_none(rows["last_error"]),
            "run_id": run_id,
            "created_at": now,
            "updated_at": now,
            "issued_at": issued_at,
        }
        if self.dialect == "postgresql" and n >= PG_COPY_MIN_ROWS:
            as_text = [self._db_time(u).isoformat() for u in uniques] + [None]
            values["issued_at"] = np.array(as_text, dtype=object)[codes]
            return [(_COPY, _copy_payload(rows, values))]
        if self.dialect != "sqlite":
            table = np.empty((n, len(_RECORD_COLUMNS)), dtype=object)
            for i, name in enumerate(_RECORD_COLUMNS):
                table[:, i] = values[name]
            return [(_record_sql(self.dialect, 1), list(zip(*table.T.tolist(), strict=True)))]
        # A link run's batch has three columns that differ per row (customer, pass id, fingerprint):
        # status, link, error and issue time are bound once, not a million times.
        varying = tuple(c for c in _ROW_COLUMNS if c == "customer_id" or not _same_everywhere(values[c]))
        create, insert_many, insert_one, merge, per = _sqlite_record_sql(varying)
        table = np.empty((n, len(varying)), dtype=object)
        for i, name in enumerate(varying):
            table[:, i] = values[name]
        whole = n - n % per  # rows sent in groups of `per`
        statements: list[tuple[str, Any]] = [(create, None), (f"DELETE FROM temp.{_SQLITE_STAGE_TABLE}", None)]
        if whole:
            grouped = table[:whole].reshape(whole // per, per * len(varying))
            statements.append((insert_many, list(map(tuple, grouped.tolist()))))
        if whole < n:
            # tuples zipped from columns: 1e5 short lists from tolist() would keep the GC busy
            statements.append((insert_one, list(zip(*table[whole:].T.tolist(), strict=True))))
        first = {c: values[c][0] for c in _ROW_COLUMNS if c not in varying}
        batch = tuple(first[c] if c in first else values[c] for c in _RECORD_COLUMNS if c not in varying)
        statements.append((_MERGE, None))
        statements.append((merge, batch))
        statements.append((f"DELETE FROM temp.{_SQLITE_STAGE_TABLE}", None))  # free its memory now
        return statements

    def write(self, statements: list[tuple[str, Any]], *, serialize: AbstractContextManager[Any] | None = None) -> None:
        """Execute :meth:`record_statements`: all of them in one transaction, or on SQLite the
        staging inserts in one (a temporary table: no lock on the ledger) and the merge in a second
        one, entered under ``serialize`` (e.g. a lock that lets one bulk writer at a time merge)."""
        if not statements:
            return
        with self.engine.connect() as conn:  # one connection: its temporary table holds the batch
            todo = iter(statements)
            with conn.begin():
                for sql, params in todo:
                    if sql == _MERGE:
                        break
                    self._execute(conn, sql, params)
            rest = list(todo)
            if not rest:
                return
            with serialize or contextlib.nullcontext(), conn.begin():
                for sql, params in rest:
                    self._execute(conn, sql, params)

    @staticmethod
    def _execute(conn: sa.Connection, sql: str, params: Any) -> None:
        if sql == _COPY:
            _copy_upsert(conn, params)
        elif params is None:
            conn.exec_driver_sql(sql)
        else:
            conn.exec_driver_sql(sql, params)

    def _db_time(self, value: Any) -> Any:
        """Timestamps as the driver wants them; for SQLite, the text format SQLAlchemy reads back."""
        ts = pd.Timestamp(value)
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        dt = ts.tz_convert("UTC").to_pydatetime()
        if self.dialect == "sqlite":
            return dt.strftime("%Y-%m-%d %H:%M:%S.%f")
        return dt

    def rows(self, campaign: str, status: str | None = None) -> pd.DataFrame:
        q = sa.select(ledger_table).where(ledger_table.c.campaign == campaign)
        if status:
            q = q.where(ledger_table.c.status == status)
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(q.order_by(ledger_table.c.customer_id)).mappings().all())

    def status_counts(self, campaign: str) -> dict[str, int]:
        q = (
            sa.select(ledger_table.c.status, sa.func.count())
            .where(ledger_table.c.campaign == campaign)
            .group_by(ledger_table.c.status)
        )
        with self.engine.connect() as conn:
            return {s: n for s, n in conn.execute(q).all()}

    # --- runs and the campaign lock ---------------------------------------------------------
    def start_run(self, run_id: str, campaign: str, flow: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                runs_table.insert().values(
                    run_id=run_id, campaign=campaign, flow=flow, started_at=utcnow(), status="running"
                )
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == run_id)
                .values(finished_at=utcnow(), status=status, summary=json.dumps(summary, default=str))
            )

    def acquire_lock(self, campaign: str, run_id: str, shard: tuple[int, int] | None = None) -> None:
        """One active run per campaign — or, for a sharded run (``shard=(index, count)``), per
        (campaign, shard): shards of one split run side by side, while an unsharded run excludes every
        shard and every shard excludes an unsharded run (and shards of a different split).
        A lock left by a dead process (same host) or a stale one is taken over. Heartbeat and release
        with the key :func:`lock_key` gives."""
        host, pid, now = socket.gethostname(), os.getpid(), utcnow()
        key = lock_key(campaign, shard)
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":  # serialise lockers of one campaign (different keys)
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:c))"), {"c": campaign})
                for row in self._lock_conflicts(conn, campaign, key, shard):
                    heartbeat = row["heartbeat_at"]
                    if heartbeat.tzinfo is None:
                        heartbeat = heartbeat.replace(tzinfo=UTC)
                    same_host = row["host"] == host
                    # A live holder on this host keeps its lock however long one batch takes (a slow
                    # vendor): taking it over would let two runs issue the same customers. The
                    # heartbeat only decides for holders on other hosts, whose process we cannot check.
                    holder_alive = _pid_alive(row["pid"]) if same_host else now - heartbeat < STALE_LOCK
                    if holder_alive and row["run_id"] != run_id:
                        raise CampaignLocked(_held_message(campaign, row))
                    conn.execute(locks_table.delete().where(locks_table.c.campaign == row["campaign"]))
                try:
                    conn.execute(
                        locks_table.insert().values(campaign=key, run_id=run_id, host=host, pid=pid, heartbeat_at=now)
                    )
                except sa.exc.IntegrityError:
                    raise _LostRace from None
                # SQLite: the insert waited for any other locker's commit; look again before committing.
                if any(r["run_id"] != run_id for r in self._lock_conflicts(conn, campaign, key, shard)):
                    raise _LostRace
        except _LostRace:
            # Another run took the lock between our look and our insert: say who, like above.
            with self.engine.connect() as conn:
                holders = [r for r in self._lock_conflicts(conn, campaign, key, shard) if r["run_id"] != run_id]
            if holders:
                raise CampaignLocked(_held_message(campaign, holders[0])) from None
            raise CampaignLocked(f"campaign {campaign!r} was locked by another run just now") from None

    def _lock_conflicts(
        self, conn: sa.Connection, campaign: str, key: str, shard: tuple[int, int] | None
    ) -> list[sa.RowMapping]:
        """Lock rows that exclude ``key``: the whole-campaign lock, every shard lock (unsharded
        run), the same shard, and shards of a different count."""
        t = locks_table.c
        prefix = campaign.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/shard-"
        shard_rows = t.campaign.like(prefix + "%", escape="\\")
        cond = sa.or_(t.campaign == campaign, shard_rows)
        rows = conn.execute(sa.select(locks_table).where(cond)).mappings().all()
        if shard is None:
            return list(rows)
        suffix = f"-of-{shard[1]}"
        return [r for r in rows if r["campaign"] in (campaign, key) or not r["campaign"].endswith(suffix)]

    def heartbeat(self, campaign: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                locks_table.update()
                .where(locks_table.c.campaign == campaign, locks_table.c.run_id == run_id)
                .values(heartbeat_at=utcnow())
            )

    def release_lock(self, campaign: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                locks_table.delete().where(locks_table.c.campaign == campaign, locks_table.c.run_id == run_id)
            )


def _copy_payload(rows: pd.DataFrame, values: dict[str, Any]) -> bytes:
    """The rows (``values``: arrays of text, or one value for all) as COPY's CSV (nulls unquoted-empty, strings quoted), written by Arrow in C++: a
    per-row ``write_row`` costs as much as the upsert itself. One upsert statement may touch a key
    once: the last row of a customer wins, as it does with one statement per row."""
    keep = ~rows["customer_id"].duplicated(keep="last").to_numpy()
    n = int(keep.sum())
    columns = []
    for name in _RECORD_COLUMNS:
        value = values[name]
        if isinstance(value, np.ndarray):
            columns.append(pa.array(value[keep], type=pa.string(), from_pandas=True))
        else:
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            columns.append(pa.array(np.full(n, text, dtype=object), type=pa.string()))
    buf = pa.BufferOutputStream()
    pacsv.write_csv(
        pa.Table.from_arrays(columns, names=_RECORD_COLUMNS),
        buf,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    return buf.getvalue().to_pybytes()


def _copy_upsert(conn: sa.Connection, payload: bytes) -> None:
    """Upsert a :func:`_copy_payload` on PostgreSQL via COPY, inside ``conn``'s transaction: the
    staging table empties itself at commit, and a failure rolls back both."""
    create, copy_sql, upsert = _copy_upsert_sql()
    with conn.connection.driver_connection.cursor() as cur:
        cur.execute(create)
        with cur.copy(copy_sql) as copy:
            copy.write(payload)
        cur.execute(upsert)


class _LostRace(Exception):
    """Another run inserted its lock row between our look and our insert."""


def _held_message(campaign: str, row: sa.RowMapping) -> str:
    held = row["campaign"][len(campaign) :].lstrip("/") or "the whole campaign"
    return (
        f"campaign {campaign!r} is already being run ({held}: run {row['run_id']}, host "
        f"{row['host']}, pid {row['pid']}); wait for it to finish, or remove the lock if "
        "that process is gone"
    )


def lock_key(campaign: str, shard: tuple[int, int] | None = None) -> str:
    """The lock row of a run: the campaign, or ``campaign/shard-I-of-N`` for one shard of a split run."""
    return campaign if shard is None else f"{campaign}/shard-{shard[0]}-of-{shard[1]}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (reports, a second run checking the lock) work while a run writes;
    # synchronous=NORMAL is durable across process crashes, which is what resumability needs.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # record()'s staging table holds one batch: in memory, not in a temporary file
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_bulk_pragmas(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record)
    # A bulk writer (see Ledger(bulk_writer=True)): a 64 MB page cache, and no checkpoint inside its
    # commits; durability is unchanged (the WAL is still synced before each checkpoint).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()
