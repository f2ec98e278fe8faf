"""What a provider is: one :class:`Provider` description per vendor, registered in
:mod:`passflow.providers.registry`.

Everything passflow does differently per vendor hangs off this description, so the rest of the code
never compares provider names: the campaign section's model, how to build the issuer, and the
optional capabilities (updates, callbacks, a local sandbox). A capability a provider lacks is
``None``, and asking for it is a configuration error that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:  # the description is data: no import of the run machinery at load time
    import httpx

    from passflow.config import Campaign
    from passflow.providers.base import Issuer
    from passflow.providers.callbacks import ParsedCallback
    from passflow.providers.sender import Sender
    from passflow.secrets import SecretRef


@dataclass(frozen=True)
class UpdateSupport:
    """How a provider changes passes after issuance (``passflow update``)."""

    #: builds the run's sender: (campaign, now, transport or None) -> Sender
    sender: Callable[[Campaign, datetime, httpx.AsyncBaseTransport | None], Sender]
    #: key of ``[updates.actions.<name>]`` that holds the action's value templates
    action_values: str
    #: the request body for one pass: (campaign, pass id, rendered values, --diff base values) -> JSON
    request: Callable[[Campaign, str, Mapping[str, str], Mapping[str, Any] | None], str]
    #: built-in actions (name -> value templates); a campaign's own actions override them
    builtin_actions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: whether ``--diff`` needs ``[updates] diff_action`` (else it re-sends the issued values)
    diff_needs_action: bool = False
    #: for ``--diff`` without an action: the values issued with a pass, from its prepared payload
    issued_values: Callable[[str], Mapping[str, Any]] | None = None
    #: extra checks of the campaign's update settings: (campaign) -> None, raises ConfigError
    check: Callable[[Campaign], None] | None = None
    #: secret references an update run needs ({"section.key": ref}); None = the provider's own
    secrets: Callable[[Campaign], dict[str, SecretRef]] | None = None


@dataclass(frozen=True)
class CallbackSupport:
    """How a provider's callbacks (postbacks, webhooks) are read."""

    #: (raw body, received at, campaign) -> ParsedCallback; raises CallbackPayloadError
    parse: Callable[[bytes, datetime, Campaign], ParsedCallback]


@dataclass(frozen=True)
class SandboxHook:
    """Lets ``passflow issue`` start the local sandbox for a campaign that points at it."""

    #: (host, port) when the campaign talks to a sandbox on this machine, else None
    target: Callable[[Campaign], tuple[str, int] | None]
    #: environment variables (name -> demo value) the sandbox's demo account needs
    demo_env: Callable[[Campaign], dict[str, str]] = lambda campaign: {}


@dataclass(frozen=True)
class LinkCheckSupport:
    """How ``passflow verify-link`` checks a provider's signed links (Skycore's own checker predates this)."""

    #: whether a link is one of this provider's (by its shape)
    recognises: Callable[[str], bool]
    #: (link, campaign or None) -> (a short report, valid)
    explain: Callable[[str, Campaign | None], tuple[str, bool]]
    #: (campaign or None) -> a check of one link: link -> None if valid, else the reason
    checker: Callable[[Campaign | None], Callable[[str], str | None]]


@dataclass(frozen=True)
class Provider:
    """One vendor (or wallet) passflow issues passes through."""

    #: the campaign's ``provider``, its ``[<name>]`` section, the ledger's provider column and the
    #: prefix of the export attributes (``<name>_pass_id`` …)
    name: str
    #: for people: "Skycore"
    title: str
    #: the model of the campaign's ``[<name>]`` section
    settings: type[BaseModel]
    #: builds the run's issuer: (campaign, now, dry_run) -> Issuer
    issuer: Callable[[Campaign, datetime, bool], Issuer]
    #: whether issuing calls the vendor (then ``[limits]`` pace it and the report shows the rate)
    calls_vendor: bool = True
    #: secret references to check before a run: (campaign) -> {"section.key": SecretRef}
    secrets: Callable[[Campaign], dict[str, SecretRef]] = lambda campaign: {}
    updates: UpdateSupport | None = None
    callbacks: CallbackSupport | None = None
    sandbox: SandboxHook | None = None
    links: LinkCheckSupport | None = None
    #: the ledger column holding the customer id the vendor echoes in callbacks (for messages)
    description: str = ""
