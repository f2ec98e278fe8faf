"""Where updates come from — each source yields *targets*: one row per customer to update, with the
action to send and the row the action's templates see.

* :func:`customer_targets` — a list of customer ids and one action (CLI ``--customers``, the
  ``passflow.update.requested`` Prefect event).
* :func:`read_events` + :func:`event_targets` — an events table (CSV file, SQL table, or the vendor
  callbacks table ``passflow_pass_events`` in the ledger DB) mapped by ``[updates.rules]`` to actions.
  Each event has a key — its id column (``provider:vendor_event_id`` for the callbacks table), else a
  hash of customer, event and time — and a handled key is never acted on again.
* :func:`diff_targets` — rerun the segment and keep the customers whose pass-relevant values changed
  since the last successful send.

Target columns: ``customer_id``, ``action``, ``source``, ``event_key`` (or None), ``baseline`` (the
diff fingerprint to store once sent, or None), ``base`` (Passmachine template variables to refresh,
or None), plus the template context columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from passflow.config import Campaign
from passflow.errors import ConfigError, SourceError
from passflow.providers import make_issuer, update_support
from passflow.providers.base import fingerprint
from passflow.sources import read_csv_chunks, read_sql_chunks
from passflow.store.ledger import Ledger, ledger_table, runs_table
from passflow.store.updates import UpdateStore
from passflow.updates.actions import update_settings
from passflow.validate import FieldRules, Rejects, SeenKeys, check_columns, validate_chunk

CALLBACKS_TABLE = "passflow_pass_events"
TARGET_COLUMNS = ["customer_id", "action", "source", "event_key", "baseline", "base"]
EVENT_COLUMNS = ["customer_id", "event", "occurred_at", "event_key"]


def _targets(df: pd.DataFrame, **fixed: Any) -> pd.DataFrame:
    out = df.copy()
    for col in TARGET_COLUMNS:
        if col in fixed:
            out[col] = fixed[col]
        elif col not in out:
            out[col] = None
    return out


def customer_targets(customer_ids: Iterable[str], action: str, source: str = "customers") -> pd.DataFrame:
    """One target per distinct, non-empty customer id (order kept)."""
    ids = [c.strip() for c in customer_ids if isinstance(c, str) and c.strip()]
    frame = pd.DataFrame({"customer_id": list(dict.fromkeys(ids))}, dtype="str")
    return _targets(frame, action=action, source=source)


# --- events -------------------------------------------------------------------------------------
def _event_chunks(campaign: Campaign, path: str | None) -> tuple[Iterator[pd.DataFrame], str]:
    """Raw chunks of the events source (``path`` overrides the campaign's) and its label."""
    cfg = update_settings(campaign).events
    if path:
        if "://" in path:
            raise ConfigError("--events takes a CSV file; put a table in [updates.events]", key="--events")
        return read_csv_chunks(path), path
    if cfg is None:
        raise ConfigError(
            "no events source: pass --events FILE or add [updates.events] csv = \"…\" or table = \"…\"",
            file=str(campaign.path),
            key="updates.events",
        )
    if cfg.csv:
        return read_csv_chunks(cfg.csv), cfg.csv
    url = cfg.sql_url or campaign.ledger.url
    return read_sql_chunks(url, table=cfg.table), f"table {cfg.table}"


def event_key(frame: pd.DataFrame, id_column: str | None) -> pd.Series:
    """An event's identity: its id (the callbacks table: ``provider:vendor_event_id``, else ``id:<id>``)
    or, without one, SHA-256 of customer, event and time."""
    hashed = pd.Series(
        [
            "h:" + hashlib.sha256("\x1f".join(t).encode()).hexdigest()[:40]
            for t in zip(frame["customer_id"], frame["event"], frame["occurred_at"], strict=True)
        ],
        index=frame.index,
        dtype="str",
    )
    if {"provider", "vendor_event_id", "id"} <= set(frame.columns):  # the callbacks table
        vendor = frame["provider"].astype(str) + ":" + frame["vendor_event_id"].astype(str)
        own = "id:" + frame["id"].astype(str)
        return vendor.where(frame["vendor_event_id"].fillna("") != "", own)
    if id_column and id_column in frame.columns:
        given = frame[id_column].fillna("").astype(str).str.strip()
        return ("id:" + given).where(given != "", hashed)
    return hashed


def read_events(campaign: Campaign, path: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events with ``EVENT_COLUMNS`` + ``pass_id`` when the source has it, rejected rows with a reason)."""
    cfg = update_settings(campaign).events
    cust = cfg.customer_id_column if cfg else "customer_id"
    ev = cfg.event_column if cfg else "event"
    at = cfg.time_column if cfg else "occurred_at"
    id_col = cfg.id_column if cfg else "event_id"
    chunks, label = _event_chunks(campaign, path)
    frames, rejects = [], []
    for chunk in chunks:
        missing = [c for c in (cust, ev, at) if c not in chunk.columns]
        if missing:
            raise SourceError(
                f"events {label} has no column {', '.join(map(repr, missing))} (columns: "
                f"{', '.join(map(str, chunk.columns))}); set customer_id_column / event_column / time_column "
                "under [updates.events]"
            )
        if "campaign" in chunk.columns and cfg is not None and cfg.table:
            chunk = chunk.loc[chunk["campaign"].fillna("") == campaign.name]  # a table shared by campaigns
        frame = chunk.rename(columns={cust: "customer_id", ev: "event", at: "occurred_at"}).copy()
        for c in ("customer_id", "event", "occurred_at"):
            frame[c] = frame[c].fillna("").astype(str).str.strip()
        bad = (frame["customer_id"] == "") | (frame["event"] == "")
        if bad.any():
            rejects.append(frame.loc[bad].assign(reason="customer id or event is empty"))
        frame = frame.loc[~bad]
        frame["event_key"] = event_key(frame, id_col)
        keep = [*EVENT_COLUMNS, *(["pass_id"] if "pass_id" in frame.columns else [])]
        frames.append(frame[keep])
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EVENT_COLUMNS)
    rejected = pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=[*EVENT_COLUMNS, "reason"])
    return events, rejected


def event_targets(
    campaign: Campaign, events: pd.DataFrame, store: UpdateStore | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Map events to actions by ``[updates.rules]``; drop unmapped, repeated and already handled ones."""
    rules = update_settings(campaign).rules
    counts = {"events": len(events), "unmapped": 0, "duplicates": 0, "already_handled": 0}
    mapped = events.assign(action=events["event"].map(rules))
    counts["unmapped"] = int(mapped["action"].isna().sum())
    mapped = mapped.loc[mapped["action"].notna()]
    deduped = mapped.drop_duplicates("event_key")
    counts["duplicates"] = len(mapped) - len(deduped)
    if store is not None and len(deduped):
        seen = store.handled(campaign.name, deduped["event_key"])
        counts["already_handled"] = int(deduped["event_key"].isin(seen).sum())
        deduped = deduped.loc[~deduped["event_key"].isin(seen)]
    return _targets(deduped.reset_index(drop=True), source="events"), counts


# --- batch diff ---------------------------------------------------------------------------------
def _field_rules(campaign: Campaign) -> FieldRules:
    cols, val = campaign.columns, campaign.validation
    return FieldRules(
        customer_id=cols.customer_id,
        email=cols.email,
        phone=cols.phone,
        require_email=val.require_email,
        require_phone=val.require_phone,
        default_region=val.default_phone_region,
        allow_test_domains=val.allow_test_domains,
    )


def diff_fingerprint(templates: dict[str, Any], df: pd.DataFrame) -> pd.Series:
    """SHA-256 of the values of the issuer's templates that read customer columns — the pass-relevant
    values. Templates that read no customer column (a discount code, ``in_days(7, …)``) are the same
    for everyone, so they are not what makes one customer's pass out of date."""
    names = sorted(n for n, t in templates.items() if t.columns)
    parts = [templates[n].render_frame(df).values for n in names]
    joined = pd.Series([""] * len(df), index=df.index, dtype="str")
    for name, values in zip(names, parts, strict=True):
        joined = joined + name + "=" + values + "\x1f"
    return fingerprint(joined)


ISSUE_TIME_WINDOW_S = 120  # how far before its recorded start an issuing run may have taken its time


def _fingerprints_at(campaign: Campaign, now: datetime, rows: pd.DataFrame) -> pd.Series:
    issuer = make_issuer(campaign, now, dry_run=True)
    try:
        return issuer.prepare(rows, Rejects()).set_index("customer_id")["fingerprint"]
    finally:
        issuer.close()


def _same_as_issued(campaign: Campaign, ledger: Ledger, rows: pd.DataFrame, fingerprints: pd.Series) -> pd.Series:
    """Whether each row, prepared again *at the time its issuing run rendered it*, still gives the
    fingerprint in the ledger: an exact "unchanged" for templates that read the run's time.

    A run takes its time (whole seconds) shortly before it records its start
    (``passflow_runs.started_at``), so the seconds before the start are tried on a few sample rows;
    the first second that reproduces a sample's fingerprint is the run's time for all its rows.
    """
    q = (
        sa.select(ledger_table.c.customer_id, runs_table.c.started_at)
        .join(runs_table, runs_table.c.run_id == ledger_table.c.run_id)
        .where(ledger_table.c.campaign == campaign.name, ledger_table.c.customer_id.in_(rows["customer_id"].tolist()))
    )
    with ledger.engine.connect() as conn:
        started = dict(conn.execute(q).all())
    same = pd.Series(False, index=rows.index)
    for start, group in rows.groupby(rows["customer_id"].map(started), sort=False):
        ts = pd.Timestamp(start)
        second = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).floor("s").to_pydatetime()
        run_time = None
        first = group.head(1)
        cid0 = first["customer_id"].iloc[0]
        if _fingerprints_at(campaign, second, first).get(cid0) == _fingerprints_at(
            campaign, second - timedelta(days=1), first
        ).get(cid0):
            continue  # the payload does not depend on the time: a different fingerprint is a real change
        for _, sample in group.head(3).iterrows():
            one = sample.to_frame().T
            for back in range(ISSUE_TIME_WINDOW_S + 1):
                now = second - timedelta(seconds=back)
                if _fingerprints_at(campaign, now, one).get(sample["customer_id"]) == fingerprints.get(sample["customer_id"]):
                    run_time = now
                    break
            if run_time is not None:
                break
        if run_time is None:
            continue  # the samples changed (or the run's time is out of reach): treat the group as changed
        again = _fingerprints_at(campaign, run_time, group)
        hit = group["customer_id"].map(again) == group["customer_id"].map(fingerprints)
        same[hit.index[hit]] = True
    return same


