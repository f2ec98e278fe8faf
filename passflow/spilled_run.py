"""A sorted run of 64-bit key hashes (and optionally their rows) kept on disk instead of in memory.

:class:`passflow.seen.SeenKeys` moves its runs here once they hold more than a million or so keys,
so the memory of a run-wide duplicate check stays flat however big the segment is (at 10M rows the
in-memory sets were 320 MB). What stays in memory per key is a Bloom filter (10 bits, ~1 % false
positives) and a sparse index (one hash per 4 KB page of the file): ~1.3 bytes instead of 16.

A lookup asks the Bloom filter first, so almost every needle that is not in the run costs no I/O;
the rest (repeats and false positives) read one page each with ``os.pread`` — the file is read
page by page, never mapped, so none of it counts towards the process's resident memory. The file
is an anonymous temporary file: it disappears when the run object is dropped or the process dies.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np

PAGE_KEYS = 512  # hashes per read (4 KB)
_BLOOM_BITS_PER_KEY = 10
_BLOOM_HASHES = 7  # ~0.8 % false positives at 10 bits a key, ~0.05 % at 16
_BUILD_SLICE = 1 << 17


def bloom_positions(hashes: np.ndarray, bits: int) -> list[np.ndarray]:
    """Bit positions of each hash in a Bloom filter of ``bits`` bits (a power of 2). Runs of one
    set share ``bits``, so a lookup computes them once for all of them."""
    return list(_positions(hashes, bits))


def _positions(hashes: np.ndarray, bits: int) -> Iterator[np.ndarray]:
    """Double hashing from the two 32-bit halves, one array at a time."""
    pos = hashes & np.uint64(0xFFFFFFFF)
    step = (hashes >> np.uint64(32)) | np.uint64(1)
    mask = np.uint64(bits - 1)
    for _ in range(_BLOOM_HASHES):
        yield pos & mask
        pos += step


def bloom_bits(keys: int) -> int:
    """Filter size for ``keys`` keys: at least 10 bits a key, rounded up to a power of 2."""
    return 1 << max(6, int(keys * _BLOOM_BITS_PER_KEY - 1).bit_length())


class SpilledRun:
    """Sorted, unique uint64 hashes (with an int64 row each, or none) in a temporary file."""

    def __init__(self, hashes: np.ndarray, rows: np.ndarray | None, *, bits: int) -> None:
        self.size = int(hashes.shape[0])
        self.has_rows = rows is not None
        self._file = tempfile.TemporaryFile(prefix="passflow-seen-")  # noqa: SIM115 - lives with the run
        np.ascontiguousarray(hashes, dtype=np.uint64).tofile(self._file)  # no bytes copy
        if rows is not None:
            np.ascontiguousarray(rows, dtype=np.int64).tofile(self._file)
        self._file.flush()
        self._fd = self._file.fileno()
        self._fences = hashes[::PAGE_KEYS].copy()  # first hash of each page
        self.bits = bits
        self._bloom = np.zeros(bits // 8, dtype=np.uint8)
        for start in range(0, self.size, _BUILD_SLICE):  # small temporaries, no byte-per-bit copy
            for pos in _positions(hashes[start : start + _BUILD_SLICE], bits):
                np.bitwise_or.at(self._bloom, pos >> np.uint64(3), np.left_shift(1, pos & np.uint64(7)).astype(np.uint8))

    def _maybe(self, positions: list[np.ndarray]) -> np.ndarray:
        hit = np.ones(positions[0].shape[0], dtype=bool)
        for pos in positions:
            hit &= (self._bloom[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1 == 1
        return hit

    def find(self, needles: np.ndarray, positions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(found, row or -1) per needle; ``needles`` sorted ascending, ``positions`` their
        :func:`bloom_positions` for this run's ``bits``."""
        found = np.zeros(needles.shape[0], dtype=bool)
        rows = np.full(needles.shape[0], -1, dtype=np.int64)
        cand = np.flatnonzero(self._maybe(positions))
        if cand.size == 0:
            return found, rows
        pages = np.searchsorted(self._fences, needles[cand], side="right") - 1
        cand, pages = cand[pages >= 0], pages[pages >= 0]  # below the run's first hash: not in it
        if cand.size == 0:
            return found, rows
        # needles are sorted, so each page's candidates are one slice
        bounds = np.flatnonzero(np.diff(pages)) + 1
        for sel, page in zip(np.split(cand, bounds), pages[np.r_[0, bounds]], strict=True):
            lo = int(page) * PAGE_KEYS
            count = min(PAGE_KEYS, self.size - lo)
            block = np.frombuffer(os.pread(self._fd, count * 8, lo * 8), dtype=np.uint64)
            pos = np.minimum(np.searchsorted(block, needles[sel]), count - 1)
            hit = block[pos] == needles[sel]
            if not hit.any():
                continue
            found[sel[hit]] = True
            if self.has_rows:
                page_rows = np.frombuffer(os.pread(self._fd, count * 8, (self.size + lo) * 8), dtype=np.int64)
                rows[sel[hit]] = page_rows[pos[hit]]
        return found, rows
