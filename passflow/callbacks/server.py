"""Running the callbacks app: foreground for ``passflow callbacks``, a thread for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from passflow.callbacks.app import CampaignEndpoint, create_app, endpoints_for
from passflow.callbacks.events import Emitter
from passflow.config import Campaign, load_campaign
from passflow.httpserver import serve_app, start_app_thread

READY_PREFIX = "passflow-callbacks listening on "


def load_campaigns(paths: list[Path]) -> list[Campaign]:
    return [load_campaign(p) for p in paths]


def serve_callbacks(endpoints: dict[str, CampaignEndpoint], host: str = "127.0.0.1", port: int = 8780) -> None:
    """Serve until SIGINT/SIGTERM (``endpoints_for`` has checked secrets and ledgers already)."""
    serve_app(create_app(endpoints), host, port, READY_PREFIX)


def start_callbacks_thread(
    campaigns: list[Campaign], host: str = "127.0.0.1", port: int = 0, *, emitter: Emitter | None = None
) -> tuple[str, Callable[[], None]]:
    """The callbacks server in a background thread: (base URL, stop)."""
    app = create_app(endpoints_for(campaigns), emitter=emitter)
    return start_app_thread(app, host, port, name="passflow-callbacks")
