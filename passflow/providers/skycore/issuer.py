"""Skycore issuer: signed pass issuance links, pure computation (no vendor call to make).

Prepare renders the link parameters from templates, enforces Skycore's rules on them (``pass-id``
alphanumeric, unique within the run) and signs the links, all vectorised over the chunk. Delivery
is just "issued now": the link is the pass until the customer opens it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd

from passflow.config import Campaign
from passflow.providers.base import (
    OUTCOME_COLUMNS,
    DeliveryContext,
    Issuer,
    StagesInWorkers,
    campaign_vars,
    compile_templates,
    render_fields,
)
from passflow.providers.skycore.links import LinkRecipe, build_links
from passflow.secrets import register_secret, resolve_secret
from passflow.seen import SeenKeys, hash_keys
from passflow.validate import ROW, Rejects

_ALNUM = r"^[A-Za-z0-9]+$"
_RESOLVE = object()  # SkycoreLinkIssuer(salt=...) default: resolve the campaign's secret reference


class SkycoreLinkIssuer(Issuer, StagesInWorkers):
    provider = "skycore"
    extra_columns = ["pass_id", "pass_link"]
    delivers_from_spool = True
    # A link is base + the values its checksum covers + the checksum, and the checksum is the row's
    # fingerprint: an unchanged row's link is the one this run builds again. Not storing links makes
    # a ledger row ~60 % smaller (1M links: ~370 MB less to write twice through SQLite's WAL).
    ledger_keeps_links = False
    delivered_columns = ["customer_id", "pass_id", "pass_link", "fingerprint"]  # what deliver() reads

    def __init__(self, campaign: Campaign, now: datetime, *, salt: str | None | object = _RESOLVE) -> None:
        sky = campaign.settings
        self.settings = sky
        if salt is _RESOLVE:
            salt = (
                resolve_secret(sky.salt, file=str(campaign.path), key="skycore.salt").get_secret_value()
                if sky.salt
                else None
            )
        elif isinstance(salt, str):
            register_secret(salt)
        self.salt: str | None = salt  # type: ignore[assignment]
        self.recipe = LinkRecipe(
            salt_position=sky.salt_position, hex_case=sky.hex_case, hash_input=sky.hash_input
        )
        self.templates = compile_templates(
            sky.params, section="skycore.params", campaign_vars=campaign_vars(campaign.campaign), now=now
        )
        self.pass_ids = SeenKeys()
        self._campaign, self._now = campaign, now

    def template_columns(self) -> set[str]:
        return set().union(*(t.columns for t in self.templates.values()))

    def worker_factory(self) -> Callable[[], SkycoreLinkIssuer]:
        """A picklable way to build this issuer again in a worker process (see passflow.run.staging).

        The salt travels resolved: a worker cannot reach a Prefect Secret block of the parent's run.
        """
        return functools.partial(SkycoreLinkIssuer, self._campaign, self._now, salt=self.salt)

    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        return self.claim_pass_ids(self.prepare_rows(df, rejects), rejects)

    def prepare_rows(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        """The per-row part of ``prepare``: render, check pass ids' syntax, sign. Keeps no run state,
        so worker processes can run it on chunks in any order; ``claim_pass_ids`` follows in row order.
        """
        df, values = render_fields(self.templates, df, rejects)
        pid_param = self.settings.pass_id_param
        if pid_param in values:
            pass_id = values[pid_param]
            bad = ~pass_id.str.match(_ALNUM)
            if bad.any():  # the reasons are text for every row: build them only when needed
                rejects.add(
                    df,
                    bad,
                    "invalid_pass_id",
                    f"{pid_param} '" + pass_id + "' must be non-empty and only A-Z, a-z, 0-9 (Skycore rule)",
                )
                df, values = df.loc[~bad], values.loc[~bad]
                pass_id = values[pid_param]
        else:
            pass_id = pd.Series("", index=df.index, dtype="str")
        if df.empty:
            return pd.DataFrame(
                columns=[ROW, "customer_id", "email", "phone", "fingerprint", *self.extra_columns]
            )
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

    @property
    def claims_pass_ids(self) -> bool:
        """Whether pass ids come from a template and need their own run-wide uniqueness check. Not
        when the template is fixed text around the customer id (``SPRING{{ customer.customer_id }}``):
        staging already rejected every repeated customer id, so those pass ids are unique too."""
        template = self.templates.get(self.settings.pass_id_param)
        return template is not None and not template.is_text_around("customer_id")

    def claim_pass_ids(
        self, prepared: pd.DataFrame, rejects: Rejects, hashes: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Reject rows whose pass id an earlier row of the run already uses; remember the others.

        Run-wide, so chunks must come in row order. ``hashes``: ``hash_keys(prepared["pass_id"])``
        when a worker computed them already.
        """
        if not self.claims_pass_ids or prepared.empty:
            return prepared
        if hashes is None:
            hashes = hash_keys(prepared["pass_id"])
        first = self.pass_id_conflicts(prepared[ROW].to_numpy(dtype=np.int64), hashes)
        return self.reject_pass_id_conflicts(prepared, first, rejects)

    def pass_id_conflicts(self, rows: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Per row, in row order: the earlier row that uses the same pass id, or -1 (then the pass
        id is remembered as this row's)."""
        return self.pass_ids.check_and_add_hashes(hashes, rows)

    def reject_pass_id_conflicts(
        self, prepared: pd.DataFrame, first: np.ndarray, rejects: Rejects
    ) -> pd.DataFrame:
        """Reject the rows ``pass_id_conflicts`` found (``first`` >= 0); return the others."""
        dup = first >= 0
        if not dup.any():
            return prepared
        sub = prepared.loc[dup]
        rejects.add(
            sub,
            np.ones(len(sub), dtype=bool),
            "duplicate_pass_id",
            f"{self.settings.pass_id_param} '"
            + sub["pass_id"]
            + "' is already used by row "
            + pd.Series(first[dup], index=sub.index).astype(str),
        )
        return prepared.loc[~dup]

    def forget_pass_ids(self) -> None:
        self.pass_ids = SeenKeys()

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        out = todo[self.delivered_columns]  # copy-on-write: no deep copy
        out["status"] = "issued"
        out["last_error"] = None
        out["issued_at"] = ctx.now
        return out[OUTCOME_COLUMNS]
