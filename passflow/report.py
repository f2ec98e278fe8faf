"""Human-readable run reports, shared by the Prefect artifacts, the CLI and the inbox's report files.

Everything here renders a run's *summary dict* (:meth:`passflow.run.RunResult.summary`, also what
the flow returns), so the artifact, the CLI table and the inbox report can never disagree. A run's
progress goes to listeners (:func:`add_progress_listener`): the flow feeds the Prefect progress
artifact and the CLI's live progress bar from the same calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from passflow.run import RunResult

Summary = Mapping[str, Any]
# Timing keys of a summary, in display order (seconds).
TIMING_KEYS = ("read_s", "stage_s", "deliver_s", "ledger_wait_s", "total_s")


def _as_summary(result: RunResult | Summary) -> Summary:
    return result.summary() if isinstance(result, RunResult) else result


def summary_rows(result: RunResult | Summary) -> list[dict[str, Any]]:
    """The summary as (metric, value) rows — the table artifact, the CLI table and the inbox report."""
    s = _as_summary(result)
    verb = "would issue" if s.get("dry_run") else "issued"
    rows: list[tuple[str, Any]] = [
        ("read", s.get("read", 0)),
        ("rejected", s.get("rejected", 0)),
        ("skipped (already issued, unchanged)", s.get("skipped_unchanged", 0)),
        (f"{verb}: new", s.get("issued_new", 0)),
        (f"{verb}: changed inputs", s.get("reissued_changed", 0)),
        (f"{verb}: retried (failed/pending before)", s.get("retried", 0)),
        ("reconciled (found at the vendor after a crash)", s.get("reconciled", 0)),
    ]
    if "updated" in s:  # update runs (update-passes) report what they changed
        rows.append(("updated", s["updated"]))
    rows += [("failed", s.get("failed", 0)), ("exported", s.get("exported", 0))]
    if s.get("changed_not_reissued"):
        rows.append(("changed since issue, not re-created (use update-passes)", s["changed_not_reissued"]))
    for reason, n in (s.get("reject_reasons") or {}).items():
        rows.append((f"rejected: {reason}", n))
    if s.get("vendor_calls"):
        rows.append(("vendor calls", s["vendor_calls"]))
        limit = s.get("limit_per_s")
        rows.append(("achieved rate / limit (req/s)", f"{s.get('achieved_rate_per_s')} / {limit or 'none'}"))
    if s.get("total_s") is not None:
        rows.append(("duration (s)", s["total_s"]))
    for key in TIMING_KEYS[:-1]:
        if s.get(key) is not None:
            rows.append((f"time: {key.removesuffix('_s')} (s)", s[key]))
    return [{"metric": m, "value": v} for m, v in rows]


def output_files(result: RunResult | Summary) -> list[tuple[str, str]]:
    """(kind, path) of every file a run wrote: exports, rejects, failed rows."""
    s = _as_summary(result)
    # delivered exports are linked where the CRM imports them (s3://…, sftp://…), not as local files
    files = [("export", f) for f in s.get("delivered_files") or s.get("export_files") or []]
    if s.get("rejects_file"):
        files.append(("rejects", s["rejects_file"]))
    if s.get("failures_file"):
        files.append(("failed rows", s["failures_file"]))
    return files


def summary_markdown(result: RunResult | Summary, *, title: str | None = None) -> str:
    s = _as_summary(result)
    lines = [f"# {title or s.get('campaign', 'run')} — run `{s.get('run_id', '?')}`", ""]
    if s.get("dry_run"):
        lines += ["**Dry run**: nothing was written.", ""]
    if s.get("failed"):
        lines += [f"**Warning: {s['failed']} rows failed at the vendor** — see the failed-rows file.", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {r['metric']} | {r['value']} |" for r in summary_rows(s)]
    lines += ["", "## Outputs", ""]
    for kind, f in output_files(s):
        link = f if "://" in f else Path(f).as_uri()
        lines.append(f"- {kind}: [{f.rsplit('/', 1)[-1]}]({link}) — `{f}`")
    if not output_files(s):
        lines.append("- (no files written)")
    return "\n".join(lines) + "\n"


def failure_next_step(error: BaseException | str, *, issued: int = 0) -> str:
    """What to do next, by error class: a config/input error issued nothing (fix it and run again);
    too many rejects issued nothing (see the reasons and the rejects file); anything else (a vendor
    outage, a stop) may have issued rows, which the ledger keeps, so a rerun resumes."""
    from passflow.errors import ConfigError, RejectRateExceeded, SourceError, TemplateError

    if isinstance(error, ConfigError | SourceError | TemplateError):
        return "Nothing was issued. Fix the campaign file or the input named above, then run again."
    if isinstance(error, RejectRateExceeded):
        return (
            "Nothing was issued: too many rows were rejected. Fix the rows listed in the rejects file (the "
            "reasons are counted above) or raise [validation] max_reject_rate, then run again."
        )
    done = f"{issued} passes were issued and recorded in the ledger" if issued else "The ledger keeps what was issued"
    return (
        f"{done}; no export was written for this run (exports are committed only when the whole run "
        "succeeds). Fix the cause (e.g. wait for the vendor) and run again: a rerun resumes and skips "
        "what was issued."
    )


def failure_markdown(
    campaign: str,
    error: BaseException | str,
    *,
    run: str | None = None,
    text: str | None = None,
    issued: int = 0,
    reasons: Mapping[str, int] | None = None,
    rejects_file: str | None = None,
) -> str:
    """The loud artifact of a failed run: what failed and what to do. ``text`` (or ``error``'s text)
    must be redacted. Plain wrapped paragraphs, no code block: a Prefect panel is ~850 px wide."""
    message = text or (error if isinstance(error, str) else f"{type(error).__name__}: {error}")
    lines = [f"# FAILED: {campaign}", ""]
    if run:
        lines += [f"Run `{run}`", ""]
    lines += [f"> {part}" if part else ">" for part in message.strip().splitlines()]
    lines += ["", f"**Next step:** {failure_next_step(error, issued=issued)}", ""]
    if reasons:
        lines += ["| reject reason | rows |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:20]]
        lines.append("")
    if rejects_file:
        lines += [f"Rejects file: `{rejects_file}`", ""]
    return "\n".join(lines)


# --- funnel (campaigns with callbacks) --------------------------------------------------------------
FUNNEL_STAGES = ("issued", "installed", "uninstalled")
BAR_WIDTH = 30


def funnel_rows(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """issued → installed → uninstalled (then any other stage), each with its share of ``issued``."""
    stages = [k for k in FUNNEL_STAGES if k in counts] + [k for k in counts if k not in FUNNEL_STAGES]
    base = counts.get("issued") or max(counts.values(), default=0)
    return [
        {"stage": k, "count": int(counts[k]), "share": (counts[k] / base) if base else 0.0} for k in stages
    ]


def funnel_markdown(counts: Mapping[str, int], *, campaign: str = "") -> str:
    """A funnel table with a text bar per stage — reads at a glance in the Prefect UI and a terminal."""
    lines = [f"## Funnel{': ' + campaign if campaign else ''}", "", "| stage | count | share | |", "|---|---:|---:|---|"]
    for r in funnel_rows(counts):
        filled = round(min(r["share"], 1.0) * BAR_WIDTH)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        lines.append(f"| {r['stage']} | {r['count']} | {r['share']:.1%} | `{bar}` |")
    if not counts:
        lines.append("| (no passes yet) | 0 | | |")
    return "\n".join(lines) + "\n"


# --- progress ------------------------------------------------------------------------------------
ProgressListener = Callable[[str, int, int | None], None]
_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Call ``listener(phase, done, total)`` as a run advances; returns a function that removes it.

    Phases: ``"read"`` (rows read and validated so far; total unknown while streaming) and
    ``"deliver"`` (batches delivered of ``total``).
    """
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def report_progress(phase: str, done: int, total: int | None = None) -> None:
    for listener in list(_listeners):
        listener(phase, done, total)
