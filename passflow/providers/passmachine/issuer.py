"""Passmachine issuer: one pass per customer through the vendor API, within its throughput limits.

Prepare renders ``templateVariables`` and ``metadata`` from the campaign's templates into one JSON
payload per customer (its SHA-256 is the fingerprint) and puts our customer id into
``metadata[lookup_metadata_key]``, so a pass can be found again after a crash.

Deliver runs on the run's background event loop with one pooled client and one limiter for the
whole run (the limit holds across chunks). Intent before effect: a slice of rows is marked
``pending`` in the ledger *before* any of its requests is sent; the engine records the results
after the batch. A crash therefore leaves ``pending`` rows, which the next run reconciles through
the vendor's lookup before re-creating anything. A campaign-level failure threshold stops a run
that is clearly misconfigured (e.g. every call answers 400) instead of burning through the segment.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from passflow.config import Campaign
from passflow.providers.base import (
    OUTCOME_COLUMNS,
    DeliveryContext,
    Issuer,
    Sending,
    campaign_vars,
    compile_templates,
    fingerprint,
    render_fields,
)
from passflow.providers.http.failstop import FailureStop
from passflow.providers.http.loop import BackgroundLoop
from passflow.providers.passmachine.client import (
    CallResult,
    PassmachineClient,
    PassmachineError,
    pass_id_of,
    pass_link_of,
    refusal,
)
from passflow.providers.passmachine.connection import close_client, credentials, open_client
from passflow.shutdown import crash_point, stop_requested
from passflow.validate import ROW, Rejects

_TV, _MD = "templateVariables.", "metadata."


class PassmachineIssuer(Issuer):
    provider = "passmachine"
    extra_columns = ["payload"]
    overlaps = True
    #: tests inject an httpx transport here (e.g. MockTransport); None = real network
    transport: httpx.AsyncBaseTransport | None = None

    def __init__(self, campaign: Campaign, now: datetime, *, dry_run: bool = False) -> None:
        pm = campaign.settings
        self.cfg = pm
        self.limits = campaign.limits
        self._campaign = campaign
        # Resolve credentials now: a missing one stops the run before anything is read or sent.
        credentials(campaign)
        templates = {_TV + k: v for k, v in pm.template_variables.items()}
        templates |= {_MD + k: v for k, v in pm.metadata.items() if k != pm.lookup_metadata_key}
        self.templates = compile_templates(
            templates, section="passmachine", campaign_vars=campaign_vars(campaign.campaign), now=now
        )
        self._loop: BackgroundLoop | None = None
        self._client: PassmachineClient | None = None
        self._dispatched: asyncio.Event | None = None  # the last batch started has handed out every row
        self.calls = 0  # HTTP attempts, for the achieved-rate report
        self.stop = FailureStop(campaign.limits, "Passmachine", see="the failed-rows file")
        self._halted = False  # the run is failing: send nothing more

    @property
    def stop_reason(self) -> str | None:
        return self.stop.reason

    @property
    def reissue_changed(self) -> bool:
        # An issued pass is changed with update-passes (PATCH), never by creating a second pass.
        return False

    def template_columns(self) -> set[str]:
        return set().union(*(t.columns for t in self.templates.values())) if self.templates else set()

    # --- prepare -------------------------------------------------------------------------------
    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        df, values = render_fields(self.templates, df, rejects)
        key = self.cfg.lookup_metadata_key
        tv_cols = [c for c in values.columns if c.startswith(_TV)]
        md_cols = [c for c in values.columns if c.startswith(_MD)]
        payloads = [
            json.dumps(
                {
                    "templateId": self.cfg.template_id,
                    "templateVariables": {c[len(_TV) :]: v for c, v in zip(tv_cols, tv, strict=True)},
                    "metadata": {**{c[len(_MD) :]: v for c, v in zip(md_cols, md, strict=True)}, key: cid},
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for tv, md, cid in zip(
                values[tv_cols].itertuples(index=False, name=None),
                values[md_cols].itertuples(index=False, name=None),
                df["customer_id"],
                strict=True,
            )
        ]
        payload = pd.Series(payloads, index=df.index, dtype="str")
        return pd.DataFrame(
            {
                ROW: df[ROW],
                "customer_id": df["customer_id"],
                "email": df["email"],
                "phone": df["phone"],
                "fingerprint": fingerprint(payload),
                "payload": payload,
            }
        )

    # --- the client, on the run's loop -----------------------------------------------------------
    def _ensure_client(self) -> tuple[BackgroundLoop, PassmachineClient]:
        if self._loop is None or self._client is None:
            self._loop, self._client = open_client(self._campaign, self.transport)
        return self._loop, self._client

    def close(self) -> None:
        if self._loop is not None:
            close_client(self._loop, self._client)
        self._loop = self._client = None
        self._dispatched = None

    # --- deliver -------------------------------------------------------------------------------
    def _intent_slice(self) -> int:
        # Rows marked pending ahead of sending: enough to keep the pipe full for a few seconds,
        # few enough that a crash leaves little to reconcile.
        rate = self.limits.max_per_second or 100.0
        return int(max(50, min(2000, rate * 4, self.limits.max_in_flight * 20)))

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        return self.start_deliver(todo, ctx).result()

    def start_deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> Sending:
        # Runs on the run's loop while the caller records/exports the previous batch; the requests of
        # both batches queue in the one limiter, so the rate holds and the pipe never drains.
        loop, client = self._ensure_client()
        return loop.submit(self._deliver(todo, ctx, client))

    def halt(self) -> None:
        self._halted = True

    async def _deliver(self, todo: pd.DataFrame, ctx: DeliveryContext, client: PassmachineClient) -> pd.DataFrame:
        rows = list(zip(todo["customer_id"], todo["fingerprint"], todo["payload"], strict=True))
        outcomes: list[dict[str, Any] | None] = [None] * len(rows)
        queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=self._intent_slice())
        workers = self.limits.max_in_flight
        # Batches send in order: this one's requests start once the previous batch has handed out its
        # last row. Interleaved, two overlapping batches would finish together and the pipe would
        # drain while the run records them and prepares the next two (a 0.3 s gap every two
        # batches, measured at 500/s); in order, one batch is always sending while the other is
        # being recorded. Its intents are written meanwhile.
        previous, dispatched = self._dispatched, asyncio.Event()
        self._dispatched = dispatched

        async def produce() -> None:
            step = self._intent_slice()
            for start in range(0, len(rows), step):
                if self.stop_reason or self._halted or stop_requested():
                    break
                part = todo.iloc[start : start + step]
                # Intent before effect: nothing is sent for a row before it is pending in the ledger.
                # (and the lock's heartbeat: a batch can take longer than its stale time at a low rate)
                await asyncio.to_thread(ctx.journal.mark_pending, part[["customer_id", "fingerprint"]])
                for i in range(start, start + len(part)):
                    await queue.put(i)
            for _ in range(workers):
                await queue.put(None)

        async def work() -> None:
            if previous is not None:
                await previous.wait()
            while (i := await queue.get()) is not None:
                cid, fp, payload = rows[i]
                if self.stop_reason or self._halted or stop_requested():
                    why = (
                        self.stop_reason.split(":")[0]
                        if self.stop_reason
                        else "stopped by SIGTERM" if stop_requested() else "run aborted"
                    )
                    outcomes[i] = _outcome(cid, fp, "failed", error="not sent: " + why)
                    continue
                body = json.loads(payload)
                result = await client.create_pass(
                    template_id=body["templateId"],
                    template_variables=body["templateVariables"],
                    metadata=body["metadata"],
                )
                outcomes[i] = self._from_result(cid, fp, result)
                crash_point("issue")
            dispatched.set()  # every row is taken: the next batch may start sending

        try:
            await asyncio.gather(produce(), *(work() for _ in range(workers)))
        finally:
            dispatched.set()  # (a worker that takes the end marker has set it already)
        # Rows never queued because the run stopped: they were never sent either.
        done = [
            o if o is not None else _outcome(rows[i][0], rows[i][1], "failed", error="not sent: run stopped")
            for i, o in enumerate(outcomes)
        ]
        return pd.DataFrame(done, columns=OUTCOME_COLUMNS)

    def _from_result(self, cid: str, fp: str, result: CallResult) -> dict[str, Any]:
        self.calls += result.attempts
        self.stop.record(result.ok, refused=refusal(result))
        if result.ok:
            pid, link = pass_id_of(result.data), pass_link_of(result.data)
            return _outcome(cid, fp, "issued", pass_id=pid, pass_link=link, issued_at=datetime.now(UTC))
        if result.ambiguous:
            # The vendor may have created it: keep it pending so the next run reconciles first.
            return _outcome(cid, fp, "pending", error=f"outcome unknown, reconciled on the next run: {result.error}")
        return _outcome(cid, fp, "failed", error=result.error or "failed")

    def reconcile(self, pending: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        """Look up rows an interrupted run left pending; return the ones resolved (found, or unknowable)."""
        loop, client = self._ensure_client()
        return loop.run(self._reconcile(pending, client))

    async def _reconcile(self, pending: pd.DataFrame, client: PassmachineClient) -> pd.DataFrame:
        key = self.cfg.lookup_metadata_key

        async def one(cid: str, fp: str) -> dict[str, Any] | None:
            # The client's limiter bounds these lookups like any other call.
            try:
                found = await client.find_passes(key, cid)
            except PassmachineError as exc:
                # Cannot tell whether a pass exists: never create a possible duplicate.
                return _outcome(cid, fp, "pending", error=f"could not reconcile (will retry next run): {exc}")
            mine = [p for p in found if p.get("templateId") in (None, self.cfg.template_id)]
            if not mine:
                return None  # nothing was created: the engine creates it now
            mine.sort(key=lambda p: str(p.get("createdAt", "")))
            first = {"data": mine[0]}
            note = None
            if len(mine) > 1:
                note = f"{len(mine)} passes exist at the vendor for this customer; kept the first"
            created = pd.to_datetime(mine[0].get("createdAt"), utc=True, errors="coerce")
            return _outcome(
                cid,
                fp,
                "issued",
                pass_id=pass_id_of(first),
                pass_link=pass_link_of(first),
                issued_at=created if created is not pd.NaT else datetime.now(UTC),
                error=note,
            )

        results = await asyncio.gather(
            *(one(c, f) for c, f in zip(pending["customer_id"], pending["fingerprint"], strict=True))
        )
        return pd.DataFrame([r for r in results if r is not None], columns=OUTCOME_COLUMNS)


def _outcome(
    cid: str,
    fp: str,
    status: str,
    *,
    pass_id: str | None = None,
    pass_link: str | None = None,
    issued_at: Any = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "status": status,
        "pass_id": pass_id,
        "pass_link": pass_link,
        "fingerprint": fp,
        "last_error": error,
        "issued_at": issued_at,
    }
