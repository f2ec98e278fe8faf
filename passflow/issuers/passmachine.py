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
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from passflow.asyncloop import BackgroundLoop
from passflow.config import Campaign
from passflow.failstop import FailureStop
from passflow.issuers.base import (
    OUTCOME_COLUMNS,
    DeliveryContext,
    Issuer,
    Sending,
    campaign_vars,
    compile_templates,
    fingerprint,
    render_fields,
)
from passflow.limiter import RateLimiter
from passflow.providers.passmachine import (
    CallResult,
    PassmachineClient,
    PassmachineError,
    PassmachineSettings,
    pass_id_of,
    pass_link_of,
)
from passflow.secrets import resolve_secret
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
        pm = campaign.passmachine
        assert pm is not None
        self.cfg = pm
        self.limits = campaign.limits
        file = str(campaign.path)
        # Resolve credentials now: a missing one stops the run before anything is read or sent.
        self._public = resolve_secret(pm.public_token, file=file, key="passmachine.public_token")
        self._secret = resolve_secret(pm.secret_token, file=file, key="passmachine.secret_token")
        templates = {_TV + k: v for k, v in pm.template_variables.items()}
        templates |= {_MD + k: v for k, v in pm.metadata.items() if k != pm.lookup_metadata_key}
        self.templates = compile_templates(
            templates, section="passmachine", campaign_vars=campaign_vars(campaign.campaign), now=now
        )
        self.client_settings = PassmachineSettings(
            base_url=pm.api_base_url,
            account=pm.account,
            auth_style=pm.auth_style,
            token_field=pm.token_field,
            token_ttl_s=pm.token_ttl_s,
            timeout_s=campaign.limits.timeout_s,
            max_attempts=campaign.limits.max_attempts,
            lookup_metadata_key=pm.lookup_metadata_key,
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
            self._loop = BackgroundLoop()

            async def make() -> PassmachineClient:
                limiter = RateLimiter(
                    max_in_flight=self.limits.max_in_flight, max_per_second=self.limits.max_per_second
                )
                return PassmachineClient(
                    self.client_settings,
                    public_token=self._public.get_secret_value(),
                    secret_token=self._secret.get_secret_value(),
                    limiter=limiter,
                    transport=self.transport,
                )

            self._client = self._loop.run(make())
        return self._loop, self._client

    def close(self) -> None:
        if self._loop is not None:
            if self._client is not None:
                # closing must not mask the run's own error
                with contextlib.suppress(Exception):
                    self._loop.run(self._client.aclose())
            self._loop.close()
        self._loop = self._client = None
        self._dispatched = None

    # --- deliver -------------------------------------------------------------------------------
    def _intent_slice(self) -> int:
        # Rows marked pending ahead of sending: enough to keep the pipe full for a few seconds,
        # few enough that a crash leaves little to reconcile.
        rate = self.limits.max_per_second or 100.0
        return int(max(50, min(2000, rate * 4, self.limits.max_in_flight * 20)))

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext, ledger: Any) -> pd.DataFrame:
        return self.start_deliver(todo, ctx, ledger).result()

    def start_deliver(self, todo: pd.DataFrame, ctx: DeliveryContext, ledger: Any) -> Sending:
        # Runs on the run's loop while the caller records/exports the previous batch; the requests of
        # both batches queue in the one limiter, so the rate holds and the pipe never drains.
        loop, client = self._ensure_client()
        return loop.submit(self._deliver(todo, ctx, ledger, client))

    def halt(self) -> None:
        self._halted = True

    async def _deliver(
        self, todo: pd.DataFrame, ctx: DeliveryContext, ledger: Any, client: PassmachineClient
    ) -> pd.DataFrame:
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
                await asyncio.to_thread(
                    ledger.mark_pending, ctx.campaign, self.provider, part[["customer_id", "fingerprint"]], ctx.run_id
                )
                # a batch can take longer than the lock's stale time at a low rate: keep the lock fresh
                await asyncio.to_thread(ledger.heartbeat, ctx.lock_key or ctx.campaign, ctx.run_id)
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


def refusal(result: CallResult) -> str | None:
    """The vendor's message when it refused the credentials or the account (401/403 for good)."""
    if not result.ok and result.permanent and result.status in (401, 403):
        return result.error or f"HTTP {result.status}"
    return None


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
