"""Passmachine: one pass per customer through the vendor's API, within its throughput limits.

``settings`` (the campaign's ``[passmachine]``), ``client`` (HTTP: token lifecycle, create, lookup,
JSON Patch), ``connection`` (one client per run), ``issuer`` (what a run does), ``updates`` (JSON Patch
sender), ``webhooks`` (callbacks), ``sandbox`` (the local sandbox hook).
"""

from __future__ import annotations

from passflow.providers import registry
from passflow.providers.passmachine import sandbox, updates, webhooks
from passflow.providers.passmachine.settings import PassmachineSettings
from passflow.providers.spec import CallbackSupport, Provider, SandboxHook, UpdateSupport


def _issuer(campaign, now, dry_run):  # noqa: ANN001, ANN202 - the Provider.issuer signature
    from passflow.providers.passmachine.issuer import PassmachineIssuer

    return PassmachineIssuer(campaign, now, dry_run=dry_run)


def _secrets(campaign):  # noqa: ANN001, ANN202
    pm = campaign.settings
    return {"passmachine.public_token": pm.public_token, "passmachine.secret_token": pm.secret_token}


PROVIDER = registry.register(
    Provider(
        name="passmachine",
        title="Passmachine",
        settings=PassmachineSettings,
        issuer=_issuer,
        secrets=_secrets,
        updates=UpdateSupport(
            sender=updates.make_sender,
            action_values="template_variables",
            request=updates.update_request,
            builtin_actions=updates.BUILTIN_ACTIONS,
            issued_values=updates.issued_values,
        ),
        callbacks=CallbackSupport(parse=webhooks.parse_webhook),
        sandbox=SandboxHook(target=sandbox.sandbox_target, demo_env=sandbox.demo_env),
    )
)
