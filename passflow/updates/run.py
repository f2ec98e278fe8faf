"""One update run, Prefect-free: targets → pass ids from the ledger → rendered requests (all of them,
so a template or config problem stops the run before anything is sent) → chunks sent → every attempt
recorded in the history (and handled events / diff baselines moved in the same write).

Flows call :meth:`UpdateRun.plan`, then :meth:`UpdateRun.send_chunk` once per chunk (a Prefect task
each), then :meth:`UpdateRun.finish`; everything else calls :func:`run_update`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from passflow.config import Campaign, load_campaign
from passflow.errors import VendorError
from passflow.providers import update_support
from passflow.providers.sender import Sender
from passflow.store.ledger import CampaignLocked, Ledger
from passflow.store.updates import UpdateStore
from passflow.updates.actions import ActionRenderer, check_update_config, diff_action, update_settings
from passflow.updates.targets import customer_targets, diff_targets, event_targets, read_events

log = logging.getLogger("passflow.updates")
FLOW_NAME = "update-passes"
LOCK_WAIT_S = 600.0  # longest wait for another update run of the campaign


class UpdateRequest(BaseModel):
    """What to update. The values to send come from the campaign file's ``[updates]``."""

    model_config = ConfigDict(extra="forbid")

    campaign: str | None = Field(
        default=None, title="Campaign file", description="Path of the campaign TOML file",
        examples=["data/campaigns/skycore-coupon.toml"],
    )  # fmt: skip
    mode: Literal["customers", "events", "diff"] = Field(
        default="customers",
        title="Source of updates",
        description="customers: the ids below get one action; events: the events source mapped by "
        "[updates.rules]; diff: rerun the segment and update the customers whose values changed",
    )
    customer_ids: list[str] = Field(default_factory=list, title="Customer ids", description="For mode=customers")
    action: str | None = Field(
        default=None, title="Action", description="For mode=customers: void, expire or an [updates.actions] name"
    )
    events_file: str | None = Field(
        default=None, title="Events CSV", description="For mode=events: a CSV instead of [updates.events]"
    )
    event_key: str | None = Field(
        default=None,
        title="Event key",
        description="For mode=customers from an event (e.g. a Prefect event id): handled once per customer",
    )
    segment: str | None = Field(
        default=None, title="Segment CSV (diff)", description="For mode=diff: a CSV instead of the campaign's [source]"
    )
    origin: str = Field(default="customers", title="Origin", description="Recorded in the history (e.g. prefect-event)")
    dry_run: bool = Field(default=False, title="Dry run", description="Show what would be sent; send and write nothing")

    def flow_parameters(self) -> dict[str, Any]:
        """The flat parameters of the ``update-passes`` flow (empty string: not set)."""
        return {k: ("" if v is None else v) for k, v in self.model_dump().items()}


def request_overrides(request: UpdateRequest) -> dict[str, Any]:
    """Campaign overrides a request carries (a replacement segment CSV for ``--diff``)."""
    if not request.segment:
        return {}
    return {"source.csv": request.segment, "source.sql_url": None, "source.table": None, "source.query": None}


