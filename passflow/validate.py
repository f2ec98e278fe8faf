"""Row validation and normalisation, vectorised over a chunk.

A bad row never stops a run: it becomes a *reject* with the source row number, a reason code (for
the summary) and a human reason (for the analyst). Problems that would hit every row — a missing
column — are configuration errors and stop the run before anything is sent.

Speed: the common cases (clean ids, plain emails, phones already in E.164) are checked with pandas
string operations; only values that need real parsing go through ``email_validator`` or
``phonenumbers`` (~30 µs a call), once per distinct value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

from passflow.contact_rules import e164_fast_ok, email_fast_ok
from passflow.seen import SeenKeys

ROW = "__row__"
REJECT_COLUMNS = ["row", "customer_id", "reason_code", "reason"]

_E164 = r"^\+[1-9][0-9]{6,14}$"
# Separators the fast path removes: only ones phonenumbers' parser also skips (its
# VALID_PUNCTUATION: space, no-break space, brackets, dot, hyphen, slash); a tab or another space
# character makes it NOT_A_NUMBER there, so such values go to the library.
_PHONE_PUNCT_RE2 = r"[ \x{a0}().\-/]"


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
    allow_test_domains: bool = False  # [validation] allow_test_domains: *.test addresses (email_validator)


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


def _normalise_email(
    values: pd.Series, allow_test_domains: bool = False
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Return (normalised, ok, reason) for trimmed emails (validate_chunk trims): domain lower-cased;
    IDN/odd ones via email_validator, whose message is the reason of a reject."""
    ok = pd.Series(email_fast_ok(pa.array(values, from_pandas=True), allow_test_domains), index=values.index)
    out = values.copy()
    reason = pd.Series("", index=values.index, dtype="str")
    # Lower-case the domain only where it has capitals (rare): rpartition is a per-row Python call.
    upper = ok & values.str.contains(r"@.*[A-Z]", regex=True)
    if upper.any():
        parts = values[upper].str.rpartition("@")
        out.loc[upper] = parts[0] + "@" + parts[2].str.lower()
    slow = ~ok & (values != "")
    if slow.any():
        checked, why = {}, {}
        for v in pd.unique(values[slow]):
            try:
                checked[v] = validate_email(
                    v, check_deliverability=False, test_environment=allow_test_domains
                ).normalized
            except EmailNotValidError as exc:
                checked[v], why[v] = None, str(exc)
        mapped = values[slow].map(checked)
        good = mapped.notna()
        out.loc[mapped.index[good]] = mapped[good].astype("str")
        ok.loc[mapped.index[good]] = True
        if why:
            reason.loc[mapped.index[~good]] = values[slow][~good].map(why).astype("str")
    return out, ok, reason


def _normalise_phone(values: pd.Series, region: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Return (E.164, ok, reason). Numbers in international form are checked vectorised against
    phonenumbers' metadata (passflow.contact_rules); anything else is parsed by libphonenumber."""
    compact_arr = pc.replace_substring_regex(pa.array(values, from_pandas=True), _PHONE_PUNCT_RE2, "")
    compact = pd.Series(compact_arr, index=values.index, dtype="str")
    if _idd_is_00(region):  # "00" dials abroad from this region, as the parser reads it
        compact = compact.where(~compact.str.startswith("00"), "+" + compact.str.slice(2))
    ok = compact.str.match(_E164)
    if ok.any():
        shaped = np.flatnonzero(ok.to_numpy())
        fast = e164_fast_ok(pa.array(compact.iloc[shaped], from_pandas=True))
        sure = np.zeros(len(ok), dtype=bool)
        sure[shaped[fast]] = True
        ok = pd.Series(sure, index=values.index)
    out = compact.where(ok, values)
    reason = pd.Series("", index=values.index, dtype="str")
    slow = ~ok & (values != "")  # trimmed by validate_chunk
    if slow.any():
        parsed: dict[str, str | None] = {}
        why: dict[str, str] = {}
        for v in pd.unique(values[slow]):
            parsed[v], text = _parse_phone(v, region)
            if text:
                why[v] = text
        mapped = values[slow].map(parsed)
        good = mapped.notna()
        out.loc[mapped.index[good]] = mapped[good].astype("str")
        ok.loc[mapped.index[good]] = True
        if why:
            reason.loc[mapped.index[~good]] = values[slow][~good].map(why).astype("str")
    return out, ok, reason


_POSSIBLE = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "no such country calling code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "a length no number of that country has",
}


def _parse_phone(value: str, region: str) -> tuple[str | None, str]:
    """(E.164, "") when phonenumbers calls it valid, else (None, why)."""
    try:
        num = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return None, exc._msg if hasattr(exc, "_msg") else str(exc)
    if phonenumbers.is_valid_number(num):
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164), ""
    possible = phonenumbers.is_possible_number_with_reason(num)
    where = phonenumbers.region_code_for_country_code(num.country_code)
    detail = _POSSIBLE.get(possible, "no number range of that country starts so")
    if possible == phonenumbers.ValidationResult.INVALID_COUNTRY_CODE:
        return None, f"{detail} (+{num.country_code})"
    return None, f"{detail} (+{num.country_code}, {where})"


@functools.cache
def _idd_is_00(region: str) -> bool:
    md = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    return md is not None and md.international_prefix == "00"


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
        email, ok, why = _normalise_email(df["email"], rules.allow_test_domains)
        empty = df["email"] == ""
        if rules.require_email:
            rejects.add(df, empty, "missing_email", "email is empty (required by [validation] require_email)")
        invalid = ~ok & ~empty
        if invalid.any():  # the reasons are text for every row: build them only when needed
            rejects.add(
                df, invalid, "invalid_email", "email '" + df["email"] + "' is not a valid address: " + why
            )
        keep = ~invalid & ~(empty & rules.require_email)
        df = df.assign(email=email).loc[keep]

    if len(df):
        phone, ok, why = _normalise_phone(df["phone"], rules.default_region)
        empty = df["phone"] == ""
        if rules.require_phone:
            rejects.add(df, empty, "missing_phone", "phone is empty (required by [validation] require_phone)")
        invalid = ~ok & ~empty
        if invalid.any():
            rejects.add(
                df,
                invalid,
                "invalid_phone",
                "phone '"
                + df["phone"]
                + "' is not a valid number: "
                + why
                + f" (default region {rules.default_region})",
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
