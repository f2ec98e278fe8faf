"""Google Wallet save links (``issuance = "links"``): pure computation, like Skycore's links.

Prepare renders each customer's object, checks its id, and signs the save-link JWT; the link's
length is known before signing, so a row whose link would be too long is rejected first. Delivery
is "issued now". Signing in ``prepare_rows`` puts it in the staging worker processes, one per core,
for big segments (:mod:`passflow.run.staging`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd

from passflow.config import Campaign
from passflow.providers.base import OUTCOME_COLUMNS, DeliveryContext, Issuer, StagesInWorkers, campaign_vars
from passflow.providers.googlewallet import jwts
from passflow.providers.googlewallet.keys import ServiceAccountKey, parse_key
from passflow.providers.googlewallet.objects import SUFFIX_FIELD, ObjectTemplate, payload_key
from passflow.secrets import resolve_secret
from passflow.seen import SeenKeys, hash_keys
from passflow.validate import ROW, Rejects

KEY_SETTING = "googlewallet.service_account_key"


def load_campaign_key(campaign: Campaign) -> ServiceAccountKey:
    ref = campaign.settings.service_account_key
    text = resolve_secret(ref, file=str(campaign.path), key=KEY_SETTING).get_secret_value()
    return parse_key(text, where=f"{KEY_SETTING} ({ref.describe()})")


class SaveLinkIssuer(Issuer, StagesInWorkers):
    provider = "googlewallet"
    extra_columns = ["pass_id", "pass_link"]
    delivers_from_spool = True
    # The fingerprint covers everything a link carries but iat, so an unchanged customer's link is
    # the one this run signs again (equally valid); a 1.5 kB link per row stays out of the ledger.
    ledger_keeps_links = False
    delivered_columns = ["customer_id", "pass_id", "pass_link", "fingerprint"]

    def __init__(self, campaign: Campaign, now: datetime, *, key: ServiceAccountKey | None = None) -> None:
        self.settings = gw = campaign.settings
        self.key = key if key is not None else load_campaign_key(campaign)
        self.objects = ObjectTemplate(gw, campaign_vars=campaign_vars(campaign.campaign), now=now)
        self.payload_key = payload_key(gw.class_type)
        self.iat = int(now.timestamp())
        self.prefix = gw.save_link_base + "/"
        self._header_len = len(jwts.header_b64(self.key.private_key_id))
        self.pass_ids = SeenKeys()
        self._campaign, self._now = campaign, now

    def template_columns(self) -> set[str]:
        return self.objects.columns()

    def worker_factory(self) -> Callable[[], SaveLinkIssuer]:
        # The key travels resolved: a worker cannot reach the parent's Prefect Secret block.
        return functools.partial(SaveLinkIssuer, self._campaign, self._now, key=self.key)

    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        return self.claim_pass_ids(self.prepare_rows(df, rejects), rejects)

    def prepare_rows(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        df, ids, objects = self.objects.render(df, rejects)
        gw, iss = self.settings, self.key.client_email
        claims = [
            jwts.claims_json(
                iss=iss, iat=self.iat, origins=gw.origins, payload_key=self.payload_key, objects_json=o
            )
            for o in objects.tolist()
        ]
        lengths = np.fromiter(
            (jwts.link_length(len(self.prefix), self._header_len, len(c.encode("utf-8"))) for c in claims),
            dtype=np.int64, count=len(claims),
        )  # fmt: skip
        long = lengths > gw.max_link_chars
        if long.any():
            rejects.add(
                df, long, "link_too_long",
                pd.Series(lengths, index=df.index).map(
                    lambda n: f"the save link would be {n} characters, over max_link_chars = {gw.max_link_chars} "
                    "(email and SMS clients cut longer URLs): shorten the object's texts"
                ),
            )  # fmt: skip
            keep = ~long
            df, ids, objects = df.loc[keep], ids.loc[keep], objects.loc[keep]
            claims = [c for c, k in zip(claims, keep, strict=True) if k]
        if df.empty:
            return pd.DataFrame(
                columns=[ROW, "customer_id", "email", "phone", "fingerprint", *self.extra_columns]
            )
        prints = [jwts.fingerprint(iss, gw.origins, self.payload_key, o) for o in objects.tolist()]
        tokens = jwts.sign_all(self.key, claims)
        prefix = self.prefix
        return pd.DataFrame(
            {
                ROW: df[ROW],
                "customer_id": df["customer_id"],
                "email": df["email"],
                "phone": df["phone"],
                "fingerprint": pd.Series(prints, index=df.index, dtype="str"),
                "pass_id": ids,
                "pass_link": pd.Series([prefix + t for t in tokens], index=df.index, dtype="str"),
            }
        )

    @property
    def claims_pass_ids(self) -> bool:
        """Object ids need a run-wide check unless they are fixed text around the (unique) customer id."""
        return not self.objects.templates[SUFFIX_FIELD].is_text_around("customer_id")

    def claim_pass_ids(self, prepared: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        if not self.claims_pass_ids or prepared.empty:
            return prepared
        first = self.pass_id_conflicts(prepared[ROW].to_numpy(dtype=np.int64), hash_keys(prepared["pass_id"]))
        return self.reject_pass_id_conflicts(prepared, first, rejects)

    def pass_id_conflicts(self, rows: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        return self.pass_ids.check_and_add_hashes(hashes, rows)

    def reject_pass_id_conflicts(
        self, prepared: pd.DataFrame, first: np.ndarray, rejects: Rejects
    ) -> pd.DataFrame:
        dup = first >= 0
        if not dup.any():
            return prepared
        sub = prepared.loc[dup]
        rejects.add(sub, np.ones(len(sub), dtype=bool), "duplicate_pass_id",
                    "object id '" + sub["pass_id"] + "' is already used by row "
                    + pd.Series(first[dup], index=sub.index).astype(str))  # fmt: skip
        return prepared.loc[~dup]

    def forget_pass_ids(self) -> None:
        self.pass_ids = SeenKeys()

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        out = todo[self.delivered_columns]
        out["status"] = "issued"
        out["last_error"] = None
        out["issued_at"] = ctx.now
        return out[OUTCOME_COLUMNS]
