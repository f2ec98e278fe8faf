"""Authenticating vendor callbacks.

Two schemes, chosen per campaign in ``[callbacks] auth``:

* ``signature`` (default): ``X-Passflow-Timestamp: <unix seconds>`` and
  ``X-Passflow-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``. The timestamp
  is inside the signature, so a captured callback cannot be replayed outside ``max_age_s``.
* ``token``: ``X-Passflow-Token: <secret>``, for vendors that can only add a fixed header. Weaker (no
  replay window of its own); replays of a recorded callback are still recorded once.

Every comparison is constant-time. A failure says what was wrong (missing header, stale timestamp,
bad signature) but never echoes the secret or what was sent in its place.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Literal

TIMESTAMP_HEADER = "X-Passflow-Timestamp"
SIGNATURE_HEADER = "X-Passflow-Signature"
TOKEN_HEADER = "X-Passflow-Token"
AuthScheme = Literal["signature", "token"]


class CallbackAuthError(Exception):
    """A callback we refuse: ``status`` is 401 (no credentials) or 403 (wrong ones)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Passflow-Signature`` value for ``body`` sent at ``timestamp`` (the vendor's side)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Headers a vendor (the sandbox) sends with a signed callback."""
    ts = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body), "Content-Type": "application/json"}


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    schemes: tuple[AuthScheme, ...] = ("signature",),
    max_age_s: float = 300.0,
    now: float | None = None,
) -> AuthScheme:
    """Check a callback's credentials; return the scheme that accepted it or raise CallbackAuthError.

    ``headers`` must be case-insensitive (Starlette's are).
    """
    if "signature" in schemes and headers.get(SIGNATURE_HEADER) is not None:
        ts = headers.get(TIMESTAMP_HEADER)
        if not ts:
            raise CallbackAuthError(401, f"missing {TIMESTAMP_HEADER} header")
        try:
            sent = int(ts)
        except ValueError:
            raise CallbackAuthError(401, f"{TIMESTAMP_HEADER} must be unix seconds") from None
        if abs((time.time() if now is None else now) - sent) > max_age_s:
            raise CallbackAuthError(403, f"stale timestamp: outside the {max_age_s:g} s replay window")
        if not hmac.compare_digest(sign(secret, ts, body).encode(), headers[SIGNATURE_HEADER].encode()):
            raise CallbackAuthError(403, "signature does not match")
        return "signature"
    if "token" in schemes and headers.get(TOKEN_HEADER) is not None:
        if not hmac.compare_digest(secret.encode(), headers[TOKEN_HEADER].encode()):
            raise CallbackAuthError(403, "token does not match")
        return "token"
    wanted = " or ".join(SIGNATURE_HEADER if s == "signature" else TOKEN_HEADER for s in schemes)
    raise CallbackAuthError(401, f"missing credentials: send {wanted}")
