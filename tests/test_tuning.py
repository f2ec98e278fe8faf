"""passflow.tuning: the process-level knobs, and the one switch that turns them off."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

from passflow import tuning
from passflow.providers.http.loop import BackgroundLoop


def test_the_first_holder_freezes_and_the_last_one_unfreezes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_gc_holders", 0)  # whatever an earlier test left held
    gc.unfreeze()
    tuning.gc_hold()
    assert gc.get_freeze_count() > 0  # what existed at the first hold
    loop = BackgroundLoop()  # a second holder (an API run's I/O loop inside a run)
    tuning.gc_release()
    # the loop still holds it (the count itself drifts: frozen objects freed by refcount leave it)
    assert gc.get_freeze_count() > 0
    loop.close()
    assert gc.get_freeze_count() == 0
    tuning.gc_release()  # one release too many changes nothing
    assert gc.get_freeze_count() == 0


def test_a_closed_run_releases_its_hold(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(tuning, "_gc_holders", 0)
    from passflow.config import load_campaign
    from passflow.run import IssueRun

    camp = tmp_path / "c.toml"
    camp.write_text(
        '[campaign]\nname = "gc"\nprovider = "skycore"\n[source]\ncsv = "seg.csv"\n'
        '[skycore]\nlink_base = "https://d2c.skycore.com/wallet/gc/x"\n[skycore.params]\n'
        'pass-id = "P{{ customer.customer_id }}"\n[export]\ndirectory = "out"\n'
        '[ledger]\nurl = "sqlite:///ledger.db"\n',
        encoding="utf-8",
    )
    (tmp_path / "seg.csv").write_text("customer_id,email\nc1,a@example.com\n", encoding="utf-8")
    gc.unfreeze()
    run = IssueRun(load_campaign(camp))
    assert gc.get_freeze_count() > 0
    run.close()
    assert gc.get_freeze_count() == 0


@pytest.mark.skipif(tuning.rss_bytes() is None, reason="needs /proc/self/statm (Linux)")
def test_freed_memory_is_kept_for_reuse_until_the_process_grows_past_the_budget() -> None:
    assert tuning.release_memory(force=True) is True
    chunk = np.ones(16 << 20, dtype=np.uint8)  # a chunk's worth, touched, then freed
    del chunk
    assert tuning.release_memory() is False  # kept: the next chunk reuses it
    held = np.ones(tuning.RELEASE_AFTER_GROWTH + (32 << 20), dtype=np.uint8)  # resident: RSS grew
    try:
        assert tuning.release_memory() is True
        assert tuning.release_memory() is False  # nothing grew since the last release
    finally:
        del held


def test_workers_do_not_import_main() -> None:
    from multiprocessing import spawn

    import passflow.run.staging  # noqa: F401 - installs the hook for its workers

    data = spawn.get_preparation_data("passflow-worker-ForkServerProcess-1")
    assert "init_main_from_name" not in data and "init_main_from_path" not in data


PROBE = """
import gc, sys
from passflow import tuning
tuning.io_loop_started()
print(sorted(tuning.ENABLED), sys.getswitchinterval(), gc.get_freeze_count() > 0, tuning.release_memory(force=True))
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("off", "[] 0.005 False False"),
        ("-switch_interval", "['gc_freeze', 'release_memory', 'worker_main', 'writeback'] 0.005 True True"),
        ("on", "['gc_freeze', 'release_memory', 'switch_interval', 'worker_main', 'writeback'] 0.0005 True True"),
    ],
)
def test_one_switch_turns_the_knobs_off(value: str, expected: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "PASSFLOW_TUNING": value},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_an_unknown_knob_is_an_error() -> None:
    out = subprocess.run([sys.executable, "-c", "import passflow.tuning"], env={**os.environ, "PASSFLOW_TUNING": "-gc"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "unknown knob(s) gc" in out.stderr
