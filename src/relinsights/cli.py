"""The `relinsights` command: one entry point for the admin commands and the daemon.

Exit status: 0 success, 78 (EX_CONFIG) configuration error, 1 any other failure.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from relinsights import __version__
from relinsights.config import EX_CONFIG, Config, ConfigError, TenantConfig, load_config
from relinsights.db import make_engine, migrate
from relinsights.log import setup_logging
from relinsights.status import age_text, mailbox_statuses, tenant_statuses

app = typer.Typer(
    name="relinsights",
    help="Relationship analytics for Microsoft 365 sales teams: Exchange sync, KPIs, Dataverse write-back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $RELINSIGHTS_CONFIG, else /etc/relinsights/relinsights.toml).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print data as JSON.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
out = Console()
err = Console(stderr=True)
log = structlog.get_logger("relinsights.cli")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relinsights {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    pass


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Configuration problems exit 78 with every problem listed; nothing else is swallowed."""
    try:
        yield
    except ConfigError as exc:
        err.print(exc.render(), markup=False, highlight=False)
        raise typer.Exit(EX_CONFIG) from None


def _load(config: Path | None) -> Config:
    cfg = load_config(config)
    setup_logging(cfg.logging.level, cfg.logging.format)
    return cfg


def _load_for(config: Path | None, tenant: str | None) -> Config:
    """The config, checked to name `tenant` (when given) and to have at least one tenant."""
    cfg = _load(config)
    if tenant:
        cfg.tenant(tenant)
    if not cfg.tenants:
        raise ConfigError(cfg.source, ["tenant: no [[tenant]] table; add one (see `relinsights init`)"])
    return cfg


def _engine(cfg: Config) -> Any:
    engine = make_engine(cfg.database_url, cfg.database.pool_size)
    migrate(engine)
    return engine


def example_config_text() -> str:
    return resources.files("relinsights").joinpath("data/relinsights.example.toml").read_text()


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the commented example configuration.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a fully commented configuration file to edit."""
    if path.exists() and not force:
        err.print(f"{path} exists; pass --force to overwrite it")
        raise typer.Exit(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(example_config_text())
    os.chmod(path, 0o640)
    out.print(f"wrote {path}; edit the [[tenant]] table, then check it with `relinsights doctor --config {path}`")


def _progress_factory(progress: Progress | None) -> Callable[[Any], Callable[[int], None]] | None:
    if progress is None:
        return None

    def factory(mailbox: Any) -> Callable[[int], None]:
        task = progress.add_task(mailbox.address, total=None, count=0)

        def advance(n: int) -> None:
            progress.update(task, advance=n, count=progress.tasks[task].completed + n)

        return advance

    return factory


def _stop_flag() -> Callable[[], bool]:
    """SIGTERM/SIGINT: finish the current page, commit it, and stop."""
    stopping = {"now": False}

    def handler(signum: int, _frame: Any) -> None:
        if stopping["now"]:
            raise KeyboardInterrupt
        stopping["now"] = True
        err.print(f"received {signal.Signals(signum).name}: finishing the current page, then stopping")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: stopping["now"]


async def _sync_round(
    cfg: Config,
    engine: Any,
    tenant: str | None,
    mailbox: str | None,
    should_stop: Callable[[], bool],
    progress: Progress | None,
) -> list[Any]:
    from relinsights.graph.sync import sync_tenant

    tenants = [cfg.tenant(tenant)] if tenant else list(cfg.tenants)
    factory = _progress_factory(progress)
    return list(
        await asyncio.gather(
            *(
                sync_tenant(engine, t, mailbox_filter=mailbox, progress=factory, should_stop=should_stop)
                for t in tenants
            )
        )
    )


@app.command()
def sync(
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit (otherwise: every interval).")] = False,
    tenant: TenantOpt = None,
    mailbox: Annotated[str | None, typer.Option("--mailbox", help="Only this mailbox (an address).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync mail and calendar metadata from Exchange Online (delta, resumable)."""
    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    should_stop = _stop_flag()
    gc.freeze()  # long-lived library objects out of every GC sweep (see daemon.py)
    interval = min(t.sync.interval_minutes for t in cfg.tenants) * 60
    while True:
        show_bar = sys.stderr.isatty() and not as_json
        progress = (
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.fields[count]} messages"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            )
            if show_bar
            else None
        )
        if progress:
            progress.start()
        try:
            reports = asyncio.run(_sync_round(cfg, engine, tenant, mailbox, should_stop, progress))
        finally:
            if progress:
                progress.stop()
        failed = _print_sync_reports(reports, as_json)
        if once or should_stop():
            raise typer.Exit(1 if failed else 0)
        deadline = datetime.now(UTC).timestamp() + interval
        while datetime.now(UTC).timestamp() < deadline and not should_stop():
            asyncio.run(asyncio.sleep(1))
        if should_stop():
            raise typer.Exit(0)