class UpdateRun:
    """State of one update run. Call :meth:`plan`, :meth:`send_chunk` for each chunk, :meth:`finish`."""

    def __init__(
        self,
        campaign: Campaign,
        request: UpdateRequest,
        *,
        run_id: str | None = None,
        now: datetime | None = None,
        logger: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.campaign = campaign
        self.request = request
        self.run_id = run_id or uuid.uuid4().hex
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)
        self.log = logger or log
        self._transport = transport
        self.counts: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.todo = pd.DataFrame()
        self.chunk_size = (campaign.updates.chunk_size if campaign.updates else 1000)
        self._sender: Sender | None = None
        self._lock_key = f"{campaign.name[:92]}#update"  # the lock table's key holds 100 characters
        self._started = time.perf_counter()
        self.preview: list[dict[str, Any]] = []
        action = request.action
        if request.mode == "customers" and not action:
            raise _config_error(campaign, "mode customers needs an action (e.g. --action void)", "action")
        check_update_config(campaign, action=action if request.mode == "customers" else None,
                            diff=request.mode == "diff")  # fmt: skip
        self.ledger = Ledger(campaign.ledger.url)
        self.store = UpdateStore(self.ledger)
        if not request.dry_run:
            self._wait_for_lock()
            self.ledger.start_run(self.run_id, campaign.name, FLOW_NAME)

    def _wait_for_lock(self) -> None:
        """One update run per campaign at a time (two imports of one file must not both send), but
        event-triggered runs arrive together: wait for the other run instead of failing."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self.ledger.acquire_lock(self._lock_key, self.run_id)
                return
            except CampaignLocked:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    # --- plan ---------------------------------------------------------------------------------
    def plan(self) -> dict[str, int]:
        """Find the targets, their pass ids, and render every request. Writes nothing but diff
        baselines of unchanged customers."""
        req, c = self.request, self.counts
        renderer = ActionRenderer(self.campaign, self.now)
        available = {"customer_id", "pass_id", "event", "occurred_at"}
        if req.mode == "customers":
            targets = customer_targets(req.customer_ids, req.action or "", source=req.origin)
            if req.event_key:  # an event delivered twice (at-least-once) must not act twice
                targets["event_key"] = req.event_key + ":" + targets["customer_id"]
                seen = self.store.handled(self.campaign.name, targets["event_key"])
                c["already_handled"] += int(targets["event_key"].isin(seen).sum())
                targets = targets.loc[~targets["event_key"].isin(seen)]
        elif req.mode == "events":
            events, rejected = read_events(self.campaign, req.events_file)
            c["events_rejected"] += len(rejected)
            targets, ev_counts = event_targets(self.campaign, events, self.store)
            c.update(ev_counts)
        else:
            plan = diff_targets(self.campaign, self.ledger, self.store, self.now, diff_action(self.campaign))
            targets = plan.targets
            c.update(plan.counts)
            available = plan.columns
            if not req.dry_run and len(plan.seed):
                self.store.set_baseline(self.campaign.name, plan.seed["customer_id"], plan.seed["fingerprint"],
                                        self.run_id, self.now)  # fmt: skip
        used = {diff_action(self.campaign)} if req.mode == "diff" else (
            {req.action or ""} if req.mode == "customers" else set(update_settings(self.campaign).rules.values()))
        for action in sorted(used):
            renderer.check(action, available)
        c["targets"] = len(targets)
        prev = self.ledger.lookup(self.campaign.name, targets["customer_id"])
        prev = prev.loc[(prev["status"] == "issued") & prev["pass_id"].notna() & (prev["pass_id"] != "")]
        pass_ids = prev.set_index("customer_id")["pass_id"]
        targets = targets.drop(columns=["pass_id"], errors="ignore")
        targets["pass_id"] = targets["customer_id"].map(pass_ids)
        for col in ("event", "occurred_at"):
            if col not in targets:
                targets[col] = ""
        no_pass = targets["pass_id"].isna()
        targets.loc[no_pass, "pass_id"] = ""
        targets["request"] = None
        targets["error"] = None
        targets.loc[no_pass, "error"] = "no issued pass for this customer in the ledger"
        have = targets.loc[~no_pass]
        for action, rows in have.groupby("action", sort=False):
            base = rows["base"] if rows["base"].notna().any() else None
            requests, errors = renderer.render(str(action), _template_view(rows), base)
            targets.loc[rows.index, "request"] = requests
            targets.loc[rows.index, "error"] = errors
        targets["status"] = "pending"
        targets.loc[no_pass, "status"] = "skipped"
        targets.loc[~no_pass & targets["error"].notna(), "status"] = "failed"
        targets["error_code"] = None
        targets.loc[~no_pass & targets["error"].notna(), "error_code"] = "template"
        self.todo = targets.reset_index(drop=True)
        c["no_pass"] = int(no_pass.sum())
        c["template_errors"] = int((targets["error_code"] == "template").sum())
        self.preview = [
            {"customer_id": r.customer_id, "pass_id": r.pass_id, "action": r.action, "request": r.request}
            for r in self.todo.loc[self.todo["status"] == "pending"].head(5).itertuples()
        ]
        self.log.info(
            "update plan %s (%s): %d targets, %d to send, %d without a pass",
            self.run_id, req.mode, len(targets), int((targets["status"] == "pending").sum()), c["no_pass"],
        )  # fmt: skip
        return {k: int(v) for k, v in c.items()}

    @property
    def chunk_count(self) -> int:
        return max(1, -(-len(self.todo) // self.chunk_size))

    # --- send ---------------------------------------------------------------------------------
    def send_chunk(self, index: int) -> dict[str, int]:
        """Send one chunk of planned requests and record every attempt (skipped rows too)."""
        rows = self.todo.iloc[index * self.chunk_size : (index + 1) * self.chunk_size].copy()
        if rows.empty:
            return {"sent": 0, "failed": 0}
        pending = rows["status"] == "pending"
        if self.request.dry_run:
            self.counts["would_send"] += int(pending.sum())
            return {"would_send": int(pending.sum())}
        rows["attempts"] = 0
        rows["retryable"] = False
        if pending.any():
            if self._sender is None:
                self._sender = update_support(self.campaign).sender(self.campaign, self.now, self._transport)
            sub = rows.loc[pending]
            results = self._sender.send(list(zip(sub["pass_id"], sub["request"], strict=True)))
            rows.loc[pending, "status"] = ["sent" if r.ok else "failed" for r in results]
            rows.loc[pending, "error_code"] = [r.error_code for r in results]
            rows.loc[pending, "error"] = [r.error for r in results]
            rows.loc[pending, "attempts"] = [r.attempts for r in results]
            rows.loc[pending, "retryable"] = [r.retryable for r in results]
        self.store.record(self.campaign.name, self.campaign.provider, rows, self.run_id, datetime.now(UTC))
        self.ledger.heartbeat(self._lock_key, self.run_id)
        status = Counter(rows["status"])
        self.counts.update({k: v for k, v in status.items()})
        self.error_codes.update(rows.loc[rows["status"] == "failed", "error_code"].dropna())
        if self._sender is not None and self._sender.stop_reason:
            # Recorded first, so the history says what was sent; then stop loudly (the run fails).
            raise VendorError(f"update run {self._sender.stop_reason}")
        return {k: int(v) for k, v in status.items()}

    # --- the end ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "run_id": self.run_id,
            "campaign": self.campaign.name,
            "provider": self.campaign.provider,
            "mode": self.request.mode,
            "dry_run": self.request.dry_run,
            **{k: int(v) for k, v in sorted(c.items())},
            "error_codes": dict(self.error_codes),
            "vendor_calls": self._sender.calls if self._sender else 0,
            "elapsed_s": round(time.perf_counter() - self._started, 3),
            "preview": self.preview if self.request.dry_run else [],
        }

    def finish(self) -> dict[str, Any]:
        out = self.summary()
        if not self.request.dry_run:
            self.ledger.finish_run(self.run_id, "failed" if self.counts["failed"] else "completed", out)
        self.close()
        return out

    def abort(self, error: BaseException) -> None:
        if not self.request.dry_run:
            self.ledger.finish_run(self.run_id, "failed", {"error": type(error).__name__})
        self.close()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if not self.request.dry_run:
            self.ledger.release_lock(self._lock_key, self.run_id)
        self.ledger.close()


def _template_view(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns templates may read: the row's own, without the update machinery's."""
    drop = ["action", "source", "event_key", "baseline", "base", "request", "error", "status", "error_code"]
    view = rows.drop(columns=[c for c in drop if c in rows.columns])
    return view.astype(object).where(view.notna(), "").astype("str")


