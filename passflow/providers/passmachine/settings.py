"""The campaign's ``[passmachine]`` section: the account, its credentials, the pass template and the
values rendered per customer. Where Passmachine publishes nothing (all of its API, see
``docs/sandbox-protocol.md``), the choice is a named setting: ``auth_style``, ``token_field``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from passflow.config import StrictModel as _Model
from passflow.secrets import SecretRef


class PassmachineSettings(_Model):
    api_base_url: str = Field(description="https://api.passmachine.cz, or the sandbox's /passmachine URL")
    account: str
    template_id: str
    public_token: SecretRef
    secret_token: SecretRef
    template_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    auth_style: Literal["basic", "headers"] = "basic"
    token_field: str = "token"
    token_ttl_s: int = Field(3600, ge=60)
    lookup_metadata_key: str = Field("registered", description="Metadata key carrying our customer id")

    @field_validator("api_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://\S+$", v):
            raise ValueError("must be an http(s) URL such as https://api.passmachine.cz")
        return v.rstrip("/")


