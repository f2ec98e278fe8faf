"""One issuance run, Prefect-free, top-down: stage (read → validate → render/sign) → reject-rate
gate → plan against the ledger (:mod:`.plan`) → deliver (the provider's issuer) → record (through the
run's :mod:`.journal`) → export.

The run has two stages so that "too many rejects" stops it *before anything is issued*:

1. **stage** — each source chunk is validated and prepared (templates rendered, links signed or
   payloads built) and appended to a local Arrow spool (one file per chunk); rejects go to the
   rejects file. The source is read exactly once (a SQL segment may change between two reads).
   A big run does this in worker processes while it reads on (:mod:`passflow.run.staging`).
2. **deliver** — each spooled batch is planned against the ledger (skip unchanged, re-issue
   changed, retry failed, reconcile pending), issued, recorded and appended to the exports. A big
   run records each batch in a worker while it plans and exports the next one.

Exports are committed (atomic rename) only when every batch succeeded; a failed run leaves no
export file behind, and its ledger rows make the rerun pick up where it stopped.

:mod:`.sequence` runs these stages in order (the CLI, the issue flow and the shard flow share it);
flows call the stage methods from Prefect tasks (one task per chunk of rows).
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from passflow import tuning
from passflow.config import Campaign
from passflow.errors import RejectRateExceeded, VendorError
from passflow.exports import (
    AttributeExport,
    CsvCells,
    DbAttributeExport,
    cleanup_stale_partials,
    export_file_prefix,
    install_status_columns,
    with_install_status,
    write_report_csv,
)
from passflow.exports.deliver import deliver_exports, delivery_marker
from passflow.exports.formats import get_format
from passflow.exports.limits import fail_long_values, reject_long_values, value_limits
from passflow.providers import make_issuer, provider_of
from passflow.providers.base import BASE_COLUMNS, OUTCOME_COLUMNS, DeliveryContext, Sending, StagesInWorkers
from passflow.run.journal import RunJournal
from passflow.run.plan import Plan, empty_ledger_rows, plan_batch
from passflow.run.shards import Shard, check_shard, in_shard, shard_campaign
from passflow.run.staging import (
    LedgerWriter,
    Spool,
    StagedChunk,
    StagePool,
    WorkerSpec,
    apply_run_checks,
    pool_workers,
    release_memory,
    same_sqlite_file,
    wants_pool,
)
from passflow.shutdown import check_stop, crash_point
from passflow.sources import MalformedRow, read_csv_chunks, read_sql_chunks
from passflow.validate import ROW, FieldRules, Rejects, SeenKeys, check_columns, validate_chunk

log = logging.getLogger("passflow")


@dataclass
class RunCounts:
    read: int = 0
    rejected: int = 0
    prepared: int = 0
    skipped_unchanged: int = 0
    changed_not_reissued: int = 0
    issued_new: int = 0
    reissued_changed: int = 0
    retried: int = 0
    reconciled: int = 0
    failed: int = 0
    exported: int = 0

    @property
    def issued(self) -> int:
        return self.issued_new + self.reissued_changed + self.retried + self.reconciled


@dataclass
class RunResult:
    run_id: str
    campaign: str
    provider: str
    dry_run: bool
    counts: RunCounts
    reject_reasons: dict[str, int]
    timings: dict[str, float]
    export_files: list[str] = field(default_factory=list)
    delivered_files: list[str] = field(default_factory=list)  # s3://… / sftp://… URLs ([export.deliver])
    rejects_file: str | None = None
    failures_file: str | None = None
    preview: pd.DataFrame | None = None
    limit_per_second: float | None = None
    vendor_calls: int = 0

    def summary(self) -> dict[str, Any]:
        c = self.counts
        rate = None
        deliver_s = self.timings.get("deliver_s") or 0.0
        if self.vendor_calls and deliver_s:
            rate = round(self.vendor_calls / deliver_s, 2)
        return {
            "run_id": self.run_id,
            "campaign": self.campaign,
            "provider": self.provider,
            "dry_run": self.dry_run,
            "read": c.read,
            "rejected": c.rejected,
            "skipped_unchanged": c.skipped_unchanged,
            "changed_not_reissued": c.changed_not_reissued,
            "issued_new": c.issued_new,
            "reissued_changed": c.reissued_changed,
            "retried": c.retried,
            "reconciled": c.reconciled,
            "failed": c.failed,
            "exported": c.exported,
            "reject_reasons": dict(self.reject_reasons),
            "vendor_calls": self.vendor_calls,
            "achieved_rate_per_s": rate,
            "limit_per_s": self.limit_per_second,
            **{k: round(v, 3) for k, v in self.timings.items()},
            "export_files": self.export_files,
            "delivered_files": self.delivered_files,
            "rejects_file": self.rejects_file,
            "failures_file": self.failures_file,
            "preview": _preview_records(self.preview),
        }


def _preview_records(preview: pd.DataFrame | None) -> list[dict[str, str]]:
    if preview is None or preview.empty:
        return []
    cols = [c for c in ("__row__", "customer_id", "pass_id", "pass_link", "payload") if c in preview.columns]
    return preview[cols].astype("str").to_dict("records")


def new_run_id() -> str:
    # Export file names carry the first 8 characters: they must be the random part.
    return uuid.uuid4().hex


class IssueRun:
    """State of one run. Not thread-safe: call the stage methods in order."""

    def __init__(
        self,
        campaign: Campaign,
        *,
        run_id: str | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
        logger: Any = None,
        preview_rows: int = 5,
        flow_name: str = "issue-passes",
        shard: Shard | None = None,
    ) -> None:
        # One shard of a split run: its customers only, its share of the limit, its own lock.
        self.shard = check_shard(shard) if shard is not None else None
        if self.shard is not None:
            campaign = shard_campaign(campaign, self.shard)
        self.campaign = campaign
        self.run_id = run_id or new_run_id()
        self.dry_run = dry_run
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)
        self.log = logger or log
        self.preview_rows = preview_rows
        self.counts = RunCounts()
        self.reasons: Counter[str] = Counter()
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()
        self._gc_held = False
        cols = campaign.columns
        self.rules = FieldRules(
            customer_id=cols.customer_id,
            email=cols.email,
            phone=cols.phone,
            require_email=campaign.validation.require_email,
            require_phone=campaign.validation.require_phone,
            default_region=campaign.validation.default_phone_region,
            allow_test_domains=campaign.validation.allow_test_domains,
        )
        self.issuer = make_issuer(campaign, self.now, dry_run=dry_run)
        # CRM limits on attribute values: a row over them is rejected before anything is issued
        self.value_limits = value_limits(
            (get_format(f), campaign.export.format_settings(f)) for f in campaign.export.formats
        )
        self.seen = SeenKeys()
        self._workdir = Path(tempfile.mkdtemp(prefix="passflow-run-"))
        self._schema = pa.schema(
            [(ROW, pa.int64())]
            + [(c, pa.large_string()) for c in BASE_COLUMNS[1:] + self.issuer.extra_columns]
        )
        self._spool = Spool(self._workdir, self._schema)  # one Arrow file per staged chunk
        self._spool_reader: Spool | None = None  # the spool, once staging is over
        self._reject_frames: list[pd.DataFrame] = []
        # Ragged CSV rows: the reader appends them here while it streams; the next stage call rejects them.
        self._malformed: list[MalformedRow] = []
        self._failure_frames: list[pd.DataFrame] = []
        self._columns_checked = False
        self._preview: list[pd.DataFrame] = []
        self.rejects_file: str | None = None
        self.journal: RunJournal | None = None  # the ledger, as this run reads and writes it
        self.exports: list[AttributeExport] = []
        self.db_export: DbAttributeExport | None = None
        self._pool: StagePool | None = None  # worker processes of a big run (passflow.run.staging)
        self._pooling = False  # chunks go to the pool (from then on, all of them: order matters)
        self._pool_failed = False  # the workers could not start: stage here
        self._ledger_writer: LedgerWriter | None = None
        self._sending: _Sending | None = None  # a batch whose requests are still going out

        if not dry_run:
            self.journal = RunJournal.open(
                campaign.ledger.url,
                campaign=campaign.name,
                provider=campaign.provider,
                run_id=self.run_id,
                flow_name=flow_name,
                shard=self.shard,
            )
            self._start_pool_if_big()  # the workers start while the first chunk is read
        elif _ledger_exists(campaign.ledger.url):
            self.journal = RunJournal.read_only(campaign.ledger.url, campaign=campaign.name, provider=campaign.provider)
        tuning.gc_hold()  # until close(): what exists now outlives the run
        self._gc_held = True

    # --- stage 1 ------------------------------------------------------------------------------
    def source_chunks(self) -> Iterator[pd.DataFrame]:
        """Stream the segment. Ragged CSV rows are collected and rejected with the next chunk."""
        src = self.campaign.source
        t0 = time.perf_counter()
        if src.csv:
            chunks = read_csv_chunks(
                src.csv,
                encoding=src.encoding,
                delimiter=src.delimiter,
                chunk_size=src.chunk_size,
                malformed=self._malformed,
            )
        else:
            chunks = read_sql_chunks(
                src.sql_url or "", table=src.table, query=src.query, chunk_size=src.chunk_size
            )
        for chunk in chunks:
            self.timings["read_s"] = self.timings.get("read_s", 0.0) + time.perf_counter() - t0
            crash_point("read")
            yield chunk
            t0 = time.perf_counter()
        self.timings["read_s"] = self.timings.get("read_s", 0.0) + time.perf_counter() - t0

    @property
    def source_label(self) -> str:
        src = self.campaign.source
        if src.csv:
            return src.csv
        from sqlalchemy.engine import make_url

        return make_url(src.sql_url or "").render_as_string(hide_password=True) + f" ({src.table or 'query'})"

    def stage_chunk(self, chunk: pd.DataFrame) -> dict[str, int]:
        """Validate and prepare one source chunk; append good rows to the spool."""
        check_stop("while reading the segment (nothing was sent)")
        t0 = time.perf_counter()
        rejects = Rejects()
        if self.shard is not None:
            chunk = self._own_rows(chunk)
        if self._malformed:  # ragged rows the reader met before this chunk
            rejects.frames.append(_malformed_rejects(self._malformed))
            self.counts.read += len(self._malformed)
            self._malformed.clear()
        if not self._columns_checked:
            check_columns(list(chunk.columns), self.rules, self.issuer.template_columns(), self.source_label)
            self._columns_checked = True
        n_read = len(chunk)
        self.counts.read += n_read
        if n_read and self._use_pool():
            assert self._pool is not None
            n_rej = self._keep_rejects(rejects)  # malformed rows
            n = 0
            for staged in self._pool.submit(chunk, self._spool.reserve()):
                n_more, n_rej_more = self._apply_staged(staged)
                n, n_rej = n + n_more, n_rej + n_rej_more
        else:
            n, n_rej = self._stage_here(chunk, rejects)
        release_memory()
        self.timings["stage_s"] = self.timings.get("stage_s", 0.0) + time.perf_counter() - t0
        return {"rows": n_read, "prepared": n, "rejected": n_rej}

    def _own_rows(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """This shard's rows of a source chunk; unreadable (ragged) rows are reported by shard 0 only."""
        assert self.shard is not None
        if self.shard[0] != 0:
            self._malformed.clear()
        if self.rules.customer_id not in chunk.columns:
            return chunk  # the column check names the missing column
        return chunk.loc[in_shard(chunk[self.rules.customer_id].fillna(""), self.shard)]

    def _stage_here(self, chunk: pd.DataFrame, rejects: Rejects) -> tuple[int, int]:
        good = validate_chunk(chunk, self.rules, self.seen, rejects)
        prepared = self.issuer.prepare(good, rejects) if len(good) else None
        if prepared is not None:
            prepared = reject_long_values(prepared, self.value_limits, rejects)
        n = 0
        if prepared is not None and len(prepared):
            self._spool.write(prepared)
            n = len(prepared)
            self.counts.prepared += n
        return n, self._keep_rejects(rejects)

    def _keep_rejects(self, rejects: Rejects) -> int:
        rej = rejects.frame()
        if len(rej):
            self._reject_frames.append(rej)
            self.reasons.update(rej["reason_code"].tolist())
            self.counts.rejected += len(rej)
        return len(rej)

    # A big run stages in worker processes (passflow.run.staging): they validate and prepare chunks
    # while this process reads the next one; the run-wide checks are applied here, in chunk order.
    def _start_pool_if_big(self) -> None:
        if self._pool is not None or self._pool_failed:
            return
        if wants_pool(self.issuer, csv_path=self.campaign.source.csv, rows_read=self.counts.read):
            assert isinstance(self.issuer, StagesInWorkers)
            make = self.issuer.worker_factory()
            try:
                self._pool = StagePool(
                    WorkerSpec(make, self.rules, self._schema, self.value_limits), pool_workers()
                ).start()
            except Exception as exc:  # noqa: BLE001 - e.g. no POSIX semaphores here: stage without workers
                self._pool_failed = True
                self.log.warning("staging without worker processes: %s: %s", type(exc).__name__, exc)

    def _use_pool(self) -> bool:
        """Whether this chunk goes to the workers: once they are up (until then, stage here)."""
        if self._pooling:
            return True  # and every later chunk: chunks must be applied in order
        if self._pool is None:
            self._start_pool_if_big()
        elif self._pool.failed is not None:
            self.log.warning("staging without worker processes: %s", self._pool.failed)
            self._pool_failed = True
            self._pool.close()
            self._pool = None
        self._pooling = self._pool is not None and self._pool.ready
        return self._pooling

    def _apply_staged(self, staged: StagedChunk) -> tuple[int, int]:
        rejects = Rejects()
        segment, n = apply_run_checks(staged, self.seen, self.issuer, rejects, self._schema)
        if segment is not None:
            self._spool.add(segment)
            self.counts.prepared += n
        return n, self._keep_rejects(rejects)

    def end_staging(self) -> None:
        """Flush the spool, write the rejects file, and stop here if the reject rate is too high."""
        if self._pooling:
            assert self._pool is not None
            t0 = time.perf_counter()
            for staged in self._pool.drain():
                self._apply_staged(staged)
            self.timings["stage_s"] = self.timings.get("stage_s", 0.0) + time.perf_counter() - t0
        # The run-wide duplicate sets are done with (16 bytes a row each): free them before delivery.
        self.seen = SeenKeys()
        if isinstance(self.issuer, StagesInWorkers):
            self.issuer.forget_pass_ids()
        if self.shard is not None and self.shard[0] != 0:
            self._malformed.clear()  # shard 0 reports them
        if self._malformed:  # ragged rows after the last chunk
            n = len(self._malformed)
            self._reject_frames.append(_malformed_rejects(self._malformed))
            self._malformed.clear()
            self.reasons["malformed_row"] += n
            self.counts.rejected += n
            self.counts.read += n
        if self._spool.num_record_batches:
            self._spool_reader = self._spool
        if self._reject_frames and not self.dry_run:
            rejects = pd.concat(self._reject_frames, ignore_index=True).sort_values("row", kind="stable")
            path = self._report_path("rejects")
            write_report_csv(rejects, path)
            self.rejects_file = str(path)
        c = self.counts
        limit = self.campaign.validation.max_reject_rate
        if c.read and c.rejected / c.read > limit:
            top = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common(5))
            raise RejectRateExceeded(
                f"{c.rejected} of {c.read} rows rejected ({c.rejected / c.read:.1%}) — above the campaign's "
                f"max_reject_rate of {limit:.1%}; nothing was issued. Top reasons: {top}."
                + (f" Details: {self.rejects_file}" if self.rejects_file else "")
            )
        if not self.dry_run:
            self._open_exports()
        # A campaign's first run has nothing to look up: skip a million-id lookup that finds nothing.
        self._ledger_had_rows = self.journal is not None and self.journal.has_rows()
        self._start_ledger_writer()

    @property
    def batch_count(self) -> int:
        return self._spool_reader.num_record_batches if self._spool_reader else 0

    # --- stage 2 ------------------------------------------------------------------------------
    def _open_exports(self) -> None:
        exp = self.campaign.export
        directory = Path(exp.directory)
        # Temp files a killed run of this campaign left behind: we hold its lock, so none is being written.
        name = export_file_prefix(self.campaign.name)
        for prefix in (f"{name}-{self.campaign.provider}-", f"{name}-rejects-", f"{name}-failed-"):
            for stale in cleanup_stale_partials(directory, min_age_seconds=0, prefix=prefix):
                self.log.warning("removed %s, left by an interrupted run", stale.name)
        for kind in exp.formats:
            self.exports.append(
                AttributeExport(
                    kind=kind,
                    directory=directory,
                    campaign=self.campaign.name,
                    provider=self.campaign.provider,
                    run_id=self.run_id,
                    settings=exp.format_settings(kind),
                    max_rows_per_file=exp.max_rows_per_file,
                    extra_columns=self._install_status_columns(),
                    ids_unique=True,  # staging rejected every repeated customer id (run-wide)
                )
            )
        if exp.db:
            self.db_export = DbAttributeExport(
                url=exp.db.url, table=exp.db.table, provider=self.campaign.provider
            )

    # A big run records its batches in a pool worker while it plans and exports the next one.
    def _start_ledger_writer(self) -> None:
        exp_db = self.campaign.export.db
        if (
            self._pooling
            and self.journal is not None
            and not self.dry_run
            # an export table in the ledger's SQLite file would queue behind the writer's lock
            and not (exp_db is not None and same_sqlite_file(exp_db.url, self.campaign.ledger.url))
        ):
            assert self._pool is not None
            assert self.journal.lock is not None
            self._ledger_writer = self._pool.ledger_writer(self.campaign.ledger.url, self._workdir, self.journal.lock)

    def _record(self, outcomes: pd.DataFrame, *, spooled: Path | None = None) -> None:
        """Record a batch's outcomes, as the issuer's ledger keeps them (``Issuer.for_ledger``).
        ``spooled``: the batch's spool file, when the outcomes are what the issuer's ``deliver`` makes
        of every row of it (the ledger writer rebuilds them from there)."""
        assert self.journal is not None
        crash_point("record")
        release_memory()  # what the previous batch left, before this one's exports
        if self._ledger_writer is not None and spooled is not None:
            self._ledger_writer.record_spooled(self.campaign.name, self.campaign.provider, spooled, self.now)
            return
        outcomes = self.issuer.for_ledger(outcomes)
        if self._ledger_writer is not None:
            self._ledger_writer.record(self.campaign.name, self.campaign.provider, outcomes)
        else:
            self.journal.record(outcomes)

    def _spooled_outcomes(self, batch: _Sending, result: pd.DataFrame) -> Path | None:
        """The batch's spool file, if the ledger writer can rebuild ``result`` from it: an issuer
        whose delivery is pure computation (links) delivered every row of the batch, and nothing
        else (reconciled rows) came with them. Saves writing the outcomes to a second file."""
        if (
            self._ledger_writer is None
            or not self.issuer.delivers_from_spool
            or len(batch.outcomes) != 1  # reconciled rows besides the delivery's
            or len(result) != batch.rows
            or not bool(batch.todo_mask.all())
        ):
            return None
        assert self._spool_reader is not None
        return self._spool_reader.path(batch.index)

    def _batch_done(self) -> None:
        assert self.journal is not None
        if self._ledger_writer is None:  # else the writer's workers refresh the same lock after each batch
            self.journal.heartbeat()
        release_memory()

    def _wait_for_ledger(self) -> None:
        """Every batch is in the ledger (raises a background write's error)."""
        if self._ledger_writer is not None:
            try:
                self._ledger_writer.wait()
            finally:
                self.timings["ledger_wait_s"] = self._ledger_writer.wait_s

    def deliver_batch(self, index: int) -> dict[str, int]:
        """Plan one spooled batch against the ledger, issue what is needed, record it, export it."""
        check_stop("between batches")
        t0 = time.perf_counter()
        assert self._spool_reader is not None
        df = self._spool_reader.get_batch(index).to_pandas()
        ctx = DeliveryContext(
            run_id=self.run_id, campaign=self.campaign.name, now=self.now, log=self.log, journal=self.journal
        )
        known = self.journal is not None and self._ledger_had_rows
        ledger_rows = self.journal.lookup(df["customer_id"]) if known else empty_ledger_rows()
        plan = plan_batch(df, ledger_rows, reissue_changed=self.issuer.reissue_changed)

        c = self.counts
        c.skipped_unchanged += int(plan.unchanged.sum())
        c.changed_not_reissued += int((plan.changed & ~plan.reissue).sum())

        outcomes: list[pd.DataFrame] = []
        reconciled_ids: set[str] = set()
        if plan.pending.any() and not self.dry_run:
            resolved = self.issuer.reconcile(plan.rows.loc[plan.pending], ctx)
            if len(resolved):
                outcomes.append(resolved)
                reconciled_ids = set(resolved["customer_id"])
                c.reconciled += int((resolved["status"] == "issued").sum())
                plan.settled(reconciled_ids)

        todo_mask = plan.todo
        todo = plan.rows.loc[todo_mask]
        if self.dry_run:
            if len(self._preview) == 0 or sum(len(p) for p in self._preview) < self.preview_rows:
                self._preview.append(todo.head(self.preview_rows))
            c.issued_new += int(plan.new.sum())
            c.reissued_changed += int(plan.reissue.sum())
            c.retried += int((plan.pending | plan.failed_before).sum())
            self.timings["deliver_s"] = self.timings.get("deliver_s", 0.0) + time.perf_counter() - t0
            return {"rows": len(df), "todo": int(todo_mask.sum())}

        sending = self.issuer.start_deliver(todo[df.columns], ctx) if len(todo) else None
        batch = _Sending(plan, outcomes, reconciled_ids, sending, len(df), todo_mask, index)
        # An issuer that overlaps batches (API calls) keeps this batch's requests going out while the
        # previous batch is recorded and exported: the pipe to the vendor never drains at a boundary.
        previous, self._sending = self._sending, None
        if self.issuer.overlaps:
            self._sending = batch
            done = self._finish_batch(previous) if previous is not None else {"rows": 0}
        else:
            done = self._finish_batch(batch)
        self.timings["deliver_s"] = self.timings.get("deliver_s", 0.0) + time.perf_counter() - t0
        return done

    def finish_deliveries(self) -> dict[str, int]:
        """Wait for the batch still being sent (overlapping issuers), record and export it."""
        previous, self._sending = self._sending, None
        if previous is None:
            return {"rows": 0}
        t0 = time.perf_counter()
        done = self._finish_batch(previous)
        self.timings["deliver_s"] = self.timings.get("deliver_s", 0.0) + time.perf_counter() - t0
        return done

    def _finish_batch(self, batch: _Sending) -> dict[str, int]:
        plan, outcomes, reconciled_ids = batch.plan.rows, batch.outcomes, batch.reconciled_ids
        c = self.counts
        if batch.sending is not None:
            outcomes.append(batch.sending.result())
        result = pd.concat(outcomes, ignore_index=True) if outcomes else pd.DataFrame(columns=OUTCOME_COLUMNS)
        if not self.issuer.delivers_from_spool:  # API links are known only now (spooled ones were checked)
            result = fail_long_values(result, self.value_limits)
        self._record(result[OUTCOME_COLUMNS], spooled=self._spooled_outcomes(batch, result))
        stop_reason = self.issuer.stop_reason
        if stop_reason:
            # Recorded first, so the rerun knows exactly what was sent; then stop loudly.
            raise VendorError(stop_reason)
        check_stop("while issuing")  # after recording: the rerun knows what was sent

        issued = (result["status"] == "issued").to_numpy(dtype=bool)
        ok = result if issued.all() else result.loc[issued]
        todo_pos = _aligned_positions(plan, batch.todo_mask, ok) if not reconciled_ids else None
        if todo_pos is not None:  # outcomes in plan order: positions instead of string-key lookups
            before = plan["prev_status"].iloc[todo_pos]
        else:
            delivered = ok.loc[~ok["customer_id"].isin(reconciled_ids)]
            before = plan.set_index("customer_id").loc[delivered["customer_id"], "prev_status"]
        c.issued_new += int(before.isna().sum())
        c.reissued_changed += int((before == "issued").sum())
        c.retried += int(before.isin(["failed", "pending"]).sum())
        bad = result.loc[result["status"] != "issued"]
        if len(bad):
            c.failed += len(bad)
            rows = plan.set_index("customer_id").loc[bad["customer_id"], ROW].to_numpy()
            self._failure_frames.append(
                pd.DataFrame(
                    {
                        "row": rows,
                        "customer_id": bad["customer_id"].to_numpy(),
                        "status": bad["status"].to_numpy(),
                        "reason": bad["last_error"].fillna("").to_numpy(),
                    }
                )
            )

        # Export every customer of this batch who holds a pass: issued now, or earlier and unchanged.
        now_iso = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        export_cols = ["customer_id", "pass_id", "pass_link", "pass_gendate", "email", "phone"]
        if todo_pos is not None:
            fresh = plan.iloc[todo_pos].assign(
                pass_id=pd.Series(ok["pass_id"].array, index=plan.index[todo_pos]),
                pass_link=pd.Series(ok["pass_link"].array, index=plan.index[todo_pos]),
            )
        else:
            fresh = plan.merge(ok[["customer_id", "pass_id", "pass_link"]], on="customer_id", suffixes=("_x", ""))
        fresh = fresh.assign(pass_gendate=now_iso)[export_cols]
        kept_mask = batch.plan.kept.to_numpy(dtype=bool)
        frames = [fresh]
        if kept_mask.any() and self.campaign.export.mode == "snapshot":  # "changes": this run's only
            kept = plan.loc[kept_mask]
            kept = kept.assign(
                pass_id=kept["prev_pass_id"].fillna(""),
                # without stored links, an unchanged row's link is the one built again for this run
                pass_link=(kept["prev_pass_link"] if self.issuer.ledger_keeps_links else kept["pass_link"]).fillna(""),
                pass_gendate=kept["prev_issued_at"].map(_iso),
            )
            frames.append(kept[export_cols])
        # A first run has no kept rows: no concat with empty object columns, which would turn every
        # column to object and make astype("str") rebuild each string (a third of the batch's time).
        rows_out = (pd.concat(frames, ignore_index=True) if len(frames) > 1 else fresh.reset_index(drop=True)).astype(
            "str"
        )
        rows_out = self._add_install_status(rows_out)
        cells = CsvCells(rows_out)  # columns the formats share are encoded once
        for exp in self.exports:
            exp.write(rows_out, cells)
            crash_point("export")
        if self.db_export is not None:
            self.db_export.write(rows_out)
        c.exported += len(rows_out)
        self._batch_done()
        return {"rows": batch.rows, "issued": len(ok), "failed": len(bad), "exported": len(rows_out)}

    def _stop_sending(self) -> None:
        """On abort: send nothing more, and record what the batch in flight did (rows never sent are
        recorded as failed, rows in doubt stay pending), so the rerun knows exactly what went out."""
        batch, self._sending = self._sending, None
        if batch is None:
            return
        self.issuer.halt()
        try:
            outcomes = batch.outcomes + ([batch.sending.result()] if batch.sending is not None else [])
            if outcomes:
                self._record(pd.concat(outcomes, ignore_index=True)[OUTCOME_COLUMNS])
        except Exception as exc:  # noqa: BLE001 - never mask the original error; its rows stay pending
            self.log.warning("the batch in flight was not recorded: %s: %s", type(exc).__name__, exc)

    # Campaigns with vendor callbacks export each customer's install status too (passflow.callbacks).
    def _install_status_columns(self) -> list[str]:
        return install_status_columns(self.campaign.provider) if self.campaign.callbacks else []

    def _add_install_status(self, rows: pd.DataFrame) -> pd.DataFrame:
        if not self.campaign.callbacks or rows.empty or self.journal is None:
            return rows
        from passflow.store.events import read_install_status

        status = read_install_status(self.journal.ledger.engine, self.campaign.name, rows["customer_id"])
        return with_install_status(rows, status, self.campaign.provider)

    # --- the end ------------------------------------------------------------------------------
    def commit(self) -> RunResult:
        self.finish_deliveries()
        self._wait_for_ledger()  # before any export file appears: a failed write must leave none
        files: list[str] = []
        for exp in self.exports:
            files.extend(str(p) for p in exp.commit(before_rename=delivery_marker(self.campaign)))
            crash_point("commit")
        delivered = [] if self.dry_run else deliver_exports(
            self.campaign,
            files,
            run_started=time.time() - (time.perf_counter() - self._started),
            earlier_too=self.shard is None or self.shard[0] == 0,  # one process delivers leftovers
        )
        failures_file = None
        if self._failure_frames:
            path = self._report_path("failed")
            write_report_csv(pd.concat(self._failure_frames, ignore_index=True), path)
            failures_file = str(path)
        self.timings["total_s"] = time.perf_counter() - self._started
        result = self._result(files, failures_file)
        result.delivered_files = delivered
        if self.journal is not None and not self.dry_run:
            self.journal.finish("completed", result.summary())
        self.close()
        return result

    def abort(self, error: BaseException) -> None:
        """Remove partial exports; keep the ledger (it is what makes the rerun resume)."""
        for exp in self.exports:
            exp.abort()
        self._stop_sending()
        try:
            self._wait_for_ledger()  # the batch being written lands (or fails) before the run ends
        except Exception as exc:  # noqa: BLE001 - never mask the original error
            self.log.warning("the last ledger batch was not recorded: %s: %s", type(exc).__name__, exc)
        if self.journal is not None and not self.dry_run:
            self.timings["total_s"] = time.perf_counter() - self._started
            summary = self._result([], None).summary()
            summary["error"] = f"{type(error).__name__}: {error}"
            try:
                self.journal.finish("failed", summary)
            except Exception:  # noqa: BLE001 - never mask the original error
                self.log.warning("could not record the failed run in the ledger")
        self.close()

    def close(self) -> None:
        if self._gc_held:
            self._gc_held = False
            tuning.gc_release()
        if self._pool is not None:  # first: workers may still be writing into the work directory
            self._ledger_writer = None
            self._pool.close()
            self._pool = None
        self._spool_reader = None
        shutil.rmtree(self._workdir, ignore_errors=True)
        self.issuer.close()
        if self.journal is not None:
            journal, self.journal = self.journal, None
            journal.close()

    def _result(self, files: list[str], failures_file: str | None) -> RunResult:
        preview = (
            pd.concat(self._preview, ignore_index=True).head(self.preview_rows) if self._preview else None
        )
        return RunResult(
            run_id=self.run_id,
            campaign=self.campaign.name,
            provider=self.campaign.provider,
            dry_run=self.dry_run,
            counts=self.counts,
            reject_reasons=dict(self.reasons.most_common()),
            timings=dict(self.timings),
            export_files=files,
            rejects_file=self.rejects_file,
            failures_file=failures_file,
            preview=preview,
            limit_per_second=self.campaign.limits.max_per_second if provider_of(self.campaign).calls_vendor else None,
            vendor_calls=self.issuer.calls,
        )

    def _report_path(self, kind: str) -> Path:
        stamp = self.now.strftime("%Y%m%dT%H%M%SZ")
        return (
            Path(self.campaign.export.directory)
            / f"{export_file_prefix(self.campaign.name)}-{kind}-{stamp}-{self.run_id[:8]}.csv"
        )


