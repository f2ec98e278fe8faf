"""A Prefect automation that makes failed passflow runs loud: any flow run tagged ``passflow`` that
ends Failed or Crashed (a run error, too many rejected rows, rows failed at the vendor, a rejected
inbox file) sends a notification through a notification block (Slack, e-mail, Teams, …).

    python deployments/automation.py BLOCK_NAME > /tmp/automation.json
    prefect automation create --from-file /tmp/automation.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

BODY = (
    "passflow: flow run {{ flow_run.name }} of {{ flow.name }}"
    "{% if deployment %} ({{ deployment.name }}){% endif %} ended {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n"
    "Its artifacts (failure report, summary, rejects/failed-rows files) are on the run's page."
)


def failure_automation(block_document_id: str) -> dict[str, Any]:
    return {
        "name": "passflow: run failed",
        "description": "Notify when a passflow run fails (see README, 'When a run fails')",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {"prefect.resource.id": "prefect.tag.passflow", "prefect.resource.role": "tag"},
            "threshold": 1,
            "within": 0,
        },
        "actions": [
            {
                "type": "send-notification",
                "block_document_id": block_document_id,
                "subject": "passflow run failed: {{ flow.name }}",
                "body": BODY,
            }
        ],
    }


def block_id(name: str) -> str:
    """The id of the notification block saved as ``name`` (any notification block type)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        matches = [b for b in client.read_block_documents() if b.name == name]
    if not matches:
        raise SystemExit(f"no block named {name!r}; create one first (README, 'When a run fails')")
    return str(matches[0].id)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python deployments/automation.py NOTIFICATION_BLOCK_NAME")
    print(json.dumps(failure_automation(block_id(sys.argv[1])), indent=2))
