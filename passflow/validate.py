"""Row validation and normalisation, vectorised over a chunk.

A bad row never stops a run: it becomes a *reject* with the source row number, a reason code (for
the summary) and a human reason (for the analyst). Problems that would hit every row — a missing
column — are configuration errors and stop the run before anything is sent.

Speed: the common cases (clean ids, plain emails, phones already in E.164) are checked with pandas
string operations; only values that need real parsing go through ``email_validator`` or
``phonenumbers`` (~30 µs a call), once per distinct value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

from passflow.seen import SeenKeys

ROW = "__row__"
REJECT_COLUMNS = ["row", "customer_id", "reason_code", "reason"]

# A pragmatic ASCII address check (RFC 5322 dot-atom local part, LDH domain with a dot).
_EMAIL_FAST = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_E164 = r"^\+[1-9][0-9]{6,14}$"
_PHONE_PUNCT = r"[\s().\-/]"
# The same class for pyarrow's RE2, with Python's \s (str.isspace, Unicode) spelled out: pandas would
# run a \s pattern through `re` row by row. tests/test_staging.py checks the two agree.
_PY_SPACE_RE2 = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
)
_PHONE_PUNCT_RE2 = "[" + _PY_SPACE_RE2 + r"().\-/]"


@dataclass
class Rejects:
    """Rejected rows of one chunk, in the shape of the rejects file."""

    frames: list[pd.DataFrame] = field(default_factory=list)

    def add(self, df: pd.DataFrame, mask: pd.Series | np.ndarray, code: str, reason: str | pd.Series) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        sub = df.loc[mask]
        reasons = reason[mask] if isinstance(reason, pd.Series) else reason
        self.frames.append(
            pd.DataFrame(
                {
                    "row": sub[ROW].to_numpy(),
                    "customer_id": sub["customer_id"].to_numpy() if "customer_id" in sub else "",
                    "reason_code": code,
                    "reason": np.asarray(reasons, dtype=object)
                    if isinstance(reasons, pd.Series)
                    else reasons,
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.frames:
            return pd.DataFrame(
                {c: pd.Series(dtype="int64" if c == "row" else "str") for c in REJECT_COLUMNS}
            )
        out = pd.concat(self.frames, ignore_index=True)
        return out.sort_values("row", kind="stable").reset_index(drop=True)

    def __len__(self) -> int:
        return sum(len(f) for f in self.frames)


@dataclass(frozen=True)
class FieldRules:
    customer_id: str
    email: str | None
    phone: str | None
    require_email: bool
    require_phone: bool
    default_region: str


def check_columns(columns: list[str], rules: FieldRules, template_columns: set[str], source: str) -> None:
    """Stop before anything runs when the segment lacks a column the campaign needs."""
    from passflow.errors import ConfigError

    present = set(columns)
    needed = {("columns.customer_id", rules.customer_id)}
    if rules.require_email and rules.email:
        needed.add(("columns.email", rules.email))
    if rules.require_phone and rules.phone:
        needed.add(("columns.phone", rules.phone))
    missing = sorted((key, col) for key, col in needed if col not in present)
    missing += sorted(
        ("templates", c) for c in template_columns - present if c not in {"customer_id", "email", "phone"}
    )
    if missing:
        what = ", ".join(f"'{col}' (needed by {key})" for key, col in missing)
        raise ConfigError(
            f"segment {source} has no column {what}. Columns found: {', '.join(sorted(present)) or '(none)'}. "
            "Fix the [columns] mapping or the templates in the campaign file."
        )


def _normalise_email(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (normalised, ok) for trimmed emails (validate_chunk trims): domain lower-cased;
    IDN/odd ones via email_validator."""
    ok = values.str.match(_EMAIL_FAST) & (values.str.len() <= 254)
    out = values.copy()
    # Lower-case the domain only where it has capitals (rare): rpartition is a per-row Python call.
    upper = ok & values.str.contains(r"@.*[A-Z]", regex=True)
    if upper.any():
        parts = values[upper].str.rpartition("@")
        out.loc[upper] = parts[0] + "@" + parts[2].str.lower()
    slow = ~ok & (values != "")
    if slow.any():
        checked = {}
        for v in pd.unique(values[slow]):
            try:
                checked[v] = validate_email(v, check_deliverability=False).normalized
            except EmailNotValidError:
                checked[v] = None
        mapped = values[slow].map(checked)
        good = mapped.notna()
        out.loc[mapped.index[good]] = mapped[good].astype("str")
        ok.loc[mapped.index[good]] = True
    return out, ok


