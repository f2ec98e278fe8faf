"""``passflow`` — the command line: the analyst's and operator's entry point.

Exit codes: 0 ok; 1 the run failed (vendor errors, unexpected error); 2 bad configuration or input;
3 too many rejected rows (nothing issued); 143 stopped by SIGTERM (calls in flight recorded; rerun to finish).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from passflow.errors import (
    ConfigError,
    PassflowError,
    RejectRateExceeded,
    RunStopped,
    SourceError,
    TemplateError,
)
from passflow.secrets import redact

app = typer.Typer(
    name="passflow",
    help="Issue mobile wallet passes in bulk (Skycore signed links, Passmachine API) — Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: "[limits] max_per_second" keeps its brackets
)
console = Console()
err = Console(stderr=True)


def _prefect_defaults() -> None:
    # The ephemeral API server takes 7–17 s to start here; Prefect's default timeout is too tight.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # No network here beyond package registries; telemetry would only log errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task/flow with its traceback; for a user error (bad campaign, bad segment,
    too many rejects) the message says it all, and the CLI prints it once more without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PassflowError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    quiet = _NoTracebackForUserErrors()
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
            logger.addFilter(quiet)


def _fail(exc: BaseException) -> None:
    if isinstance(exc, RejectRateExceeded):
        err.print(f"[bold red]stopped:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(3)
    if isinstance(exc, RunStopped):
        err.print(f"[bold yellow]stopped:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(143)  # 128 + SIGTERM, as a shell reports a process ended by it
    if isinstance(exc, ConfigError):
        err.print(f"[bold red]configuration error:[/] {escape(redact(str(exc)))}", highlight=False)
        raise typer.Exit(2)
    if isinstance(exc, PassflowError):
        err.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        # an unreadable segment or a broken template is bad input, like a bad campaign file
        raise typer.Exit(2 if isinstance(exc, (SourceError, TemplateError)) else 1)
    err.print(f"[bold red]run failed:[/] {type(exc).__name__}: {escape(redact(str(exc)))}", highlight=False)
    raise typer.Exit(1)


def _run_flow(flow: Any, request: Any, campaign: Any) -> tuple[dict, Any]:
    """Run a flow (with the sandbox when the campaign points at it, and a live progress bar); its summary
    and final state, or exit with the error."""
    from passflow.prefect_api import temporary_prefect_api
    from passflow.sandbox.autostart import sandbox_for

    _quiet_user_errors()
    # our own temporary API server (not Prefect's ephemeral one): it dies with this process on kill -9
    with sandbox_for(campaign, console=err), temporary_prefect_api(), _live_progress():
        state = flow(**request.flow_parameters(), return_state=True)
    return _state_summary(state), state


def _print_summary(summary: dict) -> None:
    from passflow.report import output_files, summary_rows

    title = f"{summary['campaign']} — run {summary['run_id']}" + (" (dry run)" if summary["dry_run"] else "")
    console.print(title, style="bold", highlight=False, markup=False, soft_wrap=True)  # never wrapped
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in summary_rows(summary):
        table.add_row(row["metric"], str(row["value"]))
    console.print(table)
    # Paths on one line each (no wrapping), so they can be copied.
    for kind, f in output_files(summary):
        console.print(f"{kind}: {f}", highlight=False, soft_wrap=True, markup=False)


@contextlib.contextmanager
def _live_progress() -> Iterator[None]:
    """A rich progress bar fed by the flow's progress reports (rows read, then batches delivered)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from passflow.report import add_progress_listener

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=False, disable=not err.is_terminal and not os.environ.get("PASSFLOW_PROGRESS"),
    )  # fmt: skip
    tasks: dict[str, Any] = {}

    def on_progress(phase: str, done: int, total: int | None) -> None:
        if phase not in tasks:
            label = "rows read and validated" if phase == "read" else "batches delivered"
            tasks[phase] = progress.add_task(label, total=total)
            if phase == "deliver" and "read" in tasks:  # reading is over: show it complete
                t = tasks["read"]
                progress.update(t, total=progress.tasks[t].completed)
        progress.update(tasks[phase], completed=done, total=total)

    remove = add_progress_listener(on_progress)
    try:
        with progress:
            yield
    finally:
        remove()


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
    from passflow.flows.issue_passes import IssueRequest, issue_passes

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
    summary, state = _run_flow(issue_passes, request, loaded)
    _print_summary(summary)
    if summary.get("dry_run") and summary.get("preview"):
        _print_preview(summary["preview"])
    if summary.get("failed"):
        err.print(f"[bold red]run failed:[/] {escape(str(state.message or ''))}", highlight=False)
        raise typer.Exit(1)


