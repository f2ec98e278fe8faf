"""The changeMessage our Passmachine updates send equals the tz database's answer (zoneinfo) for every
hour of 2024-2028 — including the weeks before each DST change, where the seed's hand-written
CET/CEST template (transcribed in test_templating) is an hour off."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from test_templating import seed_change_message

from passflow.config import Campaign, load_campaign
from passflow.updates.actions import ActionRenderer

PRAGUE = ZoneInfo("Europe/Prague")
WEEK = 7 * 24 * 3600
FMT = "%d-%m-%Y %H:%M:%S"
START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
HOURS = list(range(int(START.timestamp()), int(END.timestamp()), 3600))


def reference(ts: int) -> str:
    return datetime.fromtimestamp(ts + WEEK, PRAGUE).strftime(FMT)


def campaign(tmp_path: Path, change_message: str) -> Campaign:
    (tmp_path / "c.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "pm-msg"
            provider = "passmachine"
            [source]
            csv = "s.csv"
            [passmachine]
            api_base_url = "http://127.0.0.1:9/passmachine"
            account = "demo"
            template_id = "t"
            public_token = {{ env = "UNUSED_PUBLIC" }}
            secret_token = {{ env = "UNUSED_SECRET" }}
            [updates.actions.notify.template_variables]
            fieldValue = "NOTIFICATION"
            changeMessage = "{change_message}"
            """
        )
    )
    return load_campaign(tmp_path / "c.toml")


def patched_message(request: str) -> str:
    ops = {op["path"]: op["value"] for op in json.loads(request)}
    return ops["/templateVariables/changeMessage"]


def dst_changes() -> list[int]:
    """Unix seconds of every UTC offset change of Europe/Prague in the range (from zoneinfo)."""
    out, prev = [], None
    for ts in HOURS:
        off = datetime.fromtimestamp(ts, PRAGUE).utcoffset()
        if prev is not None and off != prev:
            out.append(ts)
        prev = off
    return out


def test_every_hour_2024_2028_matches_zoneinfo_and_the_seed_is_wrong_in_dst_weeks(tmp_path: Path) -> None:
    # The event's own time drives the message here, so one render covers every hour of five years.
    renderer = ActionRenderer(campaign(tmp_path, "{{ change_message(customer.occurred_at, 'Europe/Prague') }}"),
                              START)  # fmt: skip
    rows = pd.DataFrame({"customer_id": "C1", "pass_id": "p1", "occurred_at": [str(ts) for ts in HOURS]})
    requests, errors = renderer.render("notify", rows)
    assert errors.isna().all()
    ours = [patched_message(r) for r in requests]
    expected = [reference(ts) for ts in HOURS]
    assert ours == expected  # 43 848 hours

    # The seed's template in the weeks before each change: wrong there (it decides the offset for the
    # sending time, not for the displayed one), while ours matched zoneinfo above.
    changes = dst_changes()
    assert len(changes) == 10  # March and October of five years
    week_hours = [ts for c in changes for ts in range(c - WEEK, c, 3600)]
    seed_wrong = [ts for ts in week_hours if seed_change_message(ts) != reference(ts)]
    for c in changes:
        assert sum(1 for ts in seed_wrong if 0 < c - ts <= WEEK) >= 6 * 24, datetime.fromtimestamp(c, UTC)
    print(f"\nseed changeMessage wrong for {len(seed_wrong)} of the {len(week_hours)} hours in DST weeks; ours: 0")


@pytest.mark.parametrize("hours_before", [25, 100, 167])
def test_the_run_time_template_is_right_in_the_dst_weeks(tmp_path: Path, hours_before: int) -> None:
    """The campaign's usual ``change_message(time)``: the run's ``now`` as the base."""
    c = campaign(tmp_path, "{{ change_message(time, 'Europe/Prague') }}")
    rows = pd.DataFrame({"customer_id": ["C1"], "pass_id": ["p1"]})
    for change in dst_changes():
        now = datetime.fromtimestamp(change, UTC) - timedelta(hours=hours_before)
        requests, _ = ActionRenderer(c, now).render("notify", rows)
        ts = int(now.timestamp())
        assert patched_message(requests.iloc[0]) == reference(ts)
        assert seed_change_message(ts) != reference(ts)  # exactly where the seed's template is wrong
