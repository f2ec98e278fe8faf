"""``passflow verify-link`` for save links: the signature against the service account's public key,
and the object the link carries, decoded.

The key is the campaign's (``--campaign``), else the key JSON in ``GOOGLE_WALLET_SA_KEY``, else the
sandbox's demo key — the report says which one was used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jwt as pyjwt

from passflow.providers.googlewallet import jwts
from passflow.providers.googlewallet.keys import ServiceAccountKey, parse_key
from passflow.providers.googlewallet.sandbox import demo_key_json

KEY_ENV = "GOOGLE_WALLET_SA_KEY"


def recognises(link: str) -> bool:
    return "/gp/v/save/" in link and jwts.token_of(link).count(".") == 2


def _key(campaign: Any) -> tuple[ServiceAccountKey, str]:
    if campaign is not None:
        from passflow.providers.googlewallet.issuer import load_campaign_key
        from passflow.providers.googlewallet.sandbox import sandbox_target

        ref = campaign.settings.service_account_key
        if sandbox_target(campaign) is not None and ref.env and not os.environ.get(ref.env):
            return parse_key(demo_key_json()), f"the sandbox's demo key (the campaign's {ref.env} is unset)"

        return load_campaign_key(campaign), f"the key of campaign {campaign.campaign.name}"
    if os.environ.get(KEY_ENV):
        return parse_key(os.environ[KEY_ENV], where=KEY_ENV), f"the key in {KEY_ENV}"
    return parse_key(demo_key_json()), f"the sandbox's demo key ({KEY_ENV} is unset)"


def checker(campaign: Any) -> Callable[[str], str | None]:
    key, _ = _key(campaign)
    public = key.private_key.public_key()

    def check(link: str) -> str | None:
        try:
            claims = jwts.verify(jwts.token_of(link), public)
        except pyjwt.InvalidTokenError as exc:
            return f"JWT does not verify: {exc}"
        if claims["iss"] != key.client_email:
            return f"iss {claims['iss']!r} is not the key's service account {key.client_email!r}"
        return None

    return check


def explain(link: str, campaign: Any) -> tuple[str, bool]:
    key, which = _key(campaign)
    try:
        claims = jwts.unverified_claims(jwts.token_of(link))
    except pyjwt.InvalidTokenError as exc:
        return f"invalid save link: {exc}", False
    reason = checker(campaign)(link)
    objects = {k: v for k, v in claims.get("payload", {}).items() if isinstance(v, list)}
    lines = [
        f"Google Wallet save link from {claims.get('iss')} (iat {claims.get('iat')}, origins {claims.get('origins')})"
    ]
    for kind, items in objects.items():
        for obj in items:
            lines.append(f"  {kind}: {json.dumps(obj, ensure_ascii=False)}")
    lines.append(f"  {'VALID' if reason is None else 'INVALID: ' + reason} — checked with {which}")
    return "\n".join(lines), reason is None