def _config_error(campaign: Campaign, message: str, key: str) -> Exception:
    from passflow.errors import ConfigError

    return ConfigError(message, file=str(campaign.path) if campaign.path else None, key=key)


def run_update(
    campaign: Campaign | str,
    request: UpdateRequest,
    *,
    now: datetime | None = None,
    logger: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Plan, send and record one update run without Prefect; returns the summary.

    ``campaign``: a loaded :class:`~passflow.config.Campaign` or a campaign file path. Example — void
    the passes of every customer whose app-uninstall callback is in ``passflow_pass_events``::

        run_update(load_campaign("c.toml"), UpdateRequest(mode="events"))   # [updates.events] table = …
    """
    overrides = request_overrides(request)
    loaded = load_campaign(campaign, overrides) if isinstance(campaign, str) else campaign
    if overrides and not isinstance(campaign, str):
        assert campaign.path is not None, "a segment override needs the campaign's file"
        loaded = load_campaign(campaign.path, overrides)
    run = UpdateRun(loaded, request, now=now, logger=logger, transport=transport)
    try:
        run.plan()
        for i in range(run.chunk_count):
            run.send_chunk(i)
    except BaseException as exc:
        run.abort(exc)
        raise
    return run.finish()


def customer_history(campaign: Campaign, customer_id: str) -> pd.DataFrame:
    """Every update attempt for one customer, oldest first: what was sent, result, error code, when,
    run id, source — "what did customer X get, and when"."""
    ledger = Ledger(campaign.ledger.url)
    try:
        return UpdateStore(ledger).history(campaign.name, customer_id)
    finally:
        ledger.close()
