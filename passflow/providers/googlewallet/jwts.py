"""Save-to-Wallet JWTs (Google Wallet JWT reference): build, sign RS256, verify.

A save link is ``https://pay.google.com/gp/v/save/<jwt>``; the JWT's claims are ``iss`` (the service
account's email), ``aud`` = ``google``, ``typ`` = ``savetowallet``, ``iat``, ``origins`` and
``payload.<type>Objects`` = [the object]. Signing is the whole cost (one RSA-2048 private-key
operation per link), so the rest is kept to one ``json.dumps`` and two base64 encodings per row;
verification uses PyJWT, an implementation independent of the signer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from passflow.providers.googlewallet.keys import ServiceAccountKey

SIG_B64_CHARS = 342  # an RSA-2048 signature (256 bytes) in unpadded base64url


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_len(n_bytes: int) -> int:
    return (4 * n_bytes + 2) // 3


def header_b64(key_id: str) -> str:
    return b64url(json.dumps({"alg": "RS256", "kid": key_id, "typ": "JWT"}, separators=(",", ":")).encode())


def claims_json(*, iss: str, iat: int, origins: Sequence[str], payload_key: str, objects_json: str) -> str:
    """The claims as compact JSON text, with the already-serialised object(s) spliced in."""
    head = json.dumps({"iss": iss, "aud": "google", "typ": "savetowallet", "iat": iat, "origins": list(origins)},
                      separators=(",", ":"))  # fmt: skip
    return f'{head[:-1]},"payload":{{"{payload_key}":[{objects_json}]}}}}'


def link_length(prefix_len: int, header_len: int, claims_bytes: int) -> int:
    """The exact length of a signed link, known before signing (the signature's size is fixed)."""
    return prefix_len + header_len + 1 + b64url_len(claims_bytes) + 1 + SIG_B64_CHARS


def sign_all(key: ServiceAccountKey, claims: Iterable[str]) -> list[str]:
    """Compact RS256 JWTs for every claims text, in order (one chunk per call: no per-row set-up)."""
    sign = key.private_key.sign
    pad, sha = padding.PKCS1v15(), hashes.SHA256()
    head = header_b64(key.private_key_id) + "."
    out = []
    for text in claims:
        signing_input = head + b64url(text.encode("utf-8"))
        out.append(signing_input + "." + b64url(sign(signing_input.encode("ascii"), pad, sha)))
    return out


def fingerprint(iss: str, origins: Sequence[str], payload_key: str, objects_json: str) -> str:
    """What a save link carries except ``iat``: a rerun with the same object is "unchanged"."""
    return hashlib.sha256(f"{iss}\n{','.join(origins)}\n{payload_key}\n{objects_json}".encode()).hexdigest()


def token_of(link: str) -> str:
    """The JWT of a save link (or the JWT itself)."""
    return link.rstrip("/").rsplit("/", 1)[-1]


def verify(token: str, public_key: Any, *, max_age_s: int | None = None) -> dict[str, Any]:
    """The claims of a save-link JWT whose RS256 signature verifies; raises ``jwt.InvalidTokenError``."""
    claims = pyjwt.decode(
        token,
        public_key,
        algorithms=["RS256"],
        audience="google",
        options={"require": ["iss", "aud", "iat", "typ", "payload"], "verify_iat": True},
    )
    if claims.get("typ") != "savetowallet":
        raise pyjwt.InvalidTokenError("typ must be 'savetowallet'")
    if max_age_s is not None:
        import time

        if claims["iat"] < time.time() - max_age_s:
            raise pyjwt.InvalidTokenError("issued too long ago")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})
