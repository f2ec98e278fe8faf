"""What every issuer (one per provider) does inside a run, as declared types.

An issuer turns validated rows into what the vendor needs (``prepare``: render templates, sign
links or build payloads, fingerprint them) and then gets passes out for the rows the ledger plan
says need one (``deliver``). The run owns reading, validation, planning, recording and export,
so an issuer is only the provider-specific part.

Optional capabilities are declared by inheriting their ABC, and the run asks with ``isinstance``:

* :class:`StagesInWorkers` — the per-row part of ``prepare`` runs in worker processes, and
  delivery is pure computation a worker can redo from the spool (Skycore links).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from passflow.templating import CompiledTemplate, compile_template
from passflow.validate import Rejects

# Columns every prepared (spooled) row has; issuers add their own after these.
BASE_COLUMNS = ["__row__", "customer_id", "email", "phone", "fingerprint"]
# Columns of a delivery outcome, in the ledger's terms.
OUTCOME_COLUMNS = ["customer_id", "status", "pass_id", "pass_link", "fingerprint", "last_error", "issued_at"]


@dataclass
class DeliveryContext:
    run_id: str
    campaign: str
    now: datetime
    log: Any  # a logging.Logger-like object (the Prefect run logger inside flows)
    #: the run's intent log and lock (passflow.run.journal.RunJournal): mark_pending, heartbeat
    journal: Any = None


def compile_templates(
    templates: Mapping[str, str], *, section: str, campaign_vars: Mapping[str, Any], now: datetime
) -> dict[str, CompiledTemplate]:
    return {
        name: compile_template(src, name=f"{section}.{name}", campaign=campaign_vars, now=now)
        for name, src in templates.items()
    }


def render_fields(
    templates: Mapping[str, CompiledTemplate], df: pd.DataFrame, rejects: Rejects
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render every template over ``df``. Rows where any template fails are rejected with the reason.

    Returns (good rows of ``df``, rendered values for those rows — one column per template).
    """
    values: dict[str, pd.Series] = {}
    failed = pd.Series(False, index=df.index)
    reasons = pd.Series("", index=df.index, dtype="str")
    for name, tpl in templates.items():
        result = tpl.render_frame(df)
        values[name] = result.values
        errors = result.errors
        if errors is not None and len(errors):
            err = errors.reindex(df.index)
            bad = err.notna() & ~failed
            reasons[bad] = f"template {name!r}: " + err[bad].astype("str")
            failed |= err.notna()
    rejects.add(df, failed, "template_error", reasons)
    rendered = pd.DataFrame(values, index=df.index).loc[~failed]
    return df.loc[~failed], rendered


def fingerprint(texts: pd.Series) -> pd.Series:
    """SHA-256 of what is sent for each row — the ledger compares it to detect changed inputs."""
    sha = hashlib.sha256
    return pd.Series([sha(t.encode("utf-8")).hexdigest() for t in texts.tolist()], index=texts.index, dtype="str")


class Sending(Protocol):
    """A delivery under way: ``result()`` waits for its outcomes (OUTCOME_COLUMNS rows)."""

    def result(self) -> pd.DataFrame: ...


@dataclass
class Delivered:
    """A delivery that finished before ``start_deliver`` returned."""

    outcomes: pd.DataFrame

    def result(self) -> pd.DataFrame:
        return self.outcomes


class Issuer(ABC):
    provider: str
    #: provider-specific columns added to the spool after BASE_COLUMNS
    extra_columns: list[str] = []
    #: whether the engine may record/export one batch while the next one's deliveries run
    overlaps: bool = False
    # deliver() is pure computation over the prepared rows, so the same rows give the same outcomes
    # anywhere, at ``now``: a ledger writer may rebuild a batch's outcomes from its spool file.
    delivers_from_spool: bool = False
    # Whether the ledger stores each pass's link. An issuer whose link is a pure function of the
    # values its fingerprint covers (Skycore: the checksum is the fingerprint) does not need to:
    # an unchanged row's link is the one built again for this run, and the exports carry it.
    ledger_keeps_links: bool = True
    #: HTTP attempts made (the report's vendor calls and achieved rate)
    calls: int = 0

    @property
    def stop_reason(self) -> str | None:
        """Why the run must stop (e.g. the failure threshold), once the issuer knows; else None."""
        return None

    @abstractmethod
    def template_columns(self) -> set[str]:
        """Customer columns the templates read (checked against the segment before anything runs)."""

    @abstractmethod
    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        """Validated rows in; rows with BASE_COLUMNS + extra_columns out (bad ones to ``rejects``)."""

    @abstractmethod
    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        """Get passes for ``todo`` (prepared rows the plan selected); return OUTCOME_COLUMNS rows.
        An issuer that calls a vendor writes its intent first, through ``ctx.journal.mark_pending``."""

    def for_ledger(self, outcomes: pd.DataFrame) -> pd.DataFrame:
        """The outcomes as the ledger records them (without links unless ``ledger_keeps_links``)."""
        return outcomes if self.ledger_keeps_links else outcomes.assign(pass_link=None)

    def start_deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> Sending:
        """Start :meth:`deliver`; an issuer that sends in the background returns before it is done."""
        return Delivered(self.deliver(todo, ctx))

    def halt(self) -> None:  # noqa: B027 - optional hook
        """The run is failing: start no new vendor call (those in flight finish)."""

    def reconcile(self, pending: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        """Resolve rows left ``pending`` by an interrupted run. Default: nothing to reconcile."""
        return pending.iloc[0:0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads, loops."""

    @property
    def reissue_changed(self) -> bool:
        """Whether a changed fingerprint means issuing again (links: yes; API passes: update instead)."""
        return True


class StagesInWorkers(ABC):
    """Capability: staging in worker processes (:mod:`passflow.run.staging`).

    ``prepare`` splits into :meth:`prepare_rows` (per row, any order: runs in the workers) and the
    run-wide pass-id check (in row order, in the run); ``deliver`` must be pure computation over
    :attr:`delivered_columns` of a spooled row, so a worker can record a batch from its spool file.
    """

    #: the spooled columns ``deliver`` reads
    delivered_columns: list[str]

    @abstractmethod
    def worker_factory(self) -> Callable[[], Issuer]:
        """A picklable way to build this issuer again in a worker process (secrets travel resolved)."""

    @abstractmethod
    def prepare_rows(self, df: pd.DataFrame, rejects: Any) -> pd.DataFrame:
        """The per-row part of ``prepare``; keeps no run state."""

    @property
    @abstractmethod
    def claims_pass_ids(self) -> bool:
        """Whether pass ids need their own run-wide uniqueness check."""

    @abstractmethod
    def pass_id_conflicts(self, rows: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Per row, in row order: the earlier row that uses the same pass id, or -1."""

    @abstractmethod
    def reject_pass_id_conflicts(self, prepared: pd.DataFrame, first: np.ndarray, rejects: Any) -> pd.DataFrame:
        """Reject the rows ``pass_id_conflicts`` found; return the others."""

    @abstractmethod
    def forget_pass_ids(self) -> None:
        """Staging is over: free the run-wide pass-id set."""


def campaign_vars(info: Any) -> dict[str, Any]:
    return {"name": info.name, "provider": info.provider, "pass_type": info.pass_type}
