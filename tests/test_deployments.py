"""Deployments built from the registry: one per campaign and flow, schedules and default parameters
from the campaign files, no secret fields (no server needed; the served path is in
tests/test_deployments_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from passflow.deployments.registry import FLOWS, build_deployments
from passflow.flows.issue_passes import IssueRequest

from passflow.config import load_campaign
from passflow.errors import ConfigError
from tests.test_issue_skycore import make_campaign

SECRET_WORDS = ("secret", "token", "salt", "password", "api_key")


def test_one_deployment_per_campaign_with_schedule_and_valid_parameters() -> None:
    deps = build_deployments()
    issue = {d.name: d for d in deps if d.flow_name == "issue-passes"}
    assert {"spring-coupon-2026", "loyalty-card-2026"} <= set(issue)
    coupon = issue["spring-coupon-2026"]
    [sched] = coupon.schedules
    assert sched.schedule.cron == "0 6 * * MON" and sched.schedule.timezone == "Europe/Prague" and sched.active
    assert sched.parameters == {"dry_run": False}  # the schedule issues for real …
    for d in issue.values():
        params = d.parameters
        request = IssueRequest.model_validate(params)  # flat: the flow's parameters at the top level
        assert request.campaign.startswith("data/campaigns/") and request.dry_run  # … a click is a dry run
        assert load_campaign(Path(__file__).parents[1] / request.campaign).name == d.name
        assert not any(w in k.lower() for k in params for w in SECRET_WORDS)
        # the campaign is fixed by the deployment: read-only in the form, the one allowed value
        prop = d._parameter_openapi_schema.properties["campaign"]
        assert prop["readOnly"] is True and prop["enum"] == [request.campaign]
        # an overlapping run of the campaign queues instead of failing
        assert d.concurrency_limit == 1 and d.concurrency_options.collision_strategy == "ENQUEUE"
    [inbox] = [d for d in deps if d.flow_name == "import-inbox"]
    assert inbox.name == "inbox" and inbox.schedules[0].schedule.cron == "* * * * *"
    assert inbox.parameters["request"]["inbox"] == "data/inbox"
    update = {d.name: d for d in deps if d.flow_name == "update-passes"}
    shards = {d.flow_name: d for d in deps if "scale-out" in d.tags}
    assert set(shards) == {"issue-passes-shard", "issue-passes-sharded"}  # the scale-out pair, run by hand
    assert all(not d.schedules for d in shards.values())
    assert len(deps) == len(issue) + len(update) + len(shards) + 1 and len(FLOWS) == 5


def test_update_deployments_have_event_triggers_and_their_own_schedule() -> None:
    from passflow.updates import UpdateRequest

    update = {d.name: d for d in build_deployments() if d.flow_name == "update-passes"}
    # Only campaigns with an [updates] section get one.
    assert set(update) == {"spring-coupon-2026", "loyalty-card-2026"}
    coupon = update["spring-coupon-2026"]
    [sched] = coupon.schedules
    assert sched.schedule.cron == "15 * * * *" and sched.schedule.timezone == "Europe/Prague"
    assert update["loyalty-card-2026"].schedules == []  # event- and hand-started only
    for d in update.values():
        request = UpdateRequest.model_validate(d.parameters)
        assert request.mode == "events" and request.campaign.startswith("data/campaigns/") and request.dry_run
        assert d.concurrency_limit == 1
        expects = sorted(e for t in d.triggers for e in t.expect)
        assert expects == ["passflow.pass.uninstalled", "passflow.update.requested"]
        assert all(t.match.root == {"passflow.campaign": d.name} for t in d.triggers)


def test_schedule_section_is_validated(tmp_path: Path) -> None:
    path = make_campaign(tmp_path)
    base = path.read_text()
    for schedule, message in [
        ('cron = "0 6 * *"\ntimezone = "UTC"', "5-field cron"),
        ('cron = "0 25 * * *"', "not a valid cron expression"),
        ('cron = "0 6 * * *"\ntimezone = "Europe/Praha"', "unknown time zone"),
        ('cron = "0 6 * * *"\ntimezon = "UTC"', "unknown key"),
    ]:
        path.write_text(base + f"\n[schedule]\n{schedule}\n")
        with pytest.raises(ConfigError) as exc:
            load_campaign(path)
        assert str(path) in str(exc.value) and "[schedule." in str(exc.value) and message in str(exc.value)
    path.write_text(
        base + '\n[schedule]\ncron = "15 8 * * 1-5"\ntimezone = "America/New_York"\ndry_run = true\n'
    )
    [dep] = build_deployments(tmp_path)[:1]
    assert (
        dep.schedules[0].schedule.timezone == "America/New_York"
        and dep.schedules[0].parameters["dry_run"] is True
    )
    assert dep.parameters["dry_run"] is True  # manual runs: a dry run by default
    path.write_text(base + '\n[schedule]\ncron = "15 8 * * 1-5"\nmanual_dry_run = false\n')
    [dep] = build_deployments(tmp_path)[:1]
    assert dep.parameters["dry_run"] is False and dep.schedules[0].parameters["dry_run"] is False
    path.write_text(base)  # no [schedule]: run by hand only, and a hand-started run is a dry run
    [dep] = build_deployments(tmp_path)[:1]
    assert dep.parameters["dry_run"] is True and not dep.schedules


def test_failure_automation_is_a_valid_prefect_automation() -> None:
    import uuid

    from passflow.deployments.automation import failure_automation
    from prefect.events.schemas.automations import AutomationCore

    block = str(uuid.uuid4())
    automation = AutomationCore.model_validate(failure_automation(block))
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert str(automation.actions[0].block_document_id) == block
    # every deployment carries the tag the trigger matches
    assert all("passflow" in d.tags for d in build_deployments())
