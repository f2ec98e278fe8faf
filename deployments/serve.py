"""Serve every passflow deployment from this process (see :mod:`passflow.deployments.registry`).

    prefect server start            # in another terminal; UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python deployments/serve.py     # or: passflow serve (starts the server too)

One ``issue-passes`` deployment per campaign file (its ``[schedule]``), and ``import-inbox/inbox``
every minute. Secrets are never parameters: the campaign files reference env vars / Secret blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python deployments/serve.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from passflow.deployments.registry import CAMPAIGNS, build_deployments  # noqa: E402


def serve_all(campaigns: Path = CAMPAIGNS, inbox: dict | None = None) -> None:
    from prefect import serve

    serve(*build_deployments(campaigns, inbox=inbox))


if __name__ == "__main__":
    serve_all()
