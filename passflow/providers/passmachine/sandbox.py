"""The sandbox hook: a campaign whose API URL is the sandbox's loopback ``/passmachine`` address gets
the sandbox started for its run (see :mod:`passflow.sandbox.autostart`), with the sandbox's demo
credentials offered through the campaign's own env-var references when those are unset."""

from __future__ import annotations

from urllib.parse import urlsplit

from passflow.config import Campaign

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# The sandbox's demo account (passflow.sandbox.state); never valid at a real vendor.
DEMO_PUBLIC_TOKEN = "pm-public-demo"
DEMO_SECRET_TOKEN = "pm-secret-demo"


def sandbox_target(campaign: Campaign) -> tuple[str, int] | None:
    """(host, port) when the campaign talks to a sandbox on this machine, else None."""
    parts = urlsplit(campaign.settings.api_base_url)
    if parts.hostname not in LOOPBACK or not parts.path.rstrip("/").endswith("/passmachine"):
        return None
    return parts.hostname or "127.0.0.1", parts.port or 80


def demo_env(campaign: Campaign) -> dict[str, str]:
    pm = campaign.settings
    env = {pm.public_token.env: DEMO_PUBLIC_TOKEN, pm.secret_token.env: DEMO_SECRET_TOKEN}
    return {k: v for k, v in env.items() if k}
