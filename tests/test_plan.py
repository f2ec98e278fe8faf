"""Planning a batch against the ledger (passflow.run.plan): one row per case, table-driven."""

from __future__ import annotations

import pandas as pd
import pytest

from passflow.run.plan import LEDGER_COLUMNS, plan_batch

KINDS = ("new", "unchanged", "changed", "reissue", "pending", "failed_before")

# (ledger status, ledger fingerprint, fingerprint now, issuer re-issues changed rows) -> kinds, todo, kept
CASES = [
    (None, None, "a", True, {"new"}, True, False),
    (None, None, "a", False, {"new"}, True, False),
    ("issued", "a", "a", True, {"unchanged"}, False, True),
    ("issued", "a", "a", False, {"unchanged"}, False, True),
    ("issued", "a", "b", True, {"changed", "reissue"}, True, False),  # links: a new link
    ("issued", "a", "b", False, {"changed"}, False, True),  # API passes: updated, never re-created
    ("pending", "a", "a", True, {"pending"}, True, False),
    ("pending", "a", "b", False, {"pending"}, True, False),
    ("failed", "a", "a", True, {"failed_before"}, True, False),
    ("failed", None, "b", False, {"failed_before"}, True, False),
]


@pytest.mark.parametrize(("status", "prev_fp", "fp", "reissue_changed", "kinds", "todo", "kept"), CASES)
def test_plan_cases(status, prev_fp, fp, reissue_changed, kinds, todo, kept) -> None:  # noqa: ANN001
    batch = pd.DataFrame({"customer_id": ["c1"], "fingerprint": [fp]})
    ledger = pd.DataFrame(columns=LEDGER_COLUMNS)
    if status is not None:
        ledger = pd.DataFrame([{"customer_id": "c1", "status": status, "fingerprint": prev_fp, "pass_id": "P1",
                                "pass_link": None, "issued_at": None}])  # fmt: skip
    plan = plan_batch(batch, ledger, reissue_changed=reissue_changed)
    got = {k for k in KINDS if bool(getattr(plan, k).iloc[0])}
    assert got == kinds
    assert bool(plan.todo.iloc[0]) is todo and bool(plan.kept.iloc[0]) is kept


def test_plan_keeps_batch_order_and_settles_reconciled_rows() -> None:
    batch = pd.DataFrame({"customer_id": ["c3", "c1", "c2"], "fingerprint": ["x", "y", "z"]})
    ledger = pd.DataFrame([
        {"customer_id": "c1", "status": "pending", "fingerprint": "y", "pass_id": None, "pass_link": None, "issued_at": None},
        {"customer_id": "c2", "status": "pending", "fingerprint": "z", "pass_id": None, "pass_link": None, "issued_at": None},
    ])  # fmt: skip
    plan = plan_batch(batch, ledger, reissue_changed=True)
    assert plan.rows["customer_id"].tolist() == ["c3", "c1", "c2"]
    assert plan.todo.tolist() == [True, True, True]
    plan.settled({"c2"})  # the vendor lookup found c2's pass
    assert plan.todo.tolist() == [True, True, False] and plan.pending.tolist() == [False, True, False]
