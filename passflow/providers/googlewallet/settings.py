"""The campaign's ``[googlewallet]`` section: the issuer, the pass class, the object template and the
service account whose key signs save links and gets OAuth tokens.

Google publishes the Wallet API in full (developers.google.com/wallet: the JWT reference, the REST
reference of classes and objects); every name here follows it. Where Google states no number, the
setting is named and marked as an assumption (``max_link_chars``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from passflow.config import StrictModel as _Model
from passflow.secrets import SecretRef

# Class types as the REST reference names their resources (…/walletobjects/v1/<type>Object) and the
# JWT reference names their payload arrays (payload.<type>Objects).
CLASS_TYPES = ("loyalty", "offer", "giftCard", "eventTicket", "generic")
ClassType = Literal["loyalty", "offer", "giftCard", "eventTicket", "generic"]
# Fields the REST reference marks required on an object, beyond id and classId (state has a default).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "loyalty": (),
    "offer": (),
    "giftCard": ("cardNumber",),
    "eventTicket": (),
    "generic": ("cardTitle", "header"),
}
# "<issuer id>.<identifier>", the identifier of alphanumerics, '.', '_' or '-' (REST reference: id).
SUFFIX_RE = r"^[A-Za-z0-9._-]+$"
API_BASE = "https://walletobjects.googleapis.com/walletobjects/v1"
SAVE_LINK_BASE = "https://pay.google.com/gp/v/save"
SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"


class GoogleWalletSettings(_Model):
    issuer_id: str = Field(description="The issuer id from the Google Pay & Wallet Console (digits)")
    class_suffix: str = Field(description="The pass class's id after '<issuer id>.'")
    class_type: ClassType = "loyalty"
    object_suffix: str = Field(
        "{{ customer.customer_id }}", description="Template: the object's id after '<issuer id>.'"
    )
    #: the object's fields; string leaves are templates over the row. A leaf under a key named
    #: ``int`` (e.g. loyaltyPoints.balance.int) is sent as an integer, as the reference types it.
    object: dict[str, Any] = Field(default_factory=dict)
    service_account_key: SecretRef = Field(description="The service account's key JSON (a reference)")
    issuance: Literal["links", "api"] = "links"
    origins: list[str] = Field(default_factory=list, description="JWT origins (sites showing the button)")
    save_link_base: str = SAVE_LINK_BASE
    # Assumption: Google documents no exact figure for the save link; browsers and SMS/email clients
    # cut URLs beyond ~2,000 characters, which is what Google's guidance to keep JWTs short is about.
    max_link_chars: int = Field(2000, ge=200, le=100_000)
    api_base_url: str = API_BASE
    token_uri: str | None = Field(None, description="OAuth token endpoint (default: the key's token_uri)")

    @field_validator("issuer_id")
    @classmethod
    def _issuer(cls, v: str) -> str:
        if not re.match(r"^[0-9]{5,25}$", v):
            raise ValueError("must be the issuer id from the Google Pay & Wallet Console, digits only")
        return v

    @field_validator("class_suffix")
    @classmethod
    def _class(cls, v: str) -> str:
        if not re.match(SUFFIX_RE, v):
            raise ValueError("only letters, digits, '.', '_' and '-' (Google Wallet id rule)")
        return v

    @field_validator("save_link_base", "api_base_url", "token_uri")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s?#]+$", v):
            raise ValueError("must be an http(s) URL without '?' or '#'")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _object(self) -> GoogleWalletSettings:
        for key in ("id", "classId"):
            if key in self.object:
                raise ValueError(f"[googlewallet.object] {key} is built by passflow; remove it")
        missing = [f for f in REQUIRED_FIELDS[self.class_type] if f not in self.object]
        if missing:
            raise ValueError(
                f"a {self.class_type} object needs {', '.join(missing)} in [googlewallet.object] "
                "(Google Wallet REST reference)"
            )
        return self

    @property
    def class_id(self) -> str:
        return f"{self.issuer_id}.{self.class_suffix}"
