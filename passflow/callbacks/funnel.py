"""The install funnel of a campaign: issued → generated → installed → uninstalled.

Counts are customers, not callbacks: ``installed`` is everyone whose pass was ever in a wallet,
``uninstalled`` everyone who removed it at some point, ``installed_now`` those whose latest status is
installed. ``issued`` comes from the ledger, the rest from ``passflow_install_status``.
"""

from __future__ import annotations

import sqlalchemy as sa

from passflow.store.events import CallbackStore, status_table
from passflow.store.ledger import ledger_table

FUNNEL_KEYS = ("issued", "generated", "failed", "installed", "uninstalled", "installed_now")


def funnel_counts(ledger_url: str, campaign: str) -> dict[str, int]:
    """Customers at each stage of ``campaign`` (keys: ``FUNNEL_KEYS``, all present, zeros included)."""
    store = CallbackStore(ledger_url)
    t = status_table.c
    try:
        with store.engine.connect() as conn:
            issued = conn.execute(
                sa.select(sa.func.count()).where(
                    ledger_table.c.campaign == campaign, ledger_table.c.status == "issued"
                )
            ).scalar_one()
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(t.installed_at),
                    sa.func.count(t.uninstalled_at),
                    sa.func.sum(sa.case((t.status == "installed", 1), else_=0)),
                    sa.func.sum(sa.case((t.status == "failed", 1), else_=0)),
                ).where(t.campaign == campaign)
            ).one()
    finally:
        store.close()
    seen, installed, uninstalled, now, failed = (int(v or 0) for v in row)
    return {
        "issued": int(issued),
        # any callback at all means the pass was generated (N801 may be skipped by the vendor)
        "generated": seen - failed,
        "failed": failed,
        "installed": installed,
        "uninstalled": uninstalled,
        "installed_now": now,
    }
