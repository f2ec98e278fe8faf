"""Install-status attributes (``<provider>_pass_install_status`` …) that the exports of campaigns
with vendor callbacks carry after the pass attributes."""

from __future__ import annotations

import pandas as pd

__all__ = ["INSTALL_STATUS_ATTRS", "install_status_columns", "with_install_status"]

#: Attributes added for campaigns with vendor callbacks (``[callbacks]``), after the pass attributes.
INSTALL_STATUS_ATTRS = ("pass_install_status", "pass_installed_at", "pass_uninstalled_at")


def install_status_columns(provider: str) -> list[str]:
    """``<provider>_pass_install_status``, ``…_installed_at``, ``…_uninstalled_at``."""
    return [f"{provider}_{a}" for a in INSTALL_STATUS_ATTRS]


def with_install_status(rows: pd.DataFrame, status: pd.DataFrame, provider: str) -> pd.DataFrame:
    """``rows`` plus the install-status attributes of each customer (empty cells where no callback came).

    ``status``: ``customer_id``, ``status``, ``installed_at``, ``uninstalled_at`` (tz-aware), as
    :meth:`passflow.store.events.CallbackStore.install_status` returns it. Times are ISO 8601 UTC,
    like ``<provider>_pass_gendate``.
    """
    def iso(col: str) -> pd.Series:
        ts = pd.to_datetime(status[col], utc=True)
        return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ").fillna("")

    status_col, installed_col, uninstalled_col = install_status_columns(provider)
    attrs = pd.DataFrame(
        {
            "customer_id": status["customer_id"].astype("str"),
            status_col: status["status"].astype("str"),
            installed_col: iso("installed_at"),
            uninstalled_col: iso("uninstalled_at"),
        }
    )
    out = rows.drop(columns=[c for c in attrs.columns[1:] if c in rows.columns])
    out = out.merge(attrs, on="customer_id", how="left", validate="many_to_one")
    for col in attrs.columns[1:]:
        out[col] = out[col].fillna("").astype("str")
    return out


