"""Skycore: signed pass issuance links (pure computation) and pass updates through Skycore's API.

``settings`` (the campaign's ``[skycore]``), ``links`` (the checksum recipe, vectorised), ``issuer``
(what a run does), ``api`` (the API v3 client), ``errors`` (the published error codes), ``updates`` (update requests and sender),
``postbacks`` (callbacks).
"""

from __future__ import annotations

from passflow.providers import registry
from passflow.providers.skycore import postbacks, updates
from passflow.providers.skycore.settings import SkycoreSettings
from passflow.providers.spec import CallbackSupport, Provider, UpdateSupport


def _issuer(campaign, now, dry_run):  # noqa: ANN001, ANN202 - the Provider.issuer signature
    from passflow.providers.skycore.issuer import SkycoreLinkIssuer

    return SkycoreLinkIssuer(campaign, now)


def _secrets(campaign):  # noqa: ANN001, ANN202
    refs = {"skycore.salt": campaign.settings.salt, "skycore.api_key": campaign.settings.api_key}
    if campaign.updates is not None:
        refs["updates.api_key"] = campaign.updates.api_key
    return {k: v for k, v in refs.items() if v is not None}


def _update_secrets(campaign):  # noqa: ANN001, ANN202
    _, ref, _ = updates.api_target(campaign)
    return {"skycore.api_key": ref} if ref is not None else {}


PROVIDER = registry.register(
    Provider(
        name="skycore",
        title="Skycore",
        settings=SkycoreSettings,
        issuer=_issuer,
        calls_vendor=False,  # links are computed; only updates call the vendor
        secrets=_secrets,
        updates=UpdateSupport(
            sender=updates.make_sender,
            action_values="pass_data",
            request=updates.update_request,
            builtin_actions=updates.BUILTIN_ACTIONS,
            diff_needs_action=True,
            check=updates.check_updates,
            secrets=_update_secrets,
        ),
        callbacks=CallbackSupport(parse=postbacks.parse_postback),
    )
)
