"""One issuer per provider; :func:`make_issuer` picks it from the campaign."""

from __future__ import annotations

from datetime import datetime

from passflow.config import Campaign
from passflow.issuers.base import OUTCOME_COLUMNS, DeliveryContext, Issuer


def make_issuer(campaign: Campaign, now: datetime, *, dry_run: bool = False) -> Issuer:
    if campaign.provider == "skycore":
        from passflow.issuers.skycore import SkycoreLinkIssuer

        return SkycoreLinkIssuer(campaign, now)
    if campaign.provider == "passmachine":
        from passflow.issuers.passmachine import PassmachineIssuer

        return PassmachineIssuer(campaign, now, dry_run=dry_run)
    raise ValueError(f"unknown provider {campaign.provider!r}")  # config validation prevents this


__all__ = ["OUTCOME_COLUMNS", "DeliveryContext", "Issuer", "make_issuer"]
