"""Splitting one campaign across several workers: which customers a shard owns, and its share of the
vendor limit.

* **Stable assignment**: a customer belongs to shard ``blake2b(customer_id) mod count`` — the same
  on every machine, Python and pandas version, so a crashed shard's rerun sees exactly its rows.
* **Static split of the limit**: each of ``count`` shards runs with ``max_per_second / count`` less
  one request/s (when its share is at least 2/s) and ``max_in_flight // count`` (at least 1).
  Every shard's limiter holds its share in every sliding 1 s window, so the shards together hold
  the vendor's limit without talking to each other — no per-request coordination, and a dead
  worker cannot leak a lease. The one request/s each shard gives up absorbs send jitter: on a
  starved machine one process's sends can reach the vendor one more per window than its share
  (measured: 61 for a limit of 60 with two workers at load 10 on 2 cores, without it), and the
  shards' jitters add up. The price: ~2 % of the limit at 100/s over 2 shards, and a shard that
  finishes early leaves its share unused (shards are equal-sized by the hash, so the tail is short).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from passflow.config import Campaign
from passflow.errors import ConfigError

Shard = tuple[int, int]  # (index, count), 0 <= index < count


def check_shard(shard: Shard) -> Shard:
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and count >= 1 and 0 <= index < count):
        raise ConfigError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}", key="shard")
    return shard


def shard_of(customer_ids: pd.Series, count: int) -> np.ndarray:
    """The shard (0 … count-1) of each customer id (compared after stripping, as validation does)."""
    blake = hashlib.blake2b
    return np.fromiter(
        (int.from_bytes(blake(str(c).strip().encode("utf-8"), digest_size=8).digest(), "big") % count
         for c in customer_ids.tolist()),
        dtype=np.int64,
        count=len(customer_ids),
    )


def in_shard(customer_ids: pd.Series, shard: Shard) -> np.ndarray:
    """Boolean mask of the rows this shard owns."""
    index, count = shard
    return shard_of(customer_ids, count) == index


def shard_campaign(campaign: Campaign, shard: Shard) -> Campaign:
    """The campaign as one shard runs it: its share of the vendor limit (see the module docstring)."""
    _, count = check_shard(shard)
    if count == 1:
        return campaign
    lim = campaign.limits
    share = lim.model_copy(
        update={
            "max_per_second": None if lim.max_per_second is None else _share(lim.max_per_second, count),
            "max_in_flight": max(1, lim.max_in_flight // count),
        }
    )
    return campaign.model_copy(update={"limits": share})


def _share(limit: float, count: int) -> float:
    share = limit / count
    return share - 1 if share >= 2 else share
