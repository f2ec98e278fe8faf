"""passflow.staging.release_memory: freed memory is kept for the next chunk, within a budget."""

import numpy as np
import pytest

from passflow import staging

pytestmark = pytest.mark.skipif(staging.rss_bytes() is None, reason="needs /proc/self/statm (Linux)")


def test_freed_memory_is_kept_for_reuse_until_the_process_grows_past_the_budget() -> None:
    assert staging.release_memory(force=True) is True
    chunk = np.ones(16 << 20, dtype=np.uint8)  # a chunk's worth, touched, then freed
    del chunk
    assert staging.release_memory() is False  # kept: the next chunk reuses it
    held = np.ones(staging.RELEASE_AFTER_GROWTH + (32 << 20), dtype=np.uint8)  # resident: RSS grew
    try:
        assert staging.release_memory() is True
        assert staging.release_memory() is False  # nothing grew since the last release
    finally:
        del held
