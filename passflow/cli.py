"""``passflow`` — the command line: the analyst's and operator's entry point.

Exit codes: 0 ok; 1 the run failed (vendor errors, unexpected error); 2 bad configuration or input;
3 too many rejected rows (nothing issued).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from passflow.errors import ConfigError, PassflowError, RejectRateExceeded
from passflow.secrets import redact

app = typer.Typer(
    name="passflow",
    help="Issue mobile wallet passes in bulk (Skycore signed links, Passmachine API) — Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _prefect_defaults() -> None:
    # The ephemeral API server takes 7–17 s to start here; Prefect's default timeout is too tight.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # No network here beyond package registries; telemetry would only log errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _fail(exc: BaseException) -> None:
    if isinstance(exc, RejectRateExceeded):
        err.print(f"[bold red]stopped:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(3)
    if isinstance(exc, ConfigError):
        err.print(f"[bold red]configuration error:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(2)
    if isinstance(exc, PassflowError):
        err.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(2 if "Source" in type(exc).__name__ else 1)
    err.print(f"[bold red]run failed:[/] {type(exc).__name__}: {escape(redact(str(exc)))}", highlight=False)
    raise typer.Exit(1)


def _run_flow(flow: Any, request: Any, campaign: Any) -> dict:
    """Run a flow (with the sandbox when the campaign points at it); its summary, or exit with the error."""
    from passflow.sandbox_autostart import sandbox_for

    with sandbox_for(campaign, console=err):
        state = flow(request, return_state=True)
    if state.is_failed() or state.is_crashed():
        exc = state.result(raise_on_failure=False)
        _fail(exc if isinstance(exc, BaseException) else RuntimeError(str(state.message)))
    return state.result()


def _print_summary(summary: dict) -> None:
    from passflow.report import SUMMARY_LABELS

    table = Table(title=f"{summary['campaign']} — run {summary['run_id']}" + (" (dry run)" if summary["dry_run"] else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in SUMMARY_LABELS:
        value = summary.get(key)
        if value not in (None, 0, [], {}) or key in ("read", "rejected", "issued_new", "failed", "exported"):
            table.add_row(label, str(value))
    for reason, n in (summary.get("reject_reasons") or {}).items():
        table.add_row(f"  rejected: {reason}", str(n))
    console.print(table)
    # Paths on one line each (no wrapping), so they can be copied.
    for f in summary.get("export_files") or []:
        console.print(f"export: {f}", highlight=False, soft_wrap=True, markup=False)
    if summary.get("rejects_file"):
        console.print(f"rejects: {summary['rejects_file']}", highlight=False, soft_wrap=True, markup=False)
    if summary.get("failures_file"):
        console.print(f"failed rows: {summary['failures_file']}", highlight=False, soft_wrap=True, markup=False)


def _print_preview(rows: list[dict[str, str]]) -> None:
    table = Table(title="would issue (first rows)", show_lines=True)
    for col in rows[0]:
        table.add_column(col.strip("_"), overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    console.print(table)


@app.command()
def issue(
    campaign: Annotated[Path, typer.Argument(help="Campaign TOML file, e.g. data/campaigns/skycore-coupon.toml")],
    segment: Annotated[str | None, typer.Option(help="CSV path or database URL replacing the campaign's source")] = None,
    table: Annotated[str | None, typer.Option(help="Table to read when --segment is a database URL")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be issued; write nothing")] = False,
    max_per_second: Annotated[float | None, typer.Option(help="Override [limits] max_per_second")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Override [limits] max_in_flight")] = None,
    preview_rows: Annotated[int, typer.Option(help="Rows to preview in a dry run")] = 5,
) -> None:
    """Issue passes for a campaign's segment (a Prefect flow run) and write the attribute exports."""
    _prefect_defaults()
    from flows.issue_passes import IssueRequest, issue_passes
    from passflow.config import load_campaign

    request = IssueRequest(
        campaign=str(campaign),
        segment=segment,
        table=table,
        dry_run=dry_run,
        max_per_second=max_per_second,
        max_in_flight=max_in_flight,
        preview_rows=preview_rows,
    )
    try:
        # Validate before Prefect starts: a config error should not cost a server start-up.
        loaded = load_campaign(campaign, overrides=request.overrides())
    except PassflowError as exc:
        _fail(exc)
    summary = _run_flow(issue_passes, request, loaded)
    _print_summary(summary)
    if summary.get("dry_run") and summary.get("preview"):
        _print_preview(summary["preview"])
    if summary.get("failed"):
        raise typer.Exit(1)


