"""Providers: one package per vendor (``skycore/``, ``passmachine/``), each described by a
:class:`~passflow.providers.spec.Provider` and registered in :mod:`~passflow.providers.registry`.

The rest of passflow reaches a provider only through this surface: :func:`provider_of` for a
campaign's description, :func:`make_issuer` for its run's issuer. Shared machinery for vendors that
are called over HTTP is in ``http/`` (limiter, retry policy, pooled transport, background loop).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from passflow.errors import ConfigError
from passflow.providers.spec import CallbackSupport, Provider, SandboxHook, UpdateSupport

if TYPE_CHECKING:
    from passflow.config import Campaign
    from passflow.providers.base import Issuer


def provider_of(campaign: Campaign) -> Provider:
    """The campaign's provider description (from the registry)."""
    from passflow.providers import registry

    return registry.get(campaign.provider, file=str(campaign.path) if campaign.path else None)


def make_issuer(campaign: Campaign, now: datetime, *, dry_run: bool = False) -> Issuer:
    """The run's issuer for the campaign's provider."""
    return provider_of(campaign).issuer(campaign, now, dry_run)


def update_support(campaign: Campaign) -> UpdateSupport:
    """The provider's update capability, or a ConfigError saying it has none."""
    p = provider_of(campaign)
    if p.updates is None:
        raise ConfigError(f"{p.title} passes cannot be updated by passflow", file=str(campaign.path), key="updates")
    return p.updates


__all__ = ["CallbackSupport", "Provider", "SandboxHook", "UpdateSupport", "make_issuer", "provider_of", "update_support"]
