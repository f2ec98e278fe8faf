"""Secret references and their resolution.

A campaign file never holds a secret value. It holds a reference:

* ``{ env = "SKYCORE_LINK_SALT" }`` — an environment variable, or
* ``{ prefect_secret = "skycore-link-salt" }`` — a Prefect Secret block.

Resolved values are wrapped in :class:`pydantic.SecretStr` (its ``repr``/``str`` print ``**********``)
and registered with :func:`redact`, the last line of defence for any text shown to a user.

This module is passflow's one redaction mechanism: clients hold credentials in :class:`Secret` (never
shown, never pickled), register every credential they derive (a Basic header, a bearer token) with
:func:`register_secret`, and pass any vendor or error text through :func:`redact` before it reaches
a log, an exception, a result or the ledger.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from passflow.errors import ConfigError

_known_secrets: set[str] = set()
# Short-lived credentials (bearer tokens rotate every hour or so): the most recent ones only.
_transient: deque[str] = deque(maxlen=64)
_lock = threading.Lock()
MIN_SECRET_LEN = 4  # masking very short strings would garble ordinary text; real credentials are long


class Secret:
    """A credential that never shows itself in ``repr``, ``str`` or f-strings, and is never pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle a credential into a Prefect result or cache
        raise TypeError("Secret values cannot be pickled")


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    prefect_secret: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literals(cls, data: object) -> object:
        if isinstance(data, str):
            raise ValueError(
                'secrets must be references, not values: write { env = "VAR_NAME" } or '
                '{ prefect_secret = "block-name" } and keep the value out of the file'
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if bool(self.env) == bool(self.prefect_secret):
            raise ValueError('set exactly one of env = "VAR_NAME" or prefect_secret = "block-name"')
        return self

    def describe(self) -> str:
        return f"env var {self.env}" if self.env else f"Prefect Secret block {self.prefect_secret!r}"


def resolve_secret(ref: SecretRef, *, file: str | None, key: str) -> SecretStr:
    """Return the secret's value, or stop with a message naming the file, key and the fix."""
    if ref.env:
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError(
                f"environment variable {ref.env} is not set (export {ref.env}=… before running, "
                "or reference a Prefect Secret block instead)",
                file=file,
                key=key,
            )
    else:
        try:
            from prefect.blocks.system import Secret

            value = Secret.load(ref.prefect_secret).get()
        except Exception as exc:  # noqa: BLE001 - any load failure is a configuration problem
            raise ConfigError(
                f"cannot load Prefect Secret block {ref.prefect_secret!r} ({type(exc).__name__}); create it "
                f"with `prefect block create secret` or use {{ env = \"VAR\" }}",
                file=file,
                key=key,
            ) from None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"Prefect Secret block {ref.prefect_secret!r} is empty", file=file, key=key)
    register_secret(value)
    return SecretStr(value)


def register_secret(value: str, *, transient: bool = False) -> None:
    """Remember a secret value so :func:`redact` can mask it in any text. ``transient``: a short-lived
    credential (a bearer token), of which the most recent ones are kept."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _lock:
            if transient:
                if value not in _transient:
                    _transient.append(value)
            else:
                _known_secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret value in ``text`` with ``***``."""
    with _lock:
        secrets = sorted({*_known_secrets, *_transient}, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text
