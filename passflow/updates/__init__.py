"""Pass updates after issuance — Prefect-free (the flow is ``flows/update_passes.py``).

For a campaign, take a set of customers and the change to make, find their pass ids in the ledger,
send the update (Skycore pass update API, Passmachine JSON Patch) within the campaign's ``[limits]``
and record every attempt.

Sources of updates (:class:`UpdateRequest` ``mode``)
----------------------------------------------------
``customers``
    A list of customer ids and one action (``void``, ``expire``, or an ``[updates.actions]`` name).
``events``
    An events table mapped to actions by ``[updates.rules]`` (``app_uninstalled = "void"``): a CSV
    (``customer_id,event,occurred_at[,event_id]``), a SQL table, or the vendor callbacks table
    ``passflow_pass_events`` in the ledger DB (``[updates.events] table = "passflow_pass_events"``;
    event key ``provider:vendor_event_id``, else ``id:<id>``). A handled event is never acted on
    again, so importing a file twice sends nothing new.
``diff``
    Rerun the segment; update only customers whose pass-relevant values (the issuer templates that
    read customer columns) changed since the last successful send. Unchanged customers cost no call.

Stopping
--------
Refused credentials (Passmachine 401/403 for good, Skycore ``E101``) stop a run at the first call with
the vendor's message; otherwise ``[limits] failure_threshold`` / ``failure_min_calls`` apply as for
issuance. Attempts made are recorded first, the rest as ``not_sent``; their events stay open.

Campaign file
-------------
::

    [updates]
    api_base_url = "http://127.0.0.1:8765/skycore"     # Skycore only (the sandbox here)
    api_key = { env = "SKYCORE_API_KEY" }             # Skycore only: X-Api-Key
    pass_template_id = "d5144e25f17beaa"               # Skycore only
    diff_action = "refresh"                            # what --diff sends (Skycore: required)
    [updates.actions.refresh.pass_data]                # Skycore: pass-data templates
    pass-update-notification = "Hi {{ customer.first_name }}, your coupon changed."
    [updates.actions.notify.template_variables]        # Passmachine: replace /templateVariables/…
    fieldValue = "NOTIFICATION"
    changeMessage = "{{ change_message(time) }}"
    [updates.rules]
    app_uninstalled = "void"
    [updates.events]
    csv = "../events/app-events.csv"

Python API
----------
:func:`run_update` (plan → send → record in one call), :class:`UpdateRun` (the same in steps, for
the flow's tasks), :func:`customer_history` ("what did customer X get, and when").
"""

from passflow.updates.run import UpdateRequest, UpdateRun, customer_history, run_update

__all__ = ["UpdateRequest", "UpdateRun", "customer_history", "run_update"]
