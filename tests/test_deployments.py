"""Deployments: one per campaign, default parameters that validate, no secret fields."""

from __future__ import annotations

from deployments.serve import campaign_deployments
from flows.issue_passes import IssueRequest


def test_one_deployment_per_campaign_with_valid_parameters() -> None:
    deps = list(campaign_deployments())
    names = {d.name for d in deps}
    assert {"spring-coupon-2026", "loyalty-card-2026"} <= names
    for d in deps:
        request = IssueRequest.model_validate(d.parameters["request"])
        assert request.campaign.endswith(".toml") and not request.dry_run
        keys = [k.lower() for k in d.parameters["request"]]
        assert not any(w in k for k in keys for w in ("secret", "token", "salt", "password"))
