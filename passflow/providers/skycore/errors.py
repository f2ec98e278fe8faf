"""Skycore's published error codes and what passflow does with each: the one table (docs/skycore-errors.md
is generated from the same rows and checked against it by a test).

Source: Skycore's API error table (legacy numbering, which API v3 keeps; vendor-facts S7, S12). Classes:

* ``config`` — the account or the request setup is wrong (key, rights, activation, IP allow-list): the
  run stops at the first call with the fix, rows and events stay open for the rerun.
* ``throttle`` — the account's call rate / throughput was exceeded: retried with backoff, and the run's
  limiter slows down.
* ``limit`` — the account's request quota is used up: the run stops, resumably (the rerun continues).
* ``pass`` — this pass or its data was refused: the row fails with code and text, no retry.

A code not in the table fails the row with its code and text and is never retried blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorClass = Literal["config", "throttle", "limit", "pass"]

__all__ = ["SKYCORE_ERRORS", "ErrorClass", "SkycoreError", "classify", "markdown_table"]


@dataclass(frozen=True)
class SkycoreError:
    code: str
    meaning: str
    cls: ErrorClass
    fix: str


_ROWS: tuple[SkycoreError, ...] = (
    SkycoreError("E100", "invalid request", "pass", "check the request body (a passflow bug if it persists)"),
    SkycoreError(
        "E101",
        "'action' required / invalid action",
        "config",
        "the API URL must be the account's API URL from Skycore API Settings ([skycore] api_url)",
    ),
    SkycoreError(
        "E102",
        "API key required",
        "config",
        'set [skycore] api_key (from API Settings); on the pre-2021 key scheme set [skycore] api_key_in = "body"',
    ),
    SkycoreError(
        "E103", "md5 password required", "config", "legacy user/password auth: use an API key instead"
    ),
    SkycoreError(
        "E104",
        "authentication failed",
        "config",
        "the API key was refused: copy the current key from Skycore API Settings into the secret [skycore] api_key",
    ),
    SkycoreError("E105", "no API rights", "config", "ask Skycore to enable API access for this account"),
    SkycoreError(
        "E106", "API may be called only every X seconds", "throttle", "lower [limits] max_per_second"
    ),
    SkycoreError(
        "E107", "no rights for this action", "config", "ask Skycore to enable this API action for the account"
    ),
    SkycoreError(
        "E108", "request parse error", "pass", "check the request body (a passflow bug if it persists)"
    ),
    SkycoreError("E109", "API not activated", "config", "activate the API in Skycore API Settings"),
    SkycoreError(
        "E112",
        "IP address not whitelisted",
        "config",
        "add this machine's public IP to the allow-list in Skycore API Settings",
    ),
    SkycoreError("E113", "throughput exceeded", "throttle", "lower [limits] max_per_second / max_in_flight"),
    SkycoreError(
        "E120",
        "account request limit reached",
        "limit",
        "wait for the account's quota to reset (API Settings shows it), then rerun: finished rows are kept",
    ),
    SkycoreError("E801", "pass-template-id required", "pass", "set [updates] pass_template_id"),
    SkycoreError(
        "E802", "pass-template-id invalid", "pass", "check [updates] pass_template_id against Skycore"
    ),
    SkycoreError("E807", "pass data id required", "pass", "the row has no pass-id"),
    SkycoreError("E808", "pass data id invalid (deleted or not this account's)", "pass", "check the pass-id"),
    SkycoreError(
        "E809", "pass not updated (Skycore internal error)", "pass", "rerun later; ask Skycore if it persists"
    ),
    SkycoreError("E830", "pass not generated (Skycore internal error)", "pass", "rerun later"),
    SkycoreError(
        "E831", "pass not generated (download limit)", "pass", "raise the template's download limit"
    ),
)

SKYCORE_ERRORS: dict[str, SkycoreError] = {r.code: r for r in _ROWS}


def classify(code: str | None) -> SkycoreError | None:
    """The table's row for ``code``; ``None`` for a code Skycore does not publish."""
    return SKYCORE_ERRORS.get(code or "")


def markdown_table() -> str:
    """The table as Markdown rows (what docs/skycore-errors.md holds)."""
    lines = ["| code | meaning | passflow | fix |", "|---|---|---|---|"]
    lines += [f"| {r.code} | {r.meaning} | {r.cls} | {r.fix} |" for r in _ROWS]
    return "\n".join(lines)
