"""Row validation: rejects with row numbers and reasons; normalisation of emails and phones."""

from __future__ import annotations

import pandas as pd
import pytest

from passflow.errors import ConfigError
from passflow.validate import FieldRules, Rejects, SeenKeys, check_columns, validate_chunk

RULES = FieldRules(
    customer_id="id", email="mail", phone="tel", require_email=True, require_phone=False, default_region="CZ"
)


def chunk(rows: list[tuple[str, str, str]], start: int = 2) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["id", "mail", "tel"], dtype="str")
    df["__row__"] = range(start, start + len(df))
    return df


def test_good_rows_are_normalised() -> None:
    rejects = Rejects()
    out = validate_chunk(
        chunk(
            [
                (" C1 ", " Jane.Doe@Example.COM ", "+420 601 234 567"),
                ("C2", "zoë@exämple.cz", "601 234 568"),
                ("C3", "a+b@x.io", ""),
                ("C4", "o'brien@example.com", "00420601234569"),
            ]
        ),
        RULES,
        SeenKeys(),
        rejects,
    )
    assert len(rejects) == 0
    assert out["customer_id"].tolist() == ["C1", "C2", "C3", "C4"]
    assert out["email"].tolist()[0] == "Jane.Doe@example.com"  # local part kept, domain lower-cased
    assert out["phone"].tolist() == ["+420601234567", "+420601234568", "", "+420601234569"]


def test_bad_rows_become_rejects_with_row_and_reason() -> None:
    rejects = Rejects()
    out = validate_chunk(
        chunk(
            [
                ("", "a@b.cz", ""),
                ("C2", "not-an-email", ""),
                ("C3", "", ""),
                ("C4", "x@y.cz", "12"),
                ("C5", "ok@y.cz", ""),
                ("C5", "dup@y.cz", ""),
                ("C\x007", "ok@y.cz", ""),
            ]
        ),
        RULES,
        SeenKeys(),
        rejects,
    )
    assert out["customer_id"].tolist() == ["C5"]
    rej = rejects.frame()
    assert rej[["row", "reason_code"]].values.tolist() == [
        [2, "missing_customer_id"],
        [3, "invalid_email"],
        [4, "missing_email"],
        [5, "invalid_phone"],
        [7, "duplicate_customer_id"],
        [8, "invalid_customer_id"],
    ]
    assert "first seen at row 6" in rej.loc[rej["row"] == 7, "reason"].item()
    assert "not-an-email" in rej.loc[rej["row"] == 3, "reason"].item()


def test_duplicates_across_chunks_point_at_the_first_row() -> None:
    seen, rejects = SeenKeys(), Rejects()
    validate_chunk(chunk([("A", "a@x.cz", ""), ("B", "b@x.cz", "")], start=2), RULES, seen, rejects)
    out = validate_chunk(chunk([("B", "b2@x.cz", ""), ("C", "c@x.cz", "")], start=4), RULES, seen, rejects)
    assert out["customer_id"].tolist() == ["C"]
    assert rejects.frame()["reason"].tolist() == ["duplicate customer id (first seen at row 3)"]


def test_seen_keys_many_chunks() -> None:
    seen = SeenKeys()
    total_dups = 0
    for c in range(20):
        keys = pd.Series([f"k{(c * 700 + i) % 10_000}" for i in range(1000)], dtype="str")
        rows = pd.Series(range(c * 1000, c * 1000 + 1000))
        total_dups += int((seen.check_and_add(keys, rows) >= 0).sum())
    assert total_dups == 20_000 - 10_000


def test_missing_columns_stop_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="'id' \\(needed by columns.customer_id\\)"):
        check_columns(["mail", "tel"], RULES, set(), "seg.csv")
    with pytest.raises(ConfigError, match="'first_name' \\(needed by templates\\)"):
        check_columns(["id", "mail"], RULES, {"first_name"}, "seg.csv")
    check_columns(["id", "mail"], RULES, {"mail"}, "seg.csv")  # phone optional, templates satisfied