def _print_sync_reports(reports: list[Any], as_json: bool) -> bool:
    failed = False
    rows = []
    for r in reports:
        failed |= r.status == "error" or bool(r.failed)
        rows.append(
            {
                "tenant": r.tenant,
                "status": r.status,
                "error": r.error,
                "mailboxes": r.mailboxes,
                "messages_added": r.messages_added,
                "messages_removed": r.messages_removed,
                "events_added": r.events_added,
                "resyncs": r.resyncs,
                "requests": r.requests,
                "throttled": r.throttled,
            }
        )
    if as_json:
        out.print_json(json.dumps(rows))
        return failed
    for row in rows:
        counts: dict[str, int] = {}
        for s in row["mailboxes"].values():
            counts[s] = counts.get(s, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no mailboxes"
        out.print(
            f"[bold]{row['tenant']}[/]: {row['status']} - mailboxes: {summary}; "
            f"+{row['messages_added']} messages, -{row['messages_removed']}, +{row['events_added']} events, "
            f"{row['resyncs']} resyncs, {row['requests']} requests ({row['throttled']} throttled)"
        )
        if row["error"]:
            out.print(f"  [red]error[/]: {row['error']}", highlight=False)
    return failed


@app.command()
def status(
    config: ConfigOpt = None,
    tenant: TenantOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include mailboxes out of scope (opted out).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per tenant: last computation and write-back; per mailbox: sync status, counts, cursor age, errors."""
    with _cli_errors():
        cfg = _load(config)
        engine = _engine(cfg)
    rows = mailbox_statuses(engine, tenant, include_out_of_scope=all_)
    tenants = tenant_statuses(engine, tenant)
    if as_json:
        out.print_json(
            json.dumps({"tenants": [t.to_json() for t in tenants], "mailboxes": [r.to_json() for r in rows]})
        )
        return
    for t in tenants:
        wb = (
            f"write-back {t.writeback_status} at {t.writeback_at}: {t.rows_written} rows written, "
            f"{t.rows_skipped} unchanged, {t.rows_failed} failed, {t.rows_pending} pending"
            if t.writeback_status
            else "no write-back yet"
        )
        computed = f"KPIs of {t.records} records as of {t.as_of} ({t.accuracy})" if t.computed_at else "no KPIs yet"
        out.print(f"[bold]{t.tenant}[/]: {computed}; {wb}", highlight=False)
        if t.writeback_error:
            out.print(f"  [red]write-back error[/] {t.writeback_error}", highlight=False)
    if not rows:
        out.print("no mailboxes yet: run `relinsights sync --once`")
        return
    table = RichTable(title="mailbox sync status", expand=False)
    for col in (
        "tenant",
        "mailbox",
        "status",
        "messages",
        "events",
        "cursor age",
        "last success",
        "errors",
        "last error",
    ):
        table.add_column(col, overflow="fold")
    width = shutil.get_terminal_size((160, 20)).columns
    for r in rows:
        style = {"ok": "green", "error": "red", "throttled": "yellow", "no_mailbox": "dim"}.get(r.status, "")
        table.add_row(
            r.tenant,
            r.mailbox,
            f"[{style}]{r.status}[/]" if style else r.status,
            str(r.messages),
            str(r.events),
            age_text(r.cursor_age_s),
            r.last_success or "never",
            str(r.error_count),
            (r.last_error or "")[: max(40, width // 3)],
        )
    out.print(table)


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to leave the database and config.")] = Path(
        "relinsights-demo"
    ),
    org: Annotated[str, typer.Option("--org", help="Sandbox organisation size: small or medium.")] = "small",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated organisation.")] = 1,
) -> None:
    """Run the pipeline against a local sandbox tenant: no Microsoft account needed."""
    from relinsights.demo import run_demo

    setup_logging("warning", "console")
    raise typer.Exit(run_demo(directory.resolve(), org, seed, out))


crm_app = typer.Typer(help="The CRM mirror (Dataverse).", no_args_is_help=True)
app.add_typer(crm_app, name="crm")


@crm_app.command("sync")
def crm_sync(
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One round (the daemon runs it every 15 minutes).")] = True,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mirror contacts, accounts, leads, opportunities, users and activities from Dataverse (incremental)."""
    from relinsights.crm.client import DataverseError
    from relinsights.crm.mirror import mirror_tenant

    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    failed = False
    rows: list[dict[str, Any]] = []
    for t in [cfg.tenant(tenant)] if tenant else cfg.tenants:
        try:
            report = asyncio.run(mirror_tenant(engine, t))
            rows.append(
                {
                    "tenant": t.name,
                    "upserted": report.upserted,
                    "deleted": report.deleted,
                    "parties": report.parties,
                    "full_reads": report.full_reads,
                }
            )
        except DataverseError as exc:
            failed = True
            rows.append({"tenant": t.name, "error": f"{exc}; {exc.fix}"})
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        for r in rows:
            if "error" in r:
                out.print(f"[bold]{r['tenant']}[/]: [red]error[/] {r['error']}", highlight=False)
            else:
                ups = sum(r["upserted"].values())
                out.print(
                    f"[bold]{r['tenant']}[/]: {ups} rows upserted, {sum(r['deleted'].values())} deleted, "
                    f"{r['parties']} activity parties; full reads: {', '.join(r['full_reads']) or 'none'}"
                )
    raise typer.Exit(1 if failed else 0)


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r} (for example 2026-03-10T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # a time without offset is UTC


@app.command()
def compute(
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One run (the daemon runs it daily at kpi.compute_at).")] = True,
    tenant: TenantOpt = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Compute as of this ISO 8601 time (default: now; no offset = UTC).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every record (default: only what changed).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compute every CRM record's relationship KPIs and store them as dated snapshots."""
    from relinsights.compute import compute_tenant

    when = _parse_as_of(as_of)
    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    failed = False
    rows: list[dict[str, Any]] = []
    for t in [cfg.tenant(tenant)] if tenant else cfg.tenants:
        try:
            keep = cfg.service.compute_keep_freed_below_mib
            rows.append(compute_tenant(engine, t, as_of=when, full=full, keep_freed_below_mib=keep).to_json())
        except Exception as exc:  # one tenant failing must not hide the others' results
            failed = True
            log.exception("compute.failed", tenant=t.name)
            rows.append({"tenant": t.name, "error": f"{type(exc).__name__}: {exc}"})
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        for r in rows:
            if "error" in r:
                out.print(f"[bold]{r['tenant']}[/]: [red]error[/] {r['error']}", highlight=False)
                continue
            out.print(
                f"[bold]{r['tenant']}[/]: {r['records']} records as of {r['as_of']} "
                f"({r['computed']} computed, {r['reused']} unchanged and reused; {r['mode']}) from "
                f"{r['activities']} activities and {r['links']} links; {r['tier']} tier, accuracy {r['accuracy']}; "
                f"{r['seconds']:.1f} s",
                highlight=False,
            )
            if r["failed_mailboxes"]:
                out.print(f"  partial: mailboxes failing to sync: {', '.join(r['failed_mailboxes'])}")
            for a in r["ambiguous_domains"]:
                out.print(
                    f"  ambiguous domain {a['domain']}: owned by accounts {', '.join(a['account_ids'])} "
                    f"({a['activities']} activities); map it in kpi.account_domains",
                    highlight=False,
                )
    raise typer.Exit(1 if failed else 0)


@app.command()
def writeback(
    config: ConfigOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One run (the daemon runs it after each computation).")] = True,
    tenant: TenantOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact requests, grouped by table; change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the latest KPI snapshots to the Dataverse KPI tables (changed rows only)."""
    from relinsights.crm.client import DataverseError
    from relinsights.crm.writeback import render_requests, requests_json, writeback_tenant

    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    failed = False
    rows: list[dict[str, Any]] = []
    for t in [cfg.tenant(tenant)] if tenant else cfg.tenants:
        listed: list[Any] = []

        def printer(base: str, requests: list[Any], listed: list[Any] = listed) -> None:
            if as_json:
                listed.extend(requests_json(base, requests))
            else:
                typer.echo(render_requests(base, requests))

        try:
            report = asyncio.run(writeback_tenant(engine, t, dry_run=dry_run, printer=printer))
            row = report.to_json() | ({"requests": listed} if dry_run and as_json else {})
            failed = failed or report.status in ("failed", "partial")
        except DataverseError as exc:
            failed, row = True, {"tenant": t.name, "status": "failed", "error": f"{exc}; {exc.fix}"}
        rows.append(row)
    if as_json:
        out.print_json(json.dumps(rows))
        raise typer.Exit(1 if failed else 0)
    for r in rows:
        if r["status"] == "failed" or "rows_written" not in r:
            err.print(f"[bold]{r['tenant']}[/]: [red]failed[/] {r['error']}", highlight=False)
            continue
        if r["status"] == "nothing":
            err.print(f"[bold]{r['tenant']}[/]: nothing to write: {r['error']}", highlight=False)
            continue
        verb = "would send" if dry_run else "wrote"
        count = r["pending"] if dry_run else r["rows_written"]
        err.print(
            f"[bold]{r['tenant']}[/]: {verb} {count} {'requests' if dry_run else 'rows'} for {r['records']} records "
            f"as of {r['as_of']}; {r['skipped']} unchanged rows skipped; {r['parents_linked']} records linked to "
            f"their KPI row; {r['deleted']} rows deleted; {r['throttled']} throttled; {r['seconds']:.1f} s",
            highlight=False,
        )
        for f in r["failed"]:
            err.print(f"  [red]failed[/] {f['table']} {f['row_id']} ({f['record']}): {f['error']}", highlight=False)
    raise typer.Exit(1 if failed else 0)


kpis_app = typer.Typer(help="Relationship KPIs: one record's widgets, or the records needing attention.")
app.add_typer(kpis_app, name="kpis")


def _tenant_rows(cfg: Config, engine: Any, tenant: str | None) -> list[tuple[TenantConfig, int]]:
    from relinsights.db.tenants import ensure_tenant

    rows = []
    for t in [cfg.tenant(tenant)] if tenant else cfg.tenants:
        row = ensure_tenant(engine, t)
        assert row.id is not None
        rows.append((t, row.id))
    return rows


@kpis_app.command("show")
def kpis_show(
    record: Annotated[str, typer.Argument(help="A contact or lead address, an account domain, or a record id.")],
    config: ConfigOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One record's latest KPIs: counts, time, responses, ratios, interactions, top contacts, health, 60 days."""
    from relinsights.compute.views import find_records, show_view
    from relinsights.compute.widgets import render_show

    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    found = [(t, pk, hit) for t, pk in _tenant_rows(cfg, engine, tenant) for hit in find_records(engine, t, pk, record)]
    if not found:
        err.print(f"no contact, lead, account or opportunity matches {record!r}")
        raise typer.Exit(1)
    if len(found) > 1:
        err.print(f"{record!r} matches {len(found)} records; name one by its id:")
        for t, _pk, hit in found:
            err.print(f"  {hit.entity}:{hit.record_id}  {hit.name or ''}  (tenant {t.name}, by {hit.why})")
        raise typer.Exit(1)
    t, pk, hit = found[0]
    view = show_view(engine, t, pk, hit)
    if view is None:
        err.print(f"no KPIs computed yet for tenant {t.name}: run `relinsights compute --once`")
        raise typer.Exit(1)
    if as_json:
        out.print_json(json.dumps(view))
    else:
        render_show(out, view)


@kpis_app.command("list")
def kpis_list(
    config: ConfigOpt = None,
    tenant: TenantOpt = None,
    state: Annotated[str | None, typer.Option("--state", help="good, fair, poor or not-enough-info.")] = None,
    trend: Annotated[
        str | None, typer.Option("--trend", help="improving, steady, declining or not-enough-info.")
    ] = None,
    entity: Annotated[str | None, typer.Option("--entity", help="contact, lead, account or opportunity.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (0: all).", min=0)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Records ranked by relationship health, the ones needing attention first."""
    from relinsights.compute.views import ENTITY_SETS, STATES, TRENDS, list_view
    from relinsights.compute.widgets import render_list

    for value, allowed, name in (
        (state, STATES, "--state"),
        (trend, TRENDS, "--trend"),
        (entity, ENTITY_SETS, "--entity"),
    ):
        if value is not None and value.lower() not in allowed:
            raise typer.BadParameter(f"use one of {', '.join(allowed)}", param_hint=name)
    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    rows = [
        r
        for t, pk in _tenant_rows(cfg, engine, tenant)
        for r in list_view(
            engine,
            t,
            pk,
            state=state.lower() if state else None,
            trend=trend.lower() if trend else None,
            entity=entity.lower() if entity else None,
            limit=limit or None,
        )
    ]
    if as_json:
        out.print_json(json.dumps(rows))
    elif not rows:
        out.print("no records with a health score: run `relinsights compute --once` first, or widen the filters")
    else:
        render_list(out, rows)


@app.command()
def report(
    config: ConfigOpt = None,
    tenant: TenantOpt = None,
    record: Annotated[
        list[str] | None,
        typer.Option("--record", help="Only this record's page (address, domain or id; repeatable)."),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the report into.")] = Path(
        "relinsights-report"
    ),
    jobs: Annotated[int, typer.Option("--jobs", help="Processes rendering pages (default: one per core).", min=0)] = 0,
) -> None:
    """Write the static HTML relationship report: an overview per tenant and a page of widgets per record."""
    from relinsights.report import ReportError, write_report

    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = _engine(cfg)
    try:
        result = write_report(engine, _tenant_rows(cfg, engine, tenant), out_dir, record or (), jobs or None)
    except ReportError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    for t in result.tenants:
        when = f"KPIs as of {t.as_of:%Y-%m-%d %H:%M}" if t.as_of else "no KPIs yet: run `relinsights compute --once`"
        out.print(
            f"[bold]{t.tenant}[/]: {t.pages} record pages, {t.ranked} relationships ranked; {when}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"report: {result.index.resolve()} ({result.seconds:.1f} s)", highlight=False, soft_wrap=True)


tenants_app = typer.Typer(help="Per-tenant enhanced insights: list, enable, disable.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")


@tenants_app.command("list")
def tenants_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Tenants with enhanced insights on or off, sync status, mailboxes and messages."""
    from relinsights.admin import list_tenants

    with _cli_errors():
        cfg = _load(config)
        engine = _engine(cfg)
    rows = list_tenants(engine, cfg)
    if as_json:
        out.print_json(json.dumps([r.to_json() for r in rows]))
        return
    table = RichTable(title="tenants")
    for col in ("tenant", "enhanced insights", "status", "mailboxes", "messages", "last success", "last error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        how = "on" if r.enabled else "off"
        if r.override is not None and r.override != r.enabled_in_config:
            how += " (set by admin)"
        table.add_row(
            r.name,
            how,
            r.status,
            str(r.mailboxes),
            str(r.messages),
            r.last_success or "never",
            (r.last_error or "")[:80],
        )
    out.print(table)


def _toggle(config: Path | None, name: str, enabled: bool, purge: bool) -> None:
    from relinsights.admin import set_tenant_enabled

    with _cli_errors():
        cfg = _load(config)
        engine = _engine(cfg)
        report = set_tenant_enabled(engine, cfg, name, enabled, purge)
    state = "enabled: the next tick starts its sync" if enabled else "disabled: sync stops at the next tick"
    out.print(f"tenant {name} {state}")
    if report:
        out.print(f"purged {report.mailboxes} mailboxes, {report.messages} messages, {report.events} events")


@tenants_app.command("enable")
def tenants_enable(name: Annotated[str, typer.Argument(help="Tenant name.")], config: ConfigOpt = None) -> None:
    """Turn enhanced insights (Exchange sync) on for a tenant."""
    _toggle(config, name, True, False)


@tenants_app.command("disable")
def tenants_disable(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    config: ConfigOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the tenant's synced data.")] = False,
) -> None:
    """Turn enhanced insights off for a tenant (and with --purge remove its synced data)."""
    _toggle(config, name, False, purge)


@app.command()
def purge(
    config: ConfigOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Delete everything stored about this address.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Delete everything stored for this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete the data of one person (privacy request, opt-out) or of one tenant, and report it."""
    from relinsights.admin import purge_tenant, purge_user

    with _cli_errors():
        if bool(user) == bool(tenant):
            raise ConfigError("purge", ["give exactly one of --user ADDRESS or --tenant NAME"])
        cfg = _load(config)
        engine = _engine(cfg)
        report = purge_user(engine, user) if user else purge_tenant(engine, cfg, tenant or "")
    if as_json:
        out.print_json(json.dumps(report.to_json()))
        return
    out.print(
        f"purged {report.scope}: {report.mailboxes} mailboxes, {report.messages} messages, {report.events} events"
    )
    for note in report.notes:
        out.print(f"  next: {note}")


@app.command()
def doctor(
    config: ConfigOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check config, database, credentials, tokens, Graph and Dataverse permissions, scoping, clock."""
    from relinsights.doctor import run_doctor

    with _cli_errors():
        cfg = _load_for(config, tenant)
        engine = make_engine(cfg.database_url, cfg.database.pool_size)
        checks = run_doctor(cfg, engine, tenant)
    if as_json:
        out.print_json(json.dumps([c.__dict__ for c in checks]))
    else:
        for c in checks:
            color = {"ok": "green", "warn": "yellow", "fail": "red"}[c.level]
            out.print(f"[{color}]{c.line()}[/]", highlight=False)
    raise typer.Exit(1 if any(c.level == "fail" for c in checks) else 0)


@app.command()
def run(config: ConfigOpt = None) -> None:
    """The daemon: scheduled sync for every enabled tenant until SIGTERM (systemd Type=notify)."""
    from relinsights.daemon import DaemonError, run_daemon

    with _cli_errors():
        _load_for(config, None)
    try:
        code = run_daemon(config)
    except DaemonError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    from relinsights.sandbox.cli import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox", help="The local Microsoft 365 + Dataverse emulator.")
    app()


if __name__ == "__main__":
    main()
