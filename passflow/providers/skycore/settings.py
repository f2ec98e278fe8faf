"""The campaign's ``[skycore]`` section: how Skycore issuance links are built and signed, and the
account's API URL and key."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from passflow.config import StrictModel as _Model
from passflow.secrets import SecretRef


class SkycoreSettings(_Model):
    link_base: str = Field(description="The link from Skycore's 'Get Link', up to (not including) '?'")
    params: dict[str, str] = Field(description="Query parameters in link order: name = template")
    salt: SecretRef | None = None
    salt_position: Literal["append", "prepend"] = "append"
    hex_case: Literal["lower", "upper"] = "lower"
    hash_input: Literal["raw", "encoded"] = "raw"
    pass_id_param: str = "pass-id"
    # The API (updates, doctor): Skycore API Settings show one API URL and the key for every call.
    api_url: str | None = Field(None, description="The account's API URL from Skycore API Settings")
    api_key: SecretRef | None = Field(None, description="The API key (a secret reference)")
    api_key_in: Literal["header", "body"] = Field(
        "header", description='"header" = X-Api-Key (since 2021); "body" = api-key field (older accounts)'
    )

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError("must be the http(s) API URL shown in Skycore API Settings")
        return v

    @field_validator("link_base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s?#]+$", v):
            raise ValueError(
                "must be an http(s) URL without '?' or '#', e.g. https://d2c.skycore.com/wallet/gc/LINKID; "
                "put the parameters under [skycore.params]"
            )
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError('needs at least one parameter, e.g. "pass-id" = "{{ customer.customer_id }}"')
        if "checksum" in v:
            raise ValueError("'checksum' is computed by passflow; remove it from [skycore.params]")
        return v