def _normalise_phone(values: pd.Series, region: str) -> tuple[pd.Series, pd.Series]:
    """Return (E.164, ok). E.164 input passes a syntax check; anything else is parsed by libphonenumber."""
    compact = pd.Series(
        pc.replace_substring_regex(pa.array(values, from_pandas=True), _PHONE_PUNCT_RE2, ""),
        index=values.index,
        dtype="str",
    )
    compact = compact.where(~compact.str.startswith("00"), "+" + compact.str.slice(2))
    ok = compact.str.match(_E164)
    out = compact.where(ok, values)
    slow = ~ok & (values != "")  # trimmed by validate_chunk
    if slow.any():
        parsed: dict[str, str | None] = {}
        for v in pd.unique(values[slow]):
            try:
                num = phonenumbers.parse(v, region)
                parsed[v] = (
                    phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_valid_number(num)
                    else None
                )
            except phonenumbers.NumberParseException:
                parsed[v] = None
        mapped = values[slow].map(parsed)
        good = mapped.notna()
        out.loc[mapped.index[good]] = mapped[good].astype("str")
        ok.loc[mapped.index[good]] = True
    return out, ok


def validate_chunk(
    df: pd.DataFrame, rules: FieldRules, seen_ids: SeenKeys | None, rejects: Rejects
) -> pd.DataFrame:
    """Normalise a chunk and return its good rows; bad rows go to ``rejects``.

    The returned frame has the source columns plus canonical ``customer_id`` / ``email`` / ``phone``.
    ``seen_ids`` is the run's set of customer ids (duplicates are rejected last); ``None`` skips that
    run-wide check, for a worker process that validates a chunk while the run applies it in order.
    """
    df = df.copy()
    df["customer_id"] = df[rules.customer_id].str.strip()
    for name, col in (("email", rules.email), ("phone", rules.phone)):
        df[name] = df[col].str.strip() if col and col in df.columns else ""

    bad = df["customer_id"] == ""
    rejects.add(df, bad, "missing_customer_id", "customer id is empty")
    df = df.loc[~bad]

    ctrl = df["customer_id"].str.contains(r"[\x00-\x1f\x7f]", regex=True)
    rejects.add(df, ctrl, "invalid_customer_id", "customer id contains control characters")
    df = df.loc[~ctrl]

    if len(df):
        email, ok = _normalise_email(df["email"])
        empty = df["email"] == ""
        if rules.require_email:
            rejects.add(df, empty, "missing_email", "email is empty (required by [validation] require_email)")
        invalid = ~ok & ~empty
        if invalid.any():  # the reasons are text for every row: build them only when needed
            rejects.add(df, invalid, "invalid_email", "email '" + df["email"] + "' is not a valid address")
        keep = ~invalid & ~(empty & rules.require_email)
        df = df.assign(email=email).loc[keep]

    if len(df):
        phone, ok = _normalise_phone(df["phone"], rules.default_region)
        empty = df["phone"] == ""
        if rules.require_phone:
            rejects.add(df, empty, "missing_phone", "phone is empty (required by [validation] require_phone)")
        invalid = ~ok & ~empty
        if invalid.any():
            rejects.add(
                df,
                invalid,
                "invalid_phone",
                "phone '" + df["phone"] + f"' is not a valid number (default region {rules.default_region})",
            )
        keep = ~invalid & ~(empty & rules.require_phone)
        df = df.assign(phone=phone).loc[keep]

    # Duplicates last, so a bad first row does not shadow a good later one.
    if len(df) and seen_ids is not None:
        df = reject_duplicate_ids(df, seen_ids.check_and_add(df["customer_id"], df[ROW]).to_numpy(), rejects)
    return df


def reject_duplicate_ids(df: pd.DataFrame, first: np.ndarray, rejects: Rejects) -> pd.DataFrame:
    """Reject the rows of ``df`` whose customer id was seen before (``first``: that row, or -1)."""
    dup = first >= 0
    if not dup.any():
        return df
    sub = df.loc[dup]
    reason = (
        "duplicate customer id (first seen at row " + pd.Series(first[dup], index=sub.index).astype(str) + ")"
    )
    rejects.add(sub, np.ones(len(sub), dtype=bool), "duplicate_customer_id", reason)
    return df.loc[~dup]
