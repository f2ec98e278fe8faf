"""A recorded callback becomes a real Prefect event (temporary Prefect API), with the labels the
update path's deployment trigger matches."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from passflow.callbacks.events import emit_pass_event, event_id
from passflow.store.events import PassEvent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_uninstall_is_emitted_to_the_prefect_api_once() -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    at = datetime.now(UTC).replace(microsecond=0)
    ev = PassEvent("skycore", "pf-coupon", "c42", "P42", "uninstalled", "pb-42", at, {})
    assert emit_pass_event(ev) is True
    assert emit_pass_event(ev) is True  # a re-emission carries the same event id
    EventsWorker.drain_all()
    flt = EventFilter(
        event=EventNameFilter(name=["passflow.pass.uninstalled"]),
        resource=EventResourceFilter(id=["passflow.pass.pf-coupon.c42"]),
    )
    with get_client(sync_client=True) as client:
        for _ in range(50):  # the server persists events asynchronously
            events = client.read_events(filter=flt, limit=50).events
            if events:
                break
            time.sleep(0.2)
    assert len(events) == 1
    got = events[0]
    assert got.id == event_id("skycore", "pb-42") and got.occurred == at
    assert dict(got.resource) == {
        "prefect.resource.id": "passflow.pass.pf-coupon.c42",
        "passflow.campaign": "pf-coupon",
        "passflow.customer_id": "c42",
        "passflow.pass_id": "P42",
    }
    assert got.payload == {"provider": "skycore", "vendor_event_id": "pb-42"}
