"""When a run should stop sending: refused credentials at once, otherwise the campaign's
``[limits] failure_threshold`` share of failed calls once ``failure_min_calls`` calls were made.

Shared by issuance and pass updates, so both stop for the same reasons with the same words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the campaign model imports the provider registry
    from passflow.config import Limits



class FailureStop:
    """Counts call results; ``reason`` is set (and stays) once the run should stop sending."""

    def __init__(self, limits: Limits, vendor: str, *, see: str = "the failed rows") -> None:
        self.limits = limits
        self.vendor = vendor
        self.see = see
        self.results = 0
        self.failures = 0
        self.reason: str | None = None

    def record(self, ok: bool, *, refused: str | None = None) -> None:
        """One finished call. ``refused``: the vendor's message when it refused the credentials or
        account — every further call would fail the same way, so stop now."""
        self.results += 1
        if ok:
            return
        self.failures += 1
        if refused is not None and self.reason is None:
            self.reason = f"stopped: {refused}"
        lim = self.limits
        if self.reason is None and self.results >= lim.failure_min_calls:
            share = self.failures / self.results
            if share >= lim.failure_threshold:
                self.reason = (
                    f"stopped early: {self.failures} of {self.results} {self.vendor} calls failed "
                    f"({share:.0%} ≥ failure_threshold {lim.failure_threshold:.0%}); the campaign looks "
                    f"misconfigured — see {self.see} for the vendor's messages"
                )
