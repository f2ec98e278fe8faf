"""The schema passflow made with create_all up to commit 6f50e4d (before migrations).

Revision ID: 0001
Revises:
Create Date: 2026-12-07

A database those versions made has some or all of these tables and no ``alembic_version``: the
update, callback and inbox tables were created on first use. Upgrading it runs this revision, which
creates only what is missing (tables, and the indexes of tables it finds), so an old ledger ends up
exactly like a new one and is then stamped; an empty database gets everything.

The definitions are copied, not imported from ``passflow.store.schema``: a revision describes the
schema as it was then, whatever the code says later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _tables() -> list[tuple[str, list[sa.SchemaItem], list[tuple[str, list[str], bool]]]]:
    """(name, columns and constraints, indexes as (name, columns, unique)) of every table."""
    return [
        ("passflow_ledger", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("customer_id", sa.String(255), primary_key=True),
            sa.Column("provider", sa.String(32), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("pass_id", sa.Text),
            sa.Column("pass_link", sa.Text),
            sa.Column("fingerprint", sa.String(64)),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("run_id", sa.String(64)),
            sa.Column("created_at", TZ, nullable=False),
            sa.Column("updated_at", TZ, nullable=False),
            sa.Column("issued_at", TZ),
        ], []),
        ("passflow_runs", [
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("campaign", sa.String(100), nullable=False),
            sa.Column("flow", sa.String(64), nullable=False),
            sa.Column("started_at", TZ, nullable=False),
            sa.Column("finished_at", TZ),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("summary", sa.Text),
        ], [("ix_passflow_runs_campaign", ["campaign"], False)]),
        ("passflow_locks", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("heartbeat_at", TZ, nullable=False),
        ], []),
        ("passflow_update_history", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("campaign", sa.String(100), nullable=False),
            sa.Column("customer_id", sa.String(255), nullable=False),
            sa.Column("provider", sa.String(32), nullable=False),
            sa.Column("pass_id", sa.Text),
            sa.Column("action", sa.String(100), nullable=False),
            sa.Column("source", sa.String(32), nullable=False),
            sa.Column("event_key", sa.Text),
            sa.Column("request", sa.Text),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("error_code", sa.String(64)),
            sa.Column("error", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("created_at", TZ, nullable=False),
        ], [("ix_passflow_update_history_customer", ["campaign", "customer_id"], False)]),
        ("passflow_update_events", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("event_key", sa.String(255), primary_key=True),
            sa.Column("customer_id", sa.String(255), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("handled_at", TZ, nullable=False),
        ], []),
        ("passflow_update_baseline", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("customer_id", sa.String(255), primary_key=True),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("updated_at", TZ, nullable=False),
        ], []),
        ("passflow_pass_events", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("provider", sa.String(32), nullable=False),
            sa.Column("campaign", sa.String(100), nullable=False),
            sa.Column("customer_id", sa.String(255), nullable=False),
            sa.Column("pass_id", sa.Text),
            sa.Column("event", sa.String(16), nullable=False),
            sa.Column("vendor_event_id", sa.String(255), nullable=False),
            sa.Column("occurred_at", TZ, nullable=False),
            sa.Column("received_at", TZ, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.UniqueConstraint("provider", "vendor_event_id", name="uq_passflow_pass_events_vendor_id"),
        ], [("ix_passflow_pass_events_campaign_event", ["campaign", "event", "occurred_at"], False)]),
        ("passflow_install_status", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("customer_id", sa.String(255), primary_key=True),
            sa.Column("provider", sa.String(32), nullable=False),
            sa.Column("pass_id", sa.Text),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("status_at", TZ, nullable=False),
            sa.Column("installed_at", TZ),
            sa.Column("uninstalled_at", TZ),
            sa.Column("updated_at", TZ, nullable=False),
        ], []),
        ("passflow_pass_index", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("pass_id", sa.Text, primary_key=True),
            sa.Column("customer_id", sa.String(255), nullable=False),
        ], []),
        ("passflow_inbox_files", [
            sa.Column("campaign", sa.String(100), primary_key=True),
            sa.Column("sha256", sa.String(64), primary_key=True),
            sa.Column("file_name", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("run_id", sa.String(64)),
            sa.Column("received_at", TZ, nullable=False),
            sa.Column("report", sa.Text),
        ], []),
    ]  # fmt: skip


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, items, indexes in _tables():
        if name not in existing:
            op.create_table(name, *items)
            have: set[str | None] = set()
        else:
            have = {ix["name"] for ix in inspector.get_indexes(name)}
        for ix_name, columns, unique in indexes:
            if ix_name not in have:
                op.create_index(ix_name, name, columns, unique=unique)


def downgrade() -> None:
    for name, _items, _indexes in reversed(_tables()):
        op.drop_table(name)
