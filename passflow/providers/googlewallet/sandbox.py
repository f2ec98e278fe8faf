"""The sandbox hook: a campaign whose ``api_base_url`` is the sandbox's loopback ``/googlewallet``
address gets the sandbox started for its run, and the demo service-account key (a key generated
for this repository, never valid at Google) through the campaign's own env-var reference when that
variable is unset — real keys always win."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from passflow.config import Campaign

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEMO_KEY_FILE = "demo-service-account.json"


def demo_key_json() -> str:
    return resources.files("passflow.providers.googlewallet").joinpath(DEMO_KEY_FILE).read_text("utf-8")


def sandbox_target(campaign: Campaign) -> tuple[str, int] | None:
    parts = urlsplit(campaign.settings.api_base_url)
    if parts.hostname not in LOOPBACK or not parts.path.rstrip("/").endswith("/googlewallet"):
        return None
    return parts.hostname or "127.0.0.1", parts.port or 80


def demo_env(campaign: Campaign) -> dict[str, str]:
    ref = campaign.settings.service_account_key
    return {ref.env: demo_key_json()} if ref.env else {}
