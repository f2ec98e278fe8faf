"""Serve the issue-passes flow as Prefect deployments, one per bundled campaign file.

A first, minimal deployment path (schedules, the CSV inbox and `passflow serve` come with the
"run it like production" issue). With a Prefect server running:

    prefect server start            # in another terminal; UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python deployments/serve.py     # then press "Run" on a deployment in the UI

Each deployment's default parameters point at its campaign file; the UI renders the
`IssueRequest` form (segment override, dry run, limit overrides). Secrets are never parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from flows.issue_passes import IssueRequest, issue_passes
from passflow.config import load_campaign

CAMPAIGNS = Path(__file__).resolve().parents[1] / "data" / "campaigns"


def campaign_deployments(directory: Path = CAMPAIGNS) -> Iterator:
    for path in sorted(directory.glob("*.toml")):
        campaign = load_campaign(path)
        yield issue_passes.to_deployment(
            name=campaign.name,
            description=campaign.campaign.description or f"Issue {campaign.provider} passes for {campaign.name}",
            tags=["passflow", campaign.provider],
            parameters={"request": IssueRequest(campaign=str(path)).model_dump()},
        )


if __name__ == "__main__":
    from prefect import serve

    serve(*campaign_deployments())