def _state_summary(state: Any) -> dict:
    """The summary of a finished flow run, or exit with the error of a failed one."""
    result = state.result(raise_on_failure=False) if (state.is_failed() or state.is_crashed()) else None
    if result is None:
        result = state.result() if state.is_completed() else RuntimeError(str(state.message))
    if isinstance(result, BaseException):
        _fail(result)
    return result


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
    from passflow.flows.update_passes import update_passes

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
    summary, _ = _run_flow(update_passes, request, loaded)
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
    rows = rows.astype(object).where(rows.notna(), "")  # no "nan" for an attempt without an error/event
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
    from passflow.run import IssueRun

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
    from passflow.providers.linkcheck import check_export_any, explain_any
    from passflow.providers.skycore.linkcheck import check_export, explain_link, recipe_and_salt

    try:
        generic = check_export_any(export, campaign) if export is not None else None
        if generic is None and (export is not None or not links or any(explain_any(u, None) is None for u in links)):
            recipe, salt = recipe_and_salt(campaign=campaign, salt_env=salt_env)
        if export is not None:
            ok, bad, total = generic or check_export(export, salt=salt, recipe=recipe)
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
            text, good = explain_any(link, campaign) or explain_link(link, salt=salt, recipe=recipe if campaign else None)
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


@app.command("inbox")
def inbox_cmd(
    inbox: Annotated[Path, typer.Option(help="Inbox folder (processed/ and rejected/ are made inside)")] = Path("data/inbox"),
    campaigns: Annotated[Path, typer.Option(help="Folder of campaign files")] = Path("data/campaigns"),
    settle_seconds: Annotated[float, typer.Option(help="A file must be unchanged this long (and since the last poll)")] = 10.0,
) -> None:
    """Poll the analysts' inbox once (the import-inbox flow): issue every complete CSV and file it away."""
    _prefect_defaults()
    from passflow.flows.import_inbox import InboxRequest, import_inbox

    request = InboxRequest(inbox=str(inbox.resolve()), campaigns=str(campaigns.resolve()), settle_seconds=settle_seconds)
    from passflow.prefect_api import temporary_prefect_api

    with temporary_prefect_api(), _live_progress():
        state = import_inbox(request, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):
        _fail(rows)
    if not rows:
        console.print(f"{inbox}: no complete file to take (a file is taken once it stops changing; "
                      "NAME.csv.ready takes it now)", highlight=False)  # fmt: skip
    table = Table(title=f"inbox {inbox}")
    for col in ("file", "status", "campaign", "issued", "rejected rows", "failed rows"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(row[c])) for c in ("file", "status", "campaign", "issued", "rejected rows", "failed rows")))
    if rows:
        console.print(table)
    for row in rows:
        if row["reasons"]:
            console.print(f"{row['file']}: {row['reasons']}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"report: {row['report']}", highlight=False, markup=False, soft_wrap=True)
    if state.is_failed():
        raise typer.Exit(1)


@app.command("serve")
def serve_cmd(
    campaigns: Annotated[Path | None, typer.Option(help="Folder of campaign files (default: data/campaigns)")] = None,
    inbox: Annotated[Path | None, typer.Option(help="Inbox folder for analysts' CSV files (default: data/inbox)")] = None,
    port: Annotated[int, typer.Option(help="Port of the Prefect server (UI at http://127.0.0.1:PORT)")] = 4200,
    server: Annotated[bool, typer.Option(help="Start a Prefect server; --no-server uses PREFECT_API_URL")] = True,
) -> None:
    """Self-hosted, one machine: a Prefect server, every deployment (scheduled) and the inbox, in one command."""
    _prefect_defaults()
    from passflow.deployments.registry import CAMPAIGNS, build_deployments
    from passflow.deployments.server import prefect_server

    from passflow.config import load_campaign
    from passflow.sandbox.autostart import sandbox_for

    folder = campaigns or CAMPAIGNS
    inbox_request = {"campaigns": str(folder.resolve())} if campaigns else {}
    if inbox:
        inbox_request["inbox"] = str(inbox.resolve())
    try:
        deployments = build_deployments(folder, inbox=inbox_request)
        loaded = [load_campaign(p) for p in sorted(folder.glob("*.toml"))]
    except PassflowError as exc:
        _fail(exc)
    with contextlib.ExitStack() as stack:
        if server and not os.environ.get("PREFECT_API_URL"):
            from prefect.settings import PREFECT_API_URL, temporary_settings

            api_url = stack.enter_context(prefect_server(port=port))
            os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes
            stack.enter_context(temporary_settings({PREFECT_API_URL: api_url}))  # for this one
            console.print(f"Prefect UI: http://127.0.0.1:{port}  (API {api_url})", highlight=False)
        for campaign in loaded:  # campaigns that point at the provider sandbox get it for the session
            stack.enter_context(sandbox_for(campaign, console=console))
        from prefect import serve

        for d in deployments:
            console.print(f"serving {d.flow_name}/{d.name}", highlight=False)
        serve(*deployments, print_starting_message=False)


@app.command("deploy")
def deploy_cmd(
    pool: Annotated[str, typer.Option(help="Process work pool to deploy to (created when missing)")] = "passflow",
    campaigns: Annotated[Path | None, typer.Option(help="Folder of campaign files (default: data/campaigns)")] = None,
) -> None:
    """Register every deployment with a process work pool; run `prefect worker start --pool POOL` on the
    machines that should execute them (passflow installed there)."""
    _prefect_defaults()
    from passflow.deployments.registry import CAMPAIGNS, register_with_pool

    try:
        names = register_with_pool(pool, campaigns or CAMPAIGNS)
    except PassflowError as exc:
        _fail(exc)
    for name in names:
        console.print(f"deployed {name} to work pool {pool!r}", highlight=False)
    console.print(f"now, on each worker machine: prefect worker start --pool {pool}", highlight=False)


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


# --- passflow db: the ledger database's schema (Alembic revisions, passflow.store.migrate) ----------
db_app = typer.Typer(
    help="The ledger database's schema: upgrade it, show its revision, compare it with the code.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")

_DbCampaign = Annotated[Path | None, typer.Argument(help="Campaign TOML file whose [ledger] url to use")]
_DbLedger = Annotated[str | None, typer.Option("--ledger", help="Ledger database URL (instead of a campaign file)")]


def _db_url(campaign: Path | None, ledger: str | None) -> Any:
    """The ledger URL of a campaign file or ``--ledger`` (else $PASSFLOW_LEDGER_URL), parsed."""
    from sqlalchemy.engine import make_url

    from passflow.config import LEDGER_URL_ENV, load_campaign

    if campaign is not None and ledger is not None:
        raise ConfigError("give a campaign file or --ledger URL, not both", key="--ledger")
    if campaign is not None:
        ledger = load_campaign(campaign).ledger.url  # resolved, PASSFLOW_LEDGER_URL applied
    ledger = ledger or os.environ.get(LEDGER_URL_ENV)
    if not ledger:
        raise ConfigError(
            f"which ledger? give a campaign file (passflow db upgrade data/campaigns/x.toml) or "
            f"--ledger URL (or set {LEDGER_URL_ENV})",
            key="--ledger",
        )
    try:
        return make_url(ledger)
    except Exception:  # noqa: BLE001 - SQLAlchemy's ArgumentError/ValueError: a bad URL, said plainly
        raise ConfigError("not a valid database URL (e.g. sqlite:///state/ledger.db, "
                          "postgresql+psycopg://user@host/db)", key="--ledger") from None  # fmt: skip


def _db_call(url: Any, fn: Any) -> Any:
    """Run ``fn(url)``; a database that cannot be reached is a configuration error (password hidden)."""
    import sqlalchemy as sa

    safe = url.render_as_string(hide_password=True)
    try:
        return fn(url)
    except sa.exc.SQLAlchemyError as exc:
        cause = exc.orig or exc
        detail = (str(cause).strip().splitlines() or [""])[0][:200]
        if url.password:
            detail = detail.replace(str(url.password), "***")
        raise ConfigError(f"cannot use the ledger at {safe}: {type(cause).__name__}: {detail}", key="--ledger") from None


@db_app.command("upgrade")
def db_upgrade(campaign: _DbCampaign = None, ledger: _DbLedger = None) -> None:
    """Upgrade a ledger database to this passflow's schema (creates an empty one; safe to rerun)."""
    from passflow.store import migrate

    try:
        url = _db_url(campaign, ledger)
        before, after = _db_call(url, migrate.upgrade)
    except PassflowError as exc:
        _fail(exc)
    safe = url.render_as_string(hide_password=True)
    if before == after:
        console.print(f"{safe}: already at {after.describe()} (head); nothing to do", highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(f"{safe}: {before.describe()} → {after.describe()} (head)", highlight=False, markup=False, soft_wrap=True)


@db_app.command("current")
def db_current(campaign: _DbCampaign = None, ledger: _DbLedger = None) -> None:
    """Show a ledger database's schema revision and this passflow's (head)."""
    from passflow.store import migrate

    try:
        url = _db_url(campaign, ledger)
        state = _db_call(url, migrate.current)
    except PassflowError as exc:
        _fail(exc)
    safe = url.render_as_string(hide_password=True)
    head = migrate.head()
    if state.revision == head:
        verdict = "at head"
    elif state.revision is not None and not migrate.known(state.revision):
        verdict = "newer than this passflow: use the passflow that upgraded it"
    else:
        verdict = f"behind: passflow db upgrade --ledger '{safe}'" if not state.empty else "empty: created when first opened"
    console.print(f"{safe}: {state.describe()}; this passflow's head: {head} — {verdict}", highlight=False, markup=False, soft_wrap=True)


@db_app.command("check")
def db_check(campaign: _DbCampaign = None, ledger: _DbLedger = None) -> None:
    """Compare a ledger database with the schema this passflow declares (exit 1 when they differ)."""
    from passflow.store import migrate

    try:
        url = _db_url(campaign, ledger)
        diffs = _db_call(url, migrate.check)
    except PassflowError as exc:
        _fail(exc)
    safe = url.render_as_string(hide_password=True)
    if not diffs:
        console.print(f"{safe}: matches passflow's schema", highlight=False, markup=False, soft_wrap=True)
        return
    for diff in diffs:
        console.print(f"{safe}: differs: {diff}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command("demo-db")
def demo_db(
    path: Annotated[Path, typer.Option(help="SQLite file to create")] = Path("data/crm.db"),
    rows: Annotated[int, typer.Option(help="Customers to generate")] = 500,
) -> None:
    """Build the sample SQLite CRM database used by the SQL example campaign."""
    from passflow.demo import build_crm_db

    build_crm_db(path, rows=rows)
    console.print(f"wrote {path} ({rows} customers, table 'customers')")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"passflow {version('passflow')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """Issue mobile wallet passes in bulk (Skycore signed links, Passmachine API) — Prefect flows."""


def _campaign_arg(value: str) -> Path:
    from passflow.runlog import resolve_campaign

    try:
        return resolve_campaign(value)
    except PassflowError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


@app.command()
def runs(
    campaign: Annotated[
        str | None, typer.Argument(help="Campaign name or TOML file; default: every campaign in data/campaigns")
    ] = None,
    limit: Annotated[int, typer.Option(help="Newest runs shown per campaign")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document (a list of runs) on stdout")] = False,
) -> None:
    """The run log: every run's status and headline from the ledger, newest first (read-only)."""
    import json

    from passflow.config import load_campaign
    from passflow.runlog import campaign_files, read_runs

    paths = [_campaign_arg(campaign)] if campaign else list(campaign_files().values())
    out: list[dict[str, Any]] = []
    try:
        for path in paths:
            loaded = load_campaign(path)
            out += read_runs(loaded.ledger.url, loaded.name, limit=limit)
    except PassflowError as exc:
        _fail(exc)
    out.sort(key=lambda r: r["started_at"], reverse=True)
    if as_json:
        print(json.dumps(out, default=str, indent=2))
        return
    if not out:
        console.print("no runs recorded yet", markup=False)
        return
    table = Table(title="runs, newest first")
    for col in ("started (UTC)", "campaign", "flow", "status", "headline", "run id"):
        table.add_column(col, overflow="fold")
    for r in out:
        dry = " (dry run)" if r["summary"].get("dry_run") else ""
        table.add_row(r["started_at"][:19], r["campaign"], r["flow"], r["status"], r["headline"] + dry, r["run_id"])
    console.print(table)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Every campaign in the campaigns folder: provider, schedule, the last run and a run in progress (read-only)."""
    import json

    from passflow.config import load_campaign
    from passflow.runlog import campaign_files, campaigns_dir, read_locks, read_runs

    rows: list[dict[str, Any]] = []
    for name, path in campaign_files().items():
        try:
            loaded = load_campaign(path)
        except PassflowError as exc:
            rows.append({"campaign": name, "file": str(path), "error": redact(str(exc).splitlines()[0])})
            continue
        [last] = read_runs(loaded.ledger.url, loaded.name, limit=1) or [None]
        locks = [lk for lk in read_locks(loaded.ledger.url) if lk["campaign"].split("#")[0] == loaded.name]
        sched = loaded.schedule
        rows.append(
            {
                "campaign": loaded.name,
                "file": str(path),
                "provider": loaded.provider,
                "schedule": f"{sched.cron} ({sched.timezone})" if sched else "",
                "last_run": last and {k: last[k] for k in ("run_id", "flow", "status", "started_at", "headline")},
                "running": [lk["run_id"] for lk in locks],
            }
        )
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    table = Table(title=f"campaigns in {campaigns_dir()}")
    for col in ("campaign", "provider", "schedule", "last run", "running"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["campaign"], "", "", f"config error: {r['error']}", "")
            continue
        last = r["last_run"]
        text = f"{last['started_at'][:16]} {last['status']}: {last['headline']}" if last else "never run"
        table.add_row(r["campaign"], r["provider"], r["schedule"], text, ", ".join(x[:8] for x in r["running"]))
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
