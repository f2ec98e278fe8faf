"""Report rendering: the summary table every surface shares, the funnel, the failure report."""

from __future__ import annotations

from passflow.report import (
    add_progress_listener,
    failure_markdown,
    funnel_markdown,
    funnel_rows,
    output_files,
    report_progress,
    summary_markdown,
    summary_rows,
)

SUMMARY = {
    "run_id": "abc123", "campaign": "loyalty", "provider": "passmachine", "dry_run": False,
    "read": 1000, "rejected": 12, "skipped_unchanged": 300, "issued_new": 680, "reissued_changed": 3,
    "retried": 5, "reconciled": 0, "failed": 0, "exported": 988, "changed_not_reissued": 0,
    "reject_reasons": {"invalid_email": 9, "duplicate_customer_id": 3},
    "vendor_calls": 688, "achieved_rate_per_s": 48.7, "limit_per_s": 50.0,
    "read_s": 0.1, "stage_s": 0.4, "deliver_s": 14.1, "total_s": 14.9,
    "export_files": ["/x/exports/loyalty-moengage.csv"], "rejects_file": "/x/exports/loyalty-rejects.csv",
    "failures_file": None,
}  # fmt: skip


def test_summary_rows_have_every_required_metric() -> None:
    rows = {r["metric"]: r["value"] for r in summary_rows(SUMMARY)}
    assert (
        rows["read"] == 1000 and rows["rejected"] == 12 and rows["skipped (already issued, unchanged)"] == 300
    )
    assert rows["issued: new"] == 680 and rows["failed"] == 0 and rows["duration (s)"] == 14.9
    assert rows["rejected: invalid_email"] == 9 and rows["rejected: duplicate_customer_id"] == 3
    assert rows["achieved rate / limit (req/s)"] == "48.7 / 50.0"
    assert "updated" not in rows  # an issue run has no "updated" line …
    assert {r["metric"]: r["value"] for r in summary_rows({**SUMMARY, "updated": 42})}[
        "updated"
    ] == 42  # … an update run has


def test_markdown_links_the_files_and_warns_about_failures() -> None:
    md = summary_markdown(SUMMARY)
    assert "| issued: new | 680 |" in md and "file:///x/exports/loyalty-moengage.csv" in md
    assert "rejects: [loyalty-rejects.csv]" in md and "Warning" not in md
    assert output_files(SUMMARY) == [
        ("export", "/x/exports/loyalty-moengage.csv"),
        ("rejects", "/x/exports/loyalty-rejects.csv"),
    ]
    assert "**Warning: 4 rows failed at the vendor**" in summary_markdown({**SUMMARY, "failed": 4})
    assert "**Dry run**" in summary_markdown({**SUMMARY, "dry_run": True, "export_files": []})


def test_funnel_from_a_hand_made_count_dict() -> None:
    counts = {"uninstalled": 30, "issued": 200, "installed": 120}
    rows = funnel_rows(counts)
    assert [r["stage"] for r in rows] == [
        "issued",
        "installed",
        "uninstalled",
    ]  # funnel order, not dict order
    assert [r["share"] for r in rows] == [1.0, 0.6, 0.15]
    md = funnel_markdown(counts, campaign="loyalty")
    lines = md.splitlines()
    assert lines[0] == "## Funnel: loyalty"
    installed = next(line for line in lines if line.startswith("| installed |"))
    assert "| 120 | 60.0% |" in installed and installed.count("█") == 18 and installed.count("░") == 12
    assert next(line for line in lines if line.startswith("| issued |")).count("█") == 30
    assert "(no passes yet)" in funnel_markdown({})
    assert funnel_rows({"issued": 0, "installed": 0})[1]["share"] == 0.0  # no division by zero
    extra = funnel_rows({"issued": 10, "installed": 5, "failed": 1})
    assert extra[-1]["stage"] == "failed"  # unknown stages are kept, after the funnel


def test_failure_markdown_and_progress_listeners() -> None:
    md = failure_markdown("loyalty", ValueError("boom"), run="r1")
    assert md.startswith("# FAILED: loyalty") and "Run `r1`" in md and "ValueError: boom" in md
    assert "rerun resumes" in md and "```" not in md  # wrapped text: no code block wider than the panel
    from passflow.errors import ConfigError, RejectRateExceeded

    config = failure_markdown("loyalty", ConfigError("bad key"))
    assert (
        "Nothing was issued" in config and "Fix the campaign file" in config and "rerun resumes" not in config
    )
    rejects = failure_markdown(
        "loyalty", RejectRateExceeded("too many"), reasons={"phone_invalid": 7}, rejects_file="/x/rejects.csv"
    )
    assert (
        "| phone_invalid | 7 |" in rejects
        and "`/x/rejects.csv`" in rejects
        and "rerun resumes" not in rejects
    )
    outage = failure_markdown("loyalty", RuntimeError("vendor down"), issued=12)
    assert "12 passes were issued" in outage and "rerun resumes" in outage
    seen: list[tuple] = []
    remove = add_progress_listener(lambda *a: seen.append(a))
    report_progress("read", 100)
    report_progress("deliver", 1, 4)
    remove()
    report_progress("deliver", 2, 4)
    assert seen == [("read", 100, None), ("deliver", 1, 4)]
