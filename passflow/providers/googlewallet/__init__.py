"""Google Wallet: passes issued by the campaign's own issuer account, no pass vendor in between.

``settings`` (the campaign's ``[googlewallet]``), ``keys`` (the service account's key JSON),
``objects`` (pass objects from the template), ``jwts`` (save-link JWTs: sign, verify), ``issuer``
(save links), ``linkcheck`` (``passflow verify-link``), ``sandbox`` (the local sandbox hook).
"""

from __future__ import annotations

from passflow.providers import registry
from passflow.providers.googlewallet import linkcheck, sandbox
from passflow.providers.googlewallet.settings import GoogleWalletSettings
from passflow.providers.spec import LinkCheckSupport, Provider, SandboxHook


def _issuer(campaign, now, dry_run):  # noqa: ANN001, ANN202 - the Provider.issuer signature
    from passflow.providers.googlewallet.issuer import SaveLinkIssuer

    return SaveLinkIssuer(campaign, now)


def _secrets(campaign):  # noqa: ANN001, ANN202
    return {"googlewallet.service_account_key": campaign.settings.service_account_key}


PROVIDER = registry.register(
    Provider(
        name="googlewallet",
        title="Google Wallet",
        settings=GoogleWalletSettings,
        issuer=_issuer,
        calls_vendor=False,  # save links are signed here; the object is created when the customer saves it
        secrets=_secrets,
        sandbox=SandboxHook(target=sandbox.sandbox_target, demo_env=sandbox.demo_env),
        links=LinkCheckSupport(
            recognises=linkcheck.recognises, explain=linkcheck.explain, checker=linkcheck.checker
        ),
    )
)
