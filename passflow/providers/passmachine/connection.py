"""One Passmachine client for a run, on its own background loop: what issuance and updates share.

The campaign's credentials are resolved here (a missing one stops the run before anything is read or
sent) and the client gets the run's one limiter, so the vendor's limit holds across every call.
"""

from __future__ import annotations

import contextlib

import httpx
from pydantic import SecretStr

from passflow.config import Campaign
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.http.loop import BackgroundLoop
from passflow.providers.passmachine.client import ClientSettings, PassmachineClient
from passflow.secrets import resolve_secret


def credentials(campaign: Campaign) -> tuple[SecretStr, SecretStr]:
    """The account's (public, secret) tokens, resolved from their references."""
    pm, file = campaign.settings, str(campaign.path)
    return (
        resolve_secret(pm.public_token, file=file, key="passmachine.public_token"),
        resolve_secret(pm.secret_token, file=file, key="passmachine.secret_token"),
    )


def open_client(
    campaign: Campaign, transport: httpx.AsyncBaseTransport | None = None, *, name: str = "passflow-io"
) -> tuple[BackgroundLoop, PassmachineClient]:
    """A loop and a client on it, for the campaign's account within its ``[limits]``."""
    public, secret = credentials(campaign)
    limits = campaign.limits
    loop = BackgroundLoop(name)

    async def make() -> PassmachineClient:
        return PassmachineClient(
            ClientSettings.from_campaign(campaign.settings, limits),
            public_token=public.get_secret_value(),
            secret_token=secret.get_secret_value(),
            limiter=RateLimiter(max_in_flight=limits.max_in_flight, max_per_second=limits.max_per_second),
            transport=transport,
        )

    return loop, loop.run(make())


def close_client(loop: BackgroundLoop, client: PassmachineClient | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):  # closing must not mask the run's own error
            loop.run(client.aclose())
    loop.close()
