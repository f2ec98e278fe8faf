"""The process-wide GC freeze that runs and I/O loops share (passflow.gcfreeze)."""

from __future__ import annotations

import gc

from passflow import gcfreeze
from passflow.providers.http.loop import BackgroundLoop


def test_the_first_holder_freezes_and_the_last_one_unfreezes(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(gcfreeze, "_holders", 0)  # whatever an earlier test left held
    gc.unfreeze()
    gcfreeze.hold()
    assert gc.get_freeze_count() > 0  # what existed at the first hold
    loop = BackgroundLoop()  # a second holder (an API run's I/O loop inside a run)
    gcfreeze.release()
    # the loop still holds it (the count itself drifts: frozen objects freed by refcount leave it)
    assert gc.get_freeze_count() > 0
    loop.close()
    assert gc.get_freeze_count() == 0
    gcfreeze.release()  # one release too many changes nothing
    assert gc.get_freeze_count() == 0


def test_a_closed_run_releases_its_hold(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(gcfreeze, "_holders", 0)
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