@app.command()
def update(
    campaign: Annotated[Path, typer.Argument(help="Campaign TOML file with an [updates] section")],
    diff: Annotated[bool, typer.Option("--diff", help="Rerun the segment; update customers whose values changed")] = False,
    events: Annotated[str | None, typer.Option(help="Events CSV (customer_id,event,occurred_at[,event_id]) mapped by [updates.rules]")] = None,
    events_source: Annotated[bool, typer.Option("--events-source", help="Read the events from [updates.events]")] = False,
    customers: Annotated[str | None, typer.Option(help="Comma-separated customer ids, or @file with one id per line")] = None,
    action: Annotated[str | None, typer.Option(help="With --customers: void, expire or an [updates.actions] name")] = None,
    segment: Annotated[str | None, typer.Option(help="With --diff: a segment CSV replacing the campaign's [source]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send and write nothing")] = False,
) -> None:
    """Update issued passes (a Prefect flow run); every attempt goes to the update history."""
    _prefect_defaults()
    from flows.update_passes import update_passes
    from passflow.config import load_campaign
    from passflow.updates import UpdateRequest

    chosen = [n for n, on in (("--diff", diff), ("--events", events), ("--events-source", events_source),
                              ("--customers", customers)) if on]  # fmt: skip
    if len(chosen) != 1:
        _fail(ConfigError("choose exactly one of --diff, --events FILE, --events-source, --customers IDS"))
    ids: list[str] = []
    if customers:
        text = customers
        if customers.startswith("@"):
            try:
                text = Path(customers[1:]).read_text(encoding="utf-8").replace("\n", ",")
            except OSError as exc:
                _fail(ConfigError(f"cannot read {customers[1:]}: {exc.strerror}", key="--customers"))
        ids = [c.strip() for c in text.split(",") if c.strip()]
    mode = "diff" if diff else "customers" if customers else "events"
    request = UpdateRequest(campaign=str(campaign), mode=mode, customer_ids=ids, action=action,
                            events_file=str(Path(events).resolve()) if events else None,
                            segment=str(Path(segment).resolve()) if segment else None, dry_run=dry_run)  # fmt: skip
    try:
        from passflow.updates.run import request_overrides

        loaded = load_campaign(campaign, overrides=request_overrides(request))
        from passflow.updates.actions import check_update_config

        check_update_config(loaded, action=action if mode == "customers" else None, diff=diff)
        if mode == "customers" and not action:
            raise ConfigError("--customers needs --action (void, expire or an [updates.actions] name)")
    except PassflowError as exc:
        _fail(exc)
    summary = _run_flow(update_passes, request, loaded)
    table = Table(title=f"{summary['campaign']} — update run {summary['run_id'][:8]}" + (" (dry run)" if dry_run else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, int) and not isinstance(value, bool) and key != "dry_run":
            table.add_row(key, str(value))
    for code, n in summary["error_codes"].items():
        table.add_row(f"  failed: {code}", str(n))
    console.print(table)
    for p in summary["preview"]:
        console.print(f"would send {p['customer_id']} ({p['action']}): {p['request']}", markup=False, soft_wrap=True)
    if summary.get("failed"):
        raise typer.Exit(1)


@app.command()
def history(
    campaign: Annotated[Path, typer.Argument(help="Campaign TOML file")],
    customer_id: Annotated[str, typer.Argument(help="Customer id")],
) -> None:
    """What did a customer get, and when: every update attempt, oldest first."""
    from passflow.config import load_campaign
    from passflow.updates import customer_history

    try:
        rows = customer_history(load_campaign(campaign), customer_id)
    except PassflowError as exc:
        _fail(exc)
    if rows.empty:
        console.print(f"no updates recorded for {customer_id}", markup=False)
        return
    # One block per attempt, not a table: requests are long JSON and must stay copyable.
    console.print(f"{len(rows)} update attempt(s) for {customer_id}, oldest first", markup=False)
    for r in rows.itertuples():
        result = r.status + (f" {r.error_code}: {r.error}" if r.error_code else "")
        key = f", event {r.event_key}" if r.event_key else ""
        console.print(
            f"{r.created_at:%Y-%m-%d %H:%M:%S}Z  {r.action}  ({r.source}{key})  pass {r.pass_id or '-'}  "
            f"{result}  attempts {r.attempts}  run {r.run_id[:8]}\n  sent: {r.request or '-'}",
            markup=False, soft_wrap=True, highlight=False,
        )  # fmt: skip


@app.command()
def validate(campaign: Annotated[Path, typer.Argument(help="Campaign TOML file")]) -> None:
    """Check a campaign file (keys, types, secrets, templates, segment columns) without running it."""
    from passflow.config import load_campaign
    from passflow.engine import IssueRun

    try:
        loaded = load_campaign(campaign)
        run = IssueRun(loaded, dry_run=True)
        try:
            first = next(iter(run.source_chunks()), None)
            if first is not None:
                run.stage_chunk(first.head(0))
        finally:
            run.close()
    except PassflowError as exc:
        _fail(exc)
    console.print(f"[green]ok[/]: {campaign} ({loaded.provider}, segment {run.source_label})", highlight=False)


@app.command("verify-link")
def verify_link_cmd(
    links: Annotated[list[str] | None, typer.Argument(help="Signed link(s) to check, e.g. one from Skycore's 'Get Link'")] = None,
    export: Annotated[Path | None, typer.Option(help="Check every link in an export CSV (column *_pass_link)")] = None,
    salt_env: Annotated[str | None, typer.Option(help="Environment variable holding the salt (never type it on the command line)")] = None,
    campaign: Annotated[Path | None, typer.Option(help="Use this campaign's recipe and salt")] = None,
) -> None:
    """Check signed links. For one link, report every checksum recipe that matches it."""
    from passflow.linkcheck import check_export, explain_link, recipe_and_salt

    try:
        recipe, salt = recipe_and_salt(campaign=campaign, salt_env=salt_env)
        if export is not None:
            ok, bad, total = check_export(export, salt=salt, recipe=recipe)
            console.print(f"{export}: {ok} of {total} links verify" + (f"; {len(bad)} do not" if bad else ""), soft_wrap=True, markup=False)
            for row, reason in bad[:20]:
                console.print(f"  row {row}: {reason}", highlight=False)
            if bad or total == 0:
                raise typer.Exit(1)
            return
        if not links:
            raise PassflowError("give one or more links, or --export FILE")
        failures = 0
        for link in links:
            text, good = explain_link(link, salt=salt, recipe=recipe if campaign else None)
            console.print(text, highlight=False, markup=False)
            failures += not good
        if failures:
            raise typer.Exit(1)
    except PassflowError as exc:
        _fail(exc)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8765,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency up to this")] = 0.0,
    max_in_flight: Annotated[int | None, typer.Option(help="Answer 429 beyond this many requests in flight")] = None,
    max_per_second: Annotated[int | None, typer.Option(help="Answer 429 beyond this many requests per second")] = None,
) -> None:
    """Run the provider sandbox: a local server that behaves like Passmachine and Skycore."""
    from passflow.sandbox.runner import serve
    from passflow.sandbox.state import SandboxConfig

    config = SandboxConfig(
        latency_ms=latency_ms, jitter_ms=jitter_ms, max_in_flight=max_in_flight, max_per_second=max_per_second
    )
    console.print(
        f"provider sandbox: Passmachine at http://{host}:{port}/passmachine (account 'demo', tokens "
        "pm-public-demo / pm-secret-demo), Skycore at /skycore (API key sky-demo-key), stats at /_admin/stats",
        highlight=False,
        soft_wrap=True,
    )
    serve(host=host, port=port, config=config)


