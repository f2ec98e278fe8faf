"""Every table passflow keeps in a ledger database, in one ``MetaData``.

This is the schema at the migrations' head: a change here is a new Alembic revision in
``passflow/store/migrations/versions/`` (``tests/test_migrations.py`` fails while the two differ).
The code that reads and writes each table lives next door: :mod:`.ledger` (ledger, runs, locks),
:mod:`.updates` (update history, handled events, diff baseline), :mod:`.events` (callbacks) and
:mod:`passflow.inbox` (files taken from the inbox).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# --- issuance: passflow.store.ledger -----------------------------------------------------------

ledger_table = sa.Table(
    "passflow_ledger",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("pass_id", sa.Text),
    sa.Column("pass_link", sa.Text),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True)),
    # No secondary indexes: bulk upserts of a million rows are the hot path of a link run, and
    # every read is by (campaign, customer_id).
)

runs_table = sa.Table(
    "passflow_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("campaign", sa.String(100), nullable=False, index=True),
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text),
)

locks_table = sa.Table(
    "passflow_locks",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)

# --- updates: passflow.store.updates -----------------------------------------------------------

history_table = sa.Table(
    "passflow_update_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("pass_id", sa.Text),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),  # diff | events | customers | prefect
    sa.Column("event_key", sa.Text),
    sa.Column("request", sa.Text),  # JSON of what was sent (never headers or keys)
    sa.Column("status", sa.String(16), nullable=False),  # sent | failed | skipped
    sa.Column("error_code", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_passflow_update_history_customer", "campaign", "customer_id"),
)

handled_table = sa.Table(
    "passflow_update_events",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("event_key", sa.String(255), primary_key=True),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
)

baseline_table = sa.Table(
    "passflow_update_baseline",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# --- vendor callbacks: passflow.store.events ---------------------------------------------------

# An interface: the update path's events source reads it (event = 'uninstalled' → void).
events_table = sa.Table(
    "passflow_pass_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("pass_id", sa.Text),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("vendor_event_id", sa.String(255), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.UniqueConstraint("provider", "vendor_event_id", name="uq_passflow_pass_events_vendor_id"),
    sa.Index("ix_passflow_pass_events_campaign_event", "campaign", "event", "occurred_at"),
)

status_table = sa.Table(
    "passflow_install_status",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("pass_id", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_at", sa.DateTime(timezone=True), nullable=False),  # occurred_at of the deciding event
    sa.Column("installed_at", sa.DateTime(timezone=True)),  # latest install / add
    sa.Column("uninstalled_at", sa.DateTime(timezone=True)),  # latest uninstall / remove
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# pass id → customer, filled from the ledger on demand: the ledger itself has no pass_id index (it
# would slow every bulk issuance write), and a scan per callback costs ~0.4 s at 300k passes.
pass_index_table = sa.Table(
    "passflow_pass_index",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("pass_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.String(255), nullable=False),
)

# --- the analysts' inbox: passflow.inbox -------------------------------------------------------

# Content hashes of files taken from the inbox.
inbox_files = sa.Table(
    "passflow_inbox_files",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.Text, nullable=False),
    # processed (done: a re-drop is a duplicate), partial (some rows failed at the vendor: a re-drop
    # retries them), failed (nothing done: a re-drop runs again)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("report", sa.Text),
)
