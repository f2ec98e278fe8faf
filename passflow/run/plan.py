"""Planning a batch against the ledger: which staged rows need a pass now. Pure: no I/O, no state.

Per customer of a batch, from its ledger row (if any) and the fingerprint of what would be sent now:

============================  ==================================================================
ledger says                   plan
============================  ==================================================================
nothing                       **new**: issue
issued, same fingerprint      **unchanged**: skip, export the pass it has
issued, other fingerprint     **changed**: issue again if the issuer re-issues changed rows
                              (links); else keep the pass (API passes are updated, not re-created)
pending                       **pending**: a run died mid-call; reconcile with the vendor first,
                              then issue what was not created
failed                        **failed before**: retry
============================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the ledger columns a plan reads, as ``prev_<name>`` next to the staged row
LEDGER_COLUMNS = ["customer_id", "status", "fingerprint", "pass_id", "pass_link", "issued_at"]


@dataclass
class Plan:
    """A batch joined with its ledger rows, and a boolean mask per kind (aligned with ``rows``)."""

    rows: pd.DataFrame  # the staged columns + prev_status, prev_fingerprint, prev_pass_id, …
    new: pd.Series
    unchanged: pd.Series
    changed: pd.Series
    reissue: pd.Series  # changed rows that get a new pass
    pending: pd.Series
    failed_before: pd.Series

    @property
    def todo(self) -> pd.Series:
        """Rows that need a vendor call (pending rows the reconciliation did not settle included)."""
        return self.new | self.reissue | self.pending | self.failed_before

    @property
    def kept(self) -> pd.Series:
        """Rows that keep the pass they have (exported as they are)."""
        return self.unchanged | (self.changed & ~self.reissue)

    def settled(self, customer_ids: set[str]) -> None:
        """Pending rows the vendor lookup resolved: no longer to do."""
        if customer_ids:
            self.pending = self.pending & ~self.rows["customer_id"].isin(customer_ids)


def empty_ledger_rows() -> pd.DataFrame:
    return pd.DataFrame(columns=LEDGER_COLUMNS)


def plan_batch(batch: pd.DataFrame, ledger_rows: pd.DataFrame, *, reissue_changed: bool) -> Plan:
    """Plan ``batch`` (staged rows: customer_id, fingerprint, …) against ``ledger_rows`` (LEDGER_COLUMNS
    of the customers the ledger knows)."""
    prev = ledger_rows.rename(columns=lambda c: c if c == "customer_id" else f"prev_{c}")
    rows = batch.merge(prev, on="customer_id", how="left")
    status = rows["prev_status"]
    issued_before = status == "issued"
    same = rows["fingerprint"] == rows["prev_fingerprint"]
    changed = issued_before & ~same
    return Plan(
        rows=rows,
        new=status.isna(),
        unchanged=issued_before & same,
        changed=changed,
        reissue=changed & reissue_changed,
        pending=status == "pending",
        failed_before=status == "failed",
    )
