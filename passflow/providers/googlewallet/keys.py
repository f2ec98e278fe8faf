"""The service account's key: the JSON file Google Cloud's console downloads (``type``,
``client_email``, ``private_key_id``, ``private_key`` as PEM, ``token_uri``).

The parsed key is held in memory only; its PEM is registered for redaction, and nothing here puts
any part of the key into an error message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from passflow.errors import ConfigError
from passflow.secrets import register_secret

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class ServiceAccountKey:
    client_email: str
    private_key_id: str
    token_uri: str
    #: the key JSON as given (for google-auth's Credentials.from_service_account_info)
    info: dict[str, Any] = field(repr=False)

    @cached_property
    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the service account key is not an RSA key (Google issues RSA-2048 keys)")
        return key

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __reduce__(self) -> Any:  # workers rebuild it from the JSON (a cached RSA key cannot pickle)
        return (ServiceAccountKey, (self.client_email, self.private_key_id, self.token_uri, self.info))


def parse_key(text: str, *, where: str = "googlewallet.service_account_key") -> ServiceAccountKey:
    """The key from its JSON text; a ConfigError naming what is missing (never echoing the value)."""
    try:
        info = json.loads(text)
    except ValueError:
        raise ConfigError(
            f"{where}: the value is not JSON; it must hold the service account's key file as downloaded "
            "from Google Cloud (IAM → Service accounts → Keys → Add key → JSON)",
            key=where,
        ) from None
    if not isinstance(info, dict):
        raise ConfigError(f"{where}: the key JSON must be an object", key=where)
    missing = [k for k in ("client_email", "private_key", "private_key_id") if not info.get(k)]
    if missing:
        raise ConfigError(f"{where}: the key JSON has no {', '.join(missing)}", key=where)
    if info.get("type", "service_account") != "service_account":
        raise ConfigError(
            f"{where}: the key JSON is not a service account key (type {info.get('type')!r})", key=where
        )
    register_secret(info["private_key"])
    key = ServiceAccountKey(
        client_email=info["client_email"],
        private_key_id=info["private_key_id"],
        token_uri=info.get("token_uri") or DEFAULT_TOKEN_URI,
        info=info,
    )
    try:
        key.private_key  # noqa: B018 - fail now, with the key's file named, not in the middle of a run
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: private_key is not a PEM-encoded RSA private key", key=where) from None
    return key


def generate_key_info(client_email: str, key_id: str, token_uri: str = DEFAULT_TOKEN_URI) -> dict[str, Any]:
    """A fresh RSA-2048 service-account key JSON (the sandbox's demo key, tests)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": client_email.split("@")[-1].split(".")[0],
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": "000000000000000000000",
        "token_uri": token_uri,
    }
