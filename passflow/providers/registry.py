"""The provider registry: the one place that knows which providers exist.

Built-in providers register when this module is first imported. More can come from

* ``PASSFLOW_PROVIDERS`` — a comma-separated list of modules to import (each calls :func:`register`),
  which is how the test-only provider of ``tests/`` runs through the CLI and Prefect flows;
* the ``passflow.providers`` entry-point group of installed packages (a provider shipped on its own).

Lookups of an unknown name raise :class:`~passflow.errors.ConfigError` listing the known ones.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from passflow.errors import ConfigError
from passflow.providers.spec import Provider

PLUGINS_ENV = "PASSFLOW_PROVIDERS"
BUILT_IN = ("passflow.providers.skycore", "passflow.providers.passmachine", "passflow.providers.googlewallet")

_providers: dict[str, Provider] = {}
_loaded = False


def register(provider: Provider) -> Provider:
    """Add a provider (idempotent for the same description; a different one under a taken name is an error)."""
    known = _providers.get(provider.name)
    if known is not None and known is not provider and known != provider:
        raise ValueError(f"provider {provider.name!r} is already registered by {known.issuer!r}")
    _providers[provider.name] = provider
    return provider


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILT_IN:
        importlib.import_module(module)
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import provider module {module!r} named in {PLUGINS_ENV}: {exc}", key=PLUGINS_ENV
            ) from None
    for ep in entry_points(group="passflow.providers"):
        ep.load()


def names() -> list[str]:
    """Registered provider names, sorted."""
    _load()
    return sorted(_providers)


def get(name: str, *, file: str | None = None) -> Provider:
    """The provider called ``name``, or a ConfigError that lists the known ones."""
    _load()
    try:
        return _providers[name]
    except KeyError:
        raise ConfigError(
            f"unknown provider {name!r}; known providers: {', '.join(names())}", file=file, key="campaign.provider"
        ) from None


def all_providers() -> list[Provider]:
    _load()
    return [_providers[n] for n in sorted(_providers)]
