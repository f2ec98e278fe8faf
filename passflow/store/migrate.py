"""Schema revisions of a ledger database: Alembic migrations, and the check made when one is opened.

* An empty database is created at the head revision.
* A database with passflow's tables and no ``alembic_version`` (made by passflow before migrations,
  up to commit 6f50e4d) is revision ``0001`` unstamped: upgrading it creates what that revision has
  and it lacks, stamps it, and runs the later revisions.
* Behind head: a SQLite file (the embedded ledger, one user's file) is upgraded on open; any other
  database (PostgreSQL, shared by deployments and upgraded by its operator) stops with the command
  to run, ``passflow db upgrade --ledger URL``.
* Ahead of head (a newer passflow upgraded it): stop, never write to it.

An upgrade is one transaction (PostgreSQL's DDL is transactional; SQLite's is too once the driver
is told to leave transactions to us) holding the database's migration lock, so processes that open
one new or old database at the same moment upgrade it once and never see it half done.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Engine, make_url

from passflow.errors import ConfigError
from passflow.store.schema import metadata

MIGRATIONS = Path(__file__).with_name("migrations")
#: What passflow before migrations could have made (revision 0001 creates any that are missing).
LEGACY_TABLES = frozenset({
    "passflow_ledger", "passflow_runs", "passflow_locks", "passflow_update_history", "passflow_update_events",
    "passflow_update_baseline", "passflow_pass_events", "passflow_install_status", "passflow_pass_index",
    "passflow_inbox_files",
})  # fmt: skip
# Any fixed 64-bit key: the PostgreSQL advisory lock that makes upgraders of one database take turns.
_MIGRATION_LOCK_KEY = 0x70617373666C6F77  # "passflow"

# URLs of server databases found at head by this process: checked once, not at every open.
_AT_HEAD: set[str] = set()


class SchemaBehind(ConfigError):
    """The ledger database is at an older revision and is not upgraded automatically."""


class SchemaTooNew(ConfigError):
    """The ledger database was upgraded by a newer passflow than this one."""


@dataclass(frozen=True)
class SchemaState:
    revision: str | None  # alembic_version's, None when the table is absent
    legacy: bool  # passflow tables without alembic_version: revision 0001, not stamped yet

    @property
    def empty(self) -> bool:
        return self.revision is None and not self.legacy

    def describe(self) -> str:
        if self.revision is not None:
            return f"revision {self.revision}"
        return "revision 0001 (made before migrations; not stamped)" if self.legacy else "empty"


@functools.cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    rev = script_directory().get_current_head()
    assert rev is not None, "passflow ships at least one revision"
    return rev


def is_embedded(url: URL) -> bool:
    """A SQLite file: upgraded when opened (a server database waits for ``passflow db upgrade``)."""
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def read_state(conn: sa.Connection) -> SchemaState:
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is not None:
        return SchemaState(revision, legacy=False)
    legacy = bool(LEGACY_TABLES & set(sa.inspect(conn).get_table_names()))
    return SchemaState(None, legacy=legacy)


def _stamped_revision(conn: sa.Connection) -> str | None:
    """alembic_version's revision by one plain query; None when there is no such table (or no row)."""
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except sa.exc.DBAPIError:  # no table yet; the connection's transaction is rolled back on exit
        conn.rollback()
        return None


def known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError for an id none of our revisions has
        return False


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _refuse_if_newer(state: SchemaState, url: URL) -> None:
    if state.revision is not None and not known(state.revision):
        raise SchemaTooNew(
            f"the ledger at {_safe(url)} is at schema revision {state.revision}, which this passflow "
            f"does not know (its newest is {head()}): a newer passflow upgraded it. Run that version "
            "(or a later one) against this ledger; this one will not write to it",
            key="ledger.url",
        )


def ensure_current(engine: Engine, *, auto_upgrade: bool | None = None) -> None:
    """Make sure the database behind ``engine`` is at head, or stop with what to do.

    ``auto_upgrade``: upgrade an older database here; by default only a SQLite file is. A server
    database found at head is remembered for the process; a SQLite file is looked at on every open
    (one local read on the connection the ledger keeps anyway), so a file replaced under the same
    path is never trusted from memory.
    """
    key = engine.url.render_as_string(hide_password=False)  # a dict key in memory, never printed
    if key in _AT_HEAD:
        return
    target = head()
    with engine.connect() as conn:
        if _stamped_revision(conn) == target:  # the usual case: one query
            if not is_embedded(engine.url):
                _AT_HEAD.add(key)
            return
        state = read_state(conn)
    if state.revision != target:
        _refuse_if_newer(state, engine.url)
        automatic = is_embedded(engine.url) if auto_upgrade is None else auto_upgrade
        if not (state.empty or automatic):
            raise SchemaBehind(
                f"the ledger at {_safe(engine.url)} has passflow schema {state.describe()}; this "
                f"passflow needs revision {target}. Back it up, then upgrade it once: "
                f"passflow db upgrade --ledger '{_safe(engine.url)}' (with the real password in place "
                "of ***, or give the campaign file instead of --ledger)",
                key="ledger.url",
            )
        if _in_memory(engine.url):
            _upgrade_in_memory(engine)
            return  # each in-memory database is new: nothing to remember
        upgrade(engine.url)
    if not is_embedded(engine.url):
        _AT_HEAD.add(key)


def _in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _upgrade_in_memory(engine: Engine) -> None:
    """An in-memory SQLite database lives in its engine's connection: migrate through that one."""
    with engine.begin() as conn:
        _run_upgrade(conn, "head")


@contextmanager
def _migration_connection(url: URL) -> Iterator[sa.Connection]:
    """A connection in one transaction that holds the database's migration lock."""
    kwargs: dict[str, Any] = {"poolclass": sa.pool.NullPool}
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        kwargs["connect_args"] = {"timeout": 30}
    engine = sa.create_engine(url, **kwargs)
    if sqlite:
        # pysqlite commits before DDL on its own; take transactions over (SQLAlchemy's documented
        # recipe) so an upgrade is atomic, and BEGIN IMMEDIATE: the write lock is the migration lock.
        @sa.event.listens_for(engine, "connect")
        def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as conn:
            if url.get_backend_name() == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            yield conn
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> tuple[SchemaState, SchemaState]:
    """Upgrade the database to ``revision`` (head by default); (state before, state after).

    Safe to run at any time and by several processes at once: a database at the target is left
    alone, and upgraders take turns."""
    url = make_url(url)
    with _migration_connection(url) as conn:
        before = read_state(conn)
        _refuse_if_newer(before, url)
        _run_upgrade(conn, revision)
        after = read_state(conn)
    return before, after


def _run_upgrade(conn: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn  # env.py runs the revisions in this transaction
    command.upgrade(config, revision)


def current(url: str | URL) -> SchemaState:
    engine = sa.create_engine(make_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return read_state(conn)
    finally:
        engine.dispose()


def check(url: str | URL) -> list[Any]:
    """The differences between :mod:`.schema` and the database (Alembic autogenerate's list; empty
    when the migrations produce exactly what the code declares)."""
    engine = sa.create_engine(make_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()
