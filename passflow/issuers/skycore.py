"""Skycore issuer: signed pass issuance links, pure computation (no vendor call to make).

Prepare renders the link parameters from templates, enforces Skycore's rules on them (``pass-id``
alphanumeric, unique within the run) and signs the links, all vectorised over the chunk. Delivery
is just "issued now": the link is the pass until the customer opens it.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from passflow.config import Campaign
from passflow.issuers.base import (
    OUTCOME_COLUMNS,
    DeliveryContext,
    Issuer,
    campaign_vars,
    compile_templates,
    render_fields,
)
from passflow.providers.skycore_links import LinkRecipe, build_links
from passflow.secrets import resolve_secret
from passflow.validate import ROW, Rejects, SeenKeys

_ALNUM = r"^[A-Za-z0-9]+$"


class SkycoreLinkIssuer(Issuer):
    provider = "skycore"
    extra_columns = ["pass_id", "pass_link"]

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        sky = campaign.skycore
        assert sky is not None
        self.settings = sky
        self.salt = (
            resolve_secret(sky.salt, file=str(campaign.path), key="skycore.salt").get_secret_value()
            if sky.salt
            else None
        )
        self.recipe = LinkRecipe(salt_position=sky.salt_position, hex_case=sky.hex_case, hash_input=sky.hash_input)
        self.templates = compile_templates(
            sky.params, section="skycore.params", campaign_vars=campaign_vars(campaign.campaign), now=now
        )
        self.pass_ids = SeenKeys()

    def template_columns(self) -> set[str]:
        return set().union(*(t.columns for t in self.templates.values()))

    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        df, values = render_fields(self.templates, df, rejects)
        pid_param = self.settings.pass_id_param
        if pid_param in values:
            pass_id = values[pid_param]
            bad = ~pass_id.str.match(_ALNUM)
            rejects.add(
                df,
                bad,
                "invalid_pass_id",
                f"{pid_param} '" + pass_id + "' must be non-empty and only A-Z, a-z, 0-9 (Skycore rule)",
            )
            df, values = df.loc[~bad], values.loc[~bad]
            first = self.pass_ids.check_and_add(values[pid_param], df[ROW])
            dup = first >= 0
            rejects.add(
                df,
                dup,
                "duplicate_pass_id",
                f"{pid_param} '" + values[pid_param] + "' is already used by row " + first.astype(str),
            )
            df, values = df.loc[~dup], values.loc[~dup]
            pass_id = values[pid_param]
        else:
            pass_id = pd.Series("", index=df.index, dtype="str")
        if df.empty:
            return pd.DataFrame(columns=[ROW, "customer_id", "email", "phone", "fingerprint", *self.extra_columns])
        signed = build_links(
            self.settings.link_base,
            [(name, values[name]) for name in self.settings.params],
            salt=self.salt,
            recipe=self.recipe,
        )
        return pd.DataFrame(
            {
                ROW: df[ROW],
                "customer_id": df["customer_id"],
                "email": df["email"],
                "phone": df["phone"],
                # The checksum covers every value sent (and the salt): it is the fingerprint.
                "fingerprint": signed.checksums.str.lower(),
                "pass_id": pass_id,
                "pass_link": signed.links,
            }
        )

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext, ledger: object) -> pd.DataFrame:
        out = todo[["customer_id", "pass_id", "pass_link", "fingerprint"]].copy()
        out["status"] = "issued"
        out["last_error"] = None
        out["issued_at"] = ctx.now
        return out[OUTCOME_COLUMNS]
