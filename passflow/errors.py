"""Exception types shared across passflow.

Every error a user can cause (a bad campaign file, an unreadable segment, a missing secret) is a
`PassflowError` subclass whose message says what is wrong and how to fix it; the CLI prints the
message without a traceback. Messages never contain secret values.
"""

from __future__ import annotations


class PassflowError(Exception):
    """Base class for errors that are reported to the user as a clear message."""


class ConfigError(PassflowError):
    """A campaign file (or an override) is invalid. The message names the file, the key and the fix."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ""
        if file:
            where = f"{file}: "
        if key:
            where += f"[{key}] "
        super().__init__(f"{where}{message}")


class SourceError(PassflowError):
    """The segment source cannot be read at all (as opposed to a bad row, which is a reject)."""


class TemplateError(PassflowError):
    """A per-customer template is invalid (syntax, forbidden construct) — a configuration problem."""


class RejectRateExceeded(PassflowError):
    """More rows were rejected than the campaign allows; nothing was issued."""


class VendorError(PassflowError):
    """A vendor call failed in a way that stops the run (e.g. the failure threshold was reached)."""


class RunStopped(PassflowError):
    """The run was asked to stop (SIGTERM): in-flight calls finished and were recorded, nothing exported."""