@app.command()
def callbacks(
    campaigns: Annotated[list[Path], typer.Argument(help="Campaign TOML file(s) with a [callbacks] section")],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8780,
) -> None:
    """Receive vendor callbacks (Skycore postbacks, Passmachine webhooks) at /callbacks/<campaign>/<provider>."""
    _prefect_defaults()
    from passflow.callbacks.app import endpoints_for
    from passflow.callbacks.server import load_campaigns, serve_callbacks

    try:
        loaded = load_campaigns(campaigns)
        endpoints = endpoints_for(loaded)  # secrets and ledgers checked before the port opens
    except PassflowError as exc:
        _fail(exc)
    for c in loaded:
        console.print(f"{c.name}: POST http://{host}:{port}/callbacks/{c.name}/{c.provider}", highlight=False,
                      soft_wrap=True, markup=False)
    from passflow.callbacks.events import prefect_api_configured

    if any(c.callbacks and c.callbacks.emit_events for c in loaded) and not prefect_api_configured():
        err.print(
            "note: PREFECT_API_URL is not set, so no Prefect events are emitted; callbacks are still "
            "recorded in passflow_pass_events (an [updates.events] table source reads them)",
            highlight=False,
            soft_wrap=True,
        )
    serve_callbacks(endpoints, host=host, port=port)


@app.command()
def funnel(campaign: Annotated[Path, typer.Argument(help="Campaign TOML file")]) -> None:
    """Install funnel from the ledger and the recorded callbacks: issued → installed → uninstalled."""
    from passflow.callbacks.funnel import funnel_counts
    from passflow.config import load_campaign

    try:
        loaded = load_campaign(campaign)
        counts = funnel_counts(loaded.ledger.url, loaded.name)
    except PassflowError as exc:
        _fail(exc)
    table = Table(title=f"{loaded.name} — install funnel")
    table.add_column("stage")
    table.add_column("customers", justify="right")
    for stage, n in counts.items():
        table.add_row(stage, str(n))
    console.print(table)


@app.command("demo-db")
def demo_db(
    path: Annotated[Path, typer.Option(help="SQLite file to create")] = Path("data/crm.db"),
    rows: Annotated[int, typer.Option(help="Customers to generate")] = 500,
) -> None:
    """Build the sample SQLite CRM database used by the SQL example campaign."""
    from passflow.demo import build_crm_db

    build_crm_db(path, rows=rows)
    console.print(f"wrote {path} ({rows} customers, table 'customers')")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
