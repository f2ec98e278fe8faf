"""Vendor callbacks closing the loop: Skycore postbacks and Passmachine webhooks, authenticated,
recorded idempotently in the ledger database, and turned into Prefect events.

* :mod:`.auth` — HMAC signature / shared token checks (constant time, replay window)
* :mod:`.payloads` — vendor bodies → parsed callbacks
* :mod:`passflow.store.events` — ``passflow_pass_events`` and ``passflow_install_status``
* :mod:`.events` — ``passflow.pass.<event>`` Prefect events
* :mod:`.app` / :mod:`.server` — the HTTP endpoint and how it runs
* :mod:`.funnel` — issued → installed → uninstalled counts
"""
