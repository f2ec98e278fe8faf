"""CRM import limits on attribute values, as rules a run applies before anything is issued.

MoEngage keeps the first 512 characters of a longer value, and Braze takes strings of 255
characters or fewer (:mod:`passflow.exports.formats`). A cut link is a broken link — its checksum
no longer verifies — so a value over the limit is never truncated: the row is rejected while
staging, with the column, its length and the CRM's limit as the reason, and nothing is issued for
it. Where a link is known only after the vendor created the pass (API providers), a too-long
returned link makes that row a failed row with the same reason, and it is not exported.

Both checks are pure and vectorised: byte lengths from the Arrow offsets, and characters counted
only for the (rare) cells longer in bytes than the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from passflow.exports.formats import ExportFormat, FormatSettings
from passflow.validate import Rejects

__all__ = ["REJECT_CODE", "ValueLimits", "fail_long_values", "reject_long_values", "value_limits"]

REJECT_CODE = "value_too_long"
# The frame columns whose values the formats export as attribute values (the customer id included).
_VALUE_COLUMNS = ("customer_id", "pass_id", "pass_link")


@dataclass(frozen=True)
class ValueLimits:
    """Per frame column: the most characters any enabled format accepts, and which format that is."""

    max_chars: dict[str, tuple[int, str]]

    def __bool__(self) -> bool:
        return bool(self.max_chars)


def value_limits(formats: Iterable[tuple[ExportFormat, FormatSettings | None]]) -> ValueLimits:
    """The value-length rules of a campaign's export formats and their ``[export.<format>]``
    sections (the strictest per column wins)."""
    rules: dict[str, tuple[int, str]] = {}
    for fmt, settings in formats:
        limit = fmt.value_chars_limit(settings)
        if limit is None:
            continue
        for column in (*_VALUE_COLUMNS, *fmt.pass_through):
            if column not in rules or limit < rules[column][0]:
                rules[column] = (limit, fmt.title)
    return ValueLimits(rules)


def _char_lengths(series: pd.Series, limit: int) -> np.ndarray:
    """Per cell, its length in characters where that exceeds ``limit``, else 0. Cells of at most
    ``limit`` bytes cannot exceed it, so only longer ones are counted: the byte lengths come from the
    Arrow offsets without reading the data, which keeps the check off a 1M-row run's profile."""
    values = pa.array(series, from_pandas=True)  # zero-copy for pandas' pyarrow-backed `str` dtype
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    out = np.zeros(len(values), dtype=np.int64)
    maybe = pc.fill_null(pc.greater(pc.binary_length(values), limit), False).to_numpy(zero_copy_only=False)
    if maybe.any():
        pos = np.flatnonzero(maybe)
        chars = pc.utf8_length(values.take(pa.array(pos))).to_numpy(zero_copy_only=False)
        out[pos] = np.where(chars > limit, chars, 0)
    return out


def _too_long(frame: pd.DataFrame, limits: ValueLimits) -> tuple[np.ndarray, pd.Series | None]:
    """Rows with a value over its limit, and for those rows the reason (the first such column)."""
    bad = np.zeros(len(frame), dtype=bool)
    reasons: pd.Series | None = None
    for column, (limit, title) in limits.max_chars.items():
        if column not in frame.columns or len(frame) == 0:
            continue
        lengths = _char_lengths(frame[column], limit)
        over = lengths > 0
        new = over & ~bad
        if not new.any():
            continue
        text = pd.Series(
            (
                f"{column} is " + pd.Series(lengths[new]).astype(str) + f" characters; {title} accepts at most "
                f"{limit} per attribute value (a cut value would be wrong, so it is not exported)"
            ).to_numpy(),
            index=frame.index[new],
        )
        reasons = text if reasons is None else pd.concat([reasons, text])
        bad |= over
    return bad, reasons


def reject_long_values(prepared: pd.DataFrame, limits: ValueLimits, rejects: Rejects) -> pd.DataFrame:
    """``prepared`` without the rows that break a value limit; those become rejects with the reason."""
    if not limits or prepared.empty:
        return prepared
    bad, reasons = _too_long(prepared, limits)
    if not bad.any():
        return prepared
    assert reasons is not None
    rejects.add(prepared, bad, REJECT_CODE, reasons.reindex(prepared.index).fillna(""))
    return prepared.loc[~bad]


def fail_long_values(outcomes: pd.DataFrame, limits: ValueLimits) -> pd.DataFrame:
    """Vendor outcomes with every issued row whose returned values break a limit turned into a
    failed row (status ``failed``, the reason in ``last_error``); values are kept as the vendor sent them."""
    if not limits or outcomes.empty or "status" not in outcomes.columns:
        return outcomes
    bad, reasons = _too_long(outcomes, limits)
    bad &= (outcomes["status"] == "issued").to_numpy(dtype=bool)
    if not bad.any():
        return outcomes
    assert reasons is not None
    out = outcomes.copy()
    out.loc[bad, "status"] = "failed"
    out.loc[bad, "last_error"] = reasons.reindex(out.index[bad]).to_numpy()
    return out
