"""Human-readable run reports, shared by the Prefect artifacts and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passflow.engine import RunResult

# (summary key, label) in display order — the CLI's table.
SUMMARY_LABELS = [
    ("read", "read"),
    ("rejected", "rejected"),
    ("skipped_unchanged", "skipped (already issued, unchanged)"),
    ("issued_new", "issued: new"),
    ("reissued_changed", "issued: changed inputs"),
    ("retried", "issued: retried (failed/pending before)"),
    ("reconciled", "reconciled after a crash"),
    ("changed_not_reissued", "changed since issue, not re-created"),
    ("failed", "failed"),
    ("exported", "exported"),
    ("vendor_calls", "vendor calls"),
    ("achieved_rate_per_s", "achieved rate (req/s)"),
    ("limit_per_s", "rate limit (req/s)"),
    ("total_s", "duration (s)"),
]


def summary_rows(result: RunResult) -> list[dict[str, Any]]:
    """The summary as (metric, value) rows — a Prefect table artifact and the CLI table."""
    c = result.counts
    verb = "would issue" if result.dry_run else "issued"
    rows: list[tuple[str, Any]] = [
        ("read", c.read),
        ("rejected", c.rejected),
        ("skipped (already issued, unchanged)", c.skipped_unchanged),
        (f"{verb}: new", c.issued_new),
        (f"{verb}: changed inputs", c.reissued_changed),
        (f"{verb}: retried (failed/pending before)", c.retried),
        ("reconciled (found at the vendor after a crash)", c.reconciled),
        ("failed", c.failed),
        ("exported", c.exported),
    ]
    if c.changed_not_reissued:
        rows.append(("changed since issue, not re-created (use update-passes)", c.changed_not_reissued))
    for reason, n in result.reject_reasons.items():
        rows.append((f"rejected: {reason}", n))
    if result.vendor_calls:
        s = result.summary()
        rows.append(("vendor calls", result.vendor_calls))
        rows.append(("achieved rate / limit (req/s)", f"{s['achieved_rate_per_s']} / {s['limit_per_s']}"))
    for key, seconds in result.timings.items():
        rows.append((f"time: {key.removesuffix('_s')} (s)", round(seconds, 3)))
    return [{"metric": m, "value": v} for m, v in rows]


def summary_markdown(result: RunResult) -> str:
    lines = [f"# {result.campaign} — run `{result.run_id}`", ""]
    if result.dry_run:
        lines += ["**Dry run**: nothing was written.", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {r['metric']} | {r['value']} |" for r in summary_rows(result)]
    lines += ["", "## Outputs", ""]
    for f in result.export_files:
        lines.append(f"- export: [{Path(f).name}]({Path(f).as_uri()}) — `{f}`")
    if result.rejects_file:
        lines.append(f"- rejects: [{Path(result.rejects_file).name}]({Path(result.rejects_file).as_uri()})")
    if result.failures_file:
        lines.append(f"- failed rows: [{Path(result.failures_file).name}]({Path(result.failures_file).as_uri()})")
    if not (result.export_files or result.rejects_file or result.failures_file):
        lines.append("- (no files written)")
    return "\n".join(lines) + "\n"
