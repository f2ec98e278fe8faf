"""The run's one door to the ledger for writes: its lock, its intents, its outcomes.

A :class:`RunJournal` is made when the run takes its lock, and the lock's key (the campaign, or
``campaign/shard-I-of-N`` for one shard of a split run) is fixed then. Everything that writes for the
run goes through it or through its :class:`RunLock`: the run itself (outcomes, run rows), an issuer
writing intents before it calls a vendor (``mark_pending``), and the staging pool's workers, which get
the :class:`RunLock` (a small picklable value) and refresh the same lock row after each batch they
record. So the heartbeat of a run is refreshed under one key, whoever writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from passflow.store.ledger import Ledger, lock_key


@dataclass(frozen=True)
class RunLock:
    """Which lock row a run holds: what its writers refresh (picklable, for worker processes)."""

    key: str
    run_id: str

    def heartbeat(self, ledger: Ledger) -> None:
        ledger.heartbeat(self.key, self.run_id)


class RunJournal:
    """The ledger as one run writes it. Reads for planning (``lookup``) go through it too."""

    def __init__(self, ledger: Ledger, *, campaign: str, provider: str, lock: RunLock | None) -> None:
        self.ledger = ledger
        self.campaign = campaign
        self.provider = provider
        self.lock = lock  # None: a dry run reading an existing ledger, holding no lock

    @classmethod
    def open(
        cls,
        url: str,
        *,
        campaign: str,
        provider: str,
        run_id: str,
        flow_name: str,
        shard: tuple[int, int] | None = None,
    ) -> RunJournal:
        """Take the run's lock (CampaignLocked if another run holds it) and record the run's start."""
        ledger = Ledger(url)
        try:
            ledger.acquire_lock(campaign, run_id, shard)
        except BaseException:
            ledger.close()
            raise
        journal = cls(ledger, campaign=campaign, provider=provider, lock=RunLock(lock_key(campaign, shard), run_id))
        ledger.start_run(run_id, campaign, flow_name)
        return journal

    @classmethod
    def read_only(cls, url: str, *, campaign: str, provider: str) -> RunJournal:
        return cls(Ledger(url), campaign=campaign, provider=provider, lock=None)

    @property
    def run_id(self) -> str:
        assert self.lock is not None, "a read-only journal writes nothing"
        return self.lock.run_id

    # --- reads ---------------------------------------------------------------------------------
    def has_rows(self) -> bool:
        return self.ledger.has_rows(self.campaign)

    def lookup(self, customer_ids: pd.Series) -> pd.DataFrame:
        return self.ledger.lookup(self.campaign, customer_ids)

    # --- writes --------------------------------------------------------------------------------
    def mark_pending(self, rows: pd.DataFrame) -> None:
        """Intent before effect: these rows (customer_id, fingerprint) are about to be sent. Refreshes
        the lock too: an API batch can take longer than the lock's stale time at a low rate."""
        self.ledger.mark_pending(self.campaign, self.provider, rows, self.run_id)
        self.heartbeat()

    def record(self, outcomes: pd.DataFrame) -> None:
        self.ledger.record(self.campaign, self.provider, outcomes, self.run_id)

    def heartbeat(self) -> None:
        if self.lock is not None:
            self.lock.heartbeat(self.ledger)

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        self.ledger.finish_run(self.run_id, status, summary)

    def close(self) -> None:
        """Release the lock (if held) and the connection."""
        try:
            if self.lock is not None:
                self.ledger.release_lock(self.lock.key, self.lock.run_id)
        finally:
            self.ledger.close()