@dataclass
class DiffPlan:
    targets: pd.DataFrame
    counts: dict[str, int]
    seed: pd.DataFrame  # customer_id, fingerprint: unchanged customers that get their first baseline
    columns: set[str]  # what the action's templates can read


def diff_targets(campaign: Campaign, ledger: Ledger, store: UpdateStore, now: datetime, action: str) -> DiffPlan:
    """Customers of the segment with an issued pass whose pass-relevant values changed.

    Changed means: the diff fingerprint differs from the baseline stored by the last successful
    update; without a baseline, the issuer's full fingerprint differs from the ledger's (the values
    at issuance). Unchanged customers without a baseline get one now, so the next diff is exact.
    """
    issuer = make_issuer(campaign, now, dry_run=True)
    try:
        src = campaign.source
        if src.csv:
            chunks = read_csv_chunks(src.csv, encoding=src.encoding, delimiter=src.delimiter, chunk_size=src.chunk_size)
        else:
            chunks = read_sql_chunks(src.sql_url or "", table=src.table, query=src.query, chunk_size=src.chunk_size)
        rules, seen = _field_rules(campaign), SeenKeys()
        counts = {"read": 0, "rejected": 0, "not_issued": 0, "unchanged": 0, "changed": 0}
        out: list[pd.DataFrame] = []
        seeds: list[pd.DataFrame] = []
        columns: set[str] = set()
        for chunk in chunks:
            if not columns:
                check_columns(list(chunk.columns), rules, issuer.template_columns(), src.csv or "(sql)")
                columns = {*chunk.columns, "customer_id", "email", "phone", "pass_id"}
            counts["read"] += len(chunk)
            rejects = Rejects()
            good = validate_chunk(chunk, rules, seen, rejects)
            prepared = issuer.prepare(good, rejects)
            counts["rejected"] += len(rejects)
            good = good.loc[good["customer_id"].isin(prepared["customer_id"])]
            if good.empty:
                continue
            full = prepared.set_index("customer_id")["fingerprint"]
            diff_fp = diff_fingerprint(issuer.templates, good)  # type: ignore[attr-defined]
            prev = ledger.lookup(campaign.name, good["customer_id"]).set_index("customer_id")
            base = store.baseline(campaign.name, good["customer_id"])
            cid = good["customer_id"]
            status = cid.map(prev["status"]) if len(prev) else pd.Series(None, index=good.index, dtype=object)
            issued = (status == "issued") & cid.map(prev["pass_id"] if len(prev) else {}).notna()
            counts["not_issued"] += int((~issued).sum())
            has_base = cid.isin(list(base))
            changed = pd.Series(False, index=good.index)
            changed[has_base] = diff_fp[has_base] != cid[has_base].map(base)
            no_base = ~has_base
            changed[no_base] = cid[no_base].map(full).to_numpy() != cid[no_base].map(prev["fingerprint"]).to_numpy() \
                if len(prev) else True  # fmt: skip
            changed &= issued
            retry = changed & no_base
            if retry.any():  # values rendered from the time of issuance (in_days(7, …)) differ now
                same = _same_as_issued(campaign, ledger, good.loc[retry], prev["fingerprint"])
                changed[same.index[same]] = False
            seed = issued & ~changed & no_base
            counts["changed"] += int(changed.sum())
            counts["unchanged"] += int((issued & ~changed).sum())
            if seed.any():
                seeds.append(pd.DataFrame({"customer_id": cid[seed], "fingerprint": diff_fp[seed]}))
            if changed.any():
                rows = good.loc[changed].drop(columns=["pass_id"], errors="ignore")
                rows = rows.assign(baseline=diff_fp[changed])
                issued_values = update_support(campaign).issued_values
                if issued_values is not None:  # --diff re-sends what the pass was issued with
                    payload = prepared.set_index("customer_id")["payload"]
                    rows["base"] = [issued_values(p) for p in rows["customer_id"].map(payload)]
                out.append(rows)
    finally:
        issuer.close()
    targets = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["customer_id"])
    targets = _targets(targets, action=action, source="diff")
    seed = pd.concat(seeds, ignore_index=True) if seeds else pd.DataFrame(columns=["customer_id", "fingerprint"])
    return DiffPlan(targets, counts, seed, columns)