def _malformed_rejects(rows: list[MalformedRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": [m.row for m in rows],
            "customer_id": [""] * len(rows),
            "reason_code": ["malformed_row"] * len(rows),
            "reason": [m.reason for m in rows],
        }
    )


@dataclass
class _Sending:
    """A planned batch whose vendor calls may still be running (see IssueRun.deliver_batch)."""

    plan: Plan
    outcomes: list[pd.DataFrame]
    reconciled_ids: set[str]
    sending: Sending | None
    rows: int
    todo_mask: pd.Series
    index: int  # of the spooled batch


def _aligned_positions(plan: pd.DataFrame, todo_mask: pd.Series, ok: pd.DataFrame) -> np.ndarray | None:
    """Positions in ``plan`` of the issued rows ``ok`` when they are exactly the batch's todo rows in
    plan order (what a link issuer returns); None otherwise (the general path joins on customer id).

    Comparing two id columns costs a fraction of building a hash index over 50k string keys.
    """
    pos = np.flatnonzero(todo_mask.to_numpy(dtype=bool))
    if pos.shape[0] != len(ok):
        return None
    try:
        expected = pa.array(plan["customer_id"].iloc[pos], from_pandas=True)
        got = pa.array(ok["customer_id"], from_pandas=True)
        same = not expected.null_count and not got.null_count and pc.all(pc.equal(expected, got)).as_py()
    except (pa.ArrowException, TypeError, ValueError):  # ids that are not all strings: join instead
        return None
    return pos if same else None


@functools.lru_cache(maxsize=4096)  # mapped over every kept row: a run's rows share a few times
def _iso(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return ""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _ledger_exists(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return bool(parsed.database) and Path(parsed.database).exists()
    return True
