"""Run-wide sets of string keys, kept as 64-bit hashes: "was this customer id / pass id seen before?"

One implementation for every such set of a run: duplicate customer ids and Skycore pass ids during
staging (which also need the row where a key was first seen, for the reject reason), and the
de-duplication of attribute exports (which needs membership only).

Hashes live in a few sorted numpy runs, merged like a binary counter (a run is merged into its
predecessor while that is at most twice its size): O(log n) runs, amortised O(n log n) merging, and
a lookup is one ``searchsorted`` per run. Memory is 8 bytes a key, plus 8 for its row when rows are
kept — up to ``spill_keys`` keys: beyond that the in-memory runs are merged into one run on disk
(:mod:`passflow.spilled_run`, ~1.3 bytes a key stay in memory), so a 10M-row run holds no more than
a 1M-row one. A 64-bit collision between two different keys (about 3e-8 for a million keys) would
make the later key look like a repeat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from passflow.spilled_run import SpilledRun, bloom_bits, bloom_positions

# Keys held in memory (16 bytes each with rows) before they go to disk: a 1M-row run never spills;
# beyond, a set holds ~16 MB plus ~2 bytes a key (Bloom filter), not 16 bytes a key.
SPILL_KEYS = 1 << 20


def hash_keys(keys: pd.Series | np.ndarray | Sequence[str]) -> np.ndarray:
    """64-bit hashes of string keys (pandas' SipHash with its fixed key: the same in every process)."""
    if isinstance(keys, pd.Series):
        values = keys.to_numpy(dtype=object, na_value="")
    else:
        values = np.asarray(keys, dtype=object)
    if values.size == 0:
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_array(values, categorize=False)


class SeenKeys:
    """Keys seen earlier in a run, each remembered with the row where it was first seen.

    ``check_and_add`` / ``check_and_add_hashes`` answer "first seen at row N" for a chunk in row
    order (earlier chunks, then earlier in the same chunk) and remember the new keys. ``contains`` /
    ``add`` are the plain set operations, for callers that need no rows.
    """

    def __init__(self, *, spill_keys: int = SPILL_KEYS) -> None:
        self._runs: list[np.ndarray] = []  # sorted, unique uint64 hashes
        self._rows: list[np.ndarray | None] = []  # the row of each hash (None: added without rows)
        self._spilled: list[SpilledRun] = []  # older keys, on disk (disjoint from the runs above)
        self.spill_keys = spill_keys
        self._with_rows: bool | None = None  # check_and_add (True) or add (False), once known

    def __len__(self) -> int:
        return sum(run.shape[0] for run in self._runs) + sum(run.size for run in self._spilled)

    # -- the staging API: rows --------------------------------------------------------------------

    def check_and_add(self, keys: pd.Series, rows: pd.Series) -> pd.Series:
        """Return, per key, the row where it was first seen (earlier chunk or earlier in this one), or -1."""
        first = self.check_and_add_hashes(hash_keys(keys), rows.to_numpy(dtype=np.int64))
        return pd.Series(first, index=keys.index)

    def check_and_add_hashes(self, hashes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``check_and_add`` on precomputed :func:`hash_keys` (rows in the chunk's order)."""
        n = hashes.shape[0]
        first = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return first
        rows = np.asarray(rows, dtype=np.int64)
        # A stable sort keeps chunk order among equal hashes: each group starts at its first occurrence.
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        starts = np.empty(n, dtype=bool)
        starts[0] = True
        np.not_equal(sorted_hashes[1:], sorted_hashes[:-1], out=starts[1:])
        group = np.cumsum(starts) - 1
        heads = np.flatnonzero(starts)
        unique = sorted_hashes[heads]
        unique_rows = rows[order[heads]]
        earlier = self._lookup_sorted(unique)  # row from an earlier chunk, or -1
        sorted_rows = rows[order]
        head_rows = unique_rows[group]
        from_earlier = earlier[group]
        # Earlier chunks win; else a repeat inside this chunk points at the chunk's first occurrence.
        first[order] = np.where(
            from_earlier >= 0, from_earlier, np.where(head_rows != sorted_rows, head_rows, -1)
        )
        new = earlier < 0
        if new.any():
            self._push(unique[new], unique_rows[new])  # already sorted and unique
        return first

    # -- the set API ----------------------------------------------------------------------------

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        hit = np.zeros(hashes.shape[0], dtype=bool)
        if not (self._runs or self._spilled) or hashes.shape[0] == 0:
            return hit
        # sorted needles make searchsorted walk each run once (4x faster than random order)
        order = np.argsort(hashes)
        hit[order] = self._find(hashes[order])[0]
        return hit

    def add(self, hashes: np.ndarray) -> None:
        """Remember hashes that are not in the set yet (and unique among themselves)."""
        if hashes.size:
            self._push(np.sort(hashes), None)

    # -- internals --------------------------------------------------------------------------------

    def _find(self, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, row or -1) per sorted needle."""
        found = np.zeros(needles.shape[0], dtype=bool)
        rows = np.full(needles.shape[0], -1, dtype=np.int64)
        positions: dict[int, list[np.ndarray]] = {}
        for spilled in self._spilled:
            if spilled.bits not in positions:
                positions[spilled.bits] = bloom_positions(needles, spilled.bits)
            hit, hit_rows = spilled.find(needles, positions[spilled.bits])
            found |= hit
            rows[hit] = hit_rows[hit]
        for run, run_rows in zip(self._runs, self._rows, strict=True):
            pos = np.minimum(np.searchsorted(run, needles), run.shape[0] - 1)
            hit = run[pos] == needles
            found |= hit
            if run_rows is not None:
                rows[hit] = run_rows[pos[hit]]
        return found, rows

    def _lookup_sorted(self, needles: np.ndarray) -> np.ndarray:
        if self._runs or self._spilled:
            return self._find(needles)[1]
        return np.full(needles.shape[0], -1, dtype=np.int64)

    def _push(self, run: np.ndarray, rows: np.ndarray | None) -> None:
        if self._with_rows is not None and self._with_rows != (rows is not None):
            raise ValueError("SeenKeys: use either add() or check_and_add() on one set, not both")
        self._with_rows = rows is not None
        while self._runs and self._runs[-1].shape[0] <= 2 * run.shape[0]:
            prev, prev_rows = self._runs.pop(), self._rows.pop()
            # The runs are disjoint (only new keys are pushed): inserting one into the other at its
            # searchsorted positions merges them with one output array, where argsort over the
            # concatenation needed five (the run's peak memory at 10M keys is the last merge).
            pos = np.searchsorted(prev, run)
            merged = np.insert(prev, pos, run)
            if rows is not None and prev_rows is not None:
                rows = np.insert(prev_rows, pos, rows)
            run = merged
            del prev, prev_rows, pos, merged
        self._runs.append(run)
        self._rows.append(rows)
        if sum(r.shape[0] for r in self._runs) > self.spill_keys:
            self._spill()

    def _spill(self) -> None:
        """Move every in-memory run to one run on disk (they are disjoint: one sort of the lot)."""
        # (each step drops what it no longer needs: this is the set's peak memory)
        hashes = np.concatenate(self._runs)
        self._runs.clear()
        order = np.argsort(hashes)
        hashes = hashes[order]
        rows = None
        if self._with_rows:
            rows = np.concatenate(self._rows)  # type: ignore[arg-type]
            rows = rows[order]
        self._rows.clear()
        del order
        # every run of a set gets the same filter size, so a lookup hashes its needles once
        bits = bloom_bits(max(self.spill_keys, hashes.shape[0]))
        self._spilled.append(SpilledRun(hashes, rows, bits=bits))
