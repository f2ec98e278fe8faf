"""Alembic's environment for the ledger database.

passflow runs it through :mod:`passflow.store.migrate`, which hands over a connection that is
already inside the upgrade's one transaction (and holds the database's migration lock), so every
revision of an upgrade commits together or not at all. Run by hand (``alembic -c ...``), it opens
``sqlalchemy.url`` itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from passflow.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: autogenerate writes batch operations (copy and move).
        render_as_batch=True,
        compare_type=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("passflow's migrations run online only: passflow db upgrade --ledger URL")
_run_online()
