"""`relinsights sandbox ...`: run the sandbox tenant in the foreground."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, help="The local Microsoft 365 (+ Dataverse, later) emulator.")


@app.callback()
def _group() -> None:
    """Keeps `serve` a subcommand (Typer collapses a one-command app into that command)."""


def _split(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists: -u a,b -u c."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


InternalDomains = Annotated[
    list[str] | None,
    typer.Option(
        "--internal-domain",
        metavar="DOMAIN",
        help="The archive's own domain (repeatable); its subdomains count too (enron.com covers ect.enron.com).",
    ),
]
Users = Annotated[
    list[str] | None,
    typer.Option(
        "--users",
        metavar="MAILBOX",
        help="Import only these mailboxes of the archive (directory names, comma-separated).",
    ),
]


Rebase = Annotated[
    bool,
    typer.Option(
        "--rebase",
        help="Move every date of the archive by one offset so that its newest mail is from now "
        "(a daemon syncs by its own clock and looks back at most five years).",
    ),
]


def _import(path: Path, domains: list[str] | None, users: list[str] | None, seed: int, rebase: bool) -> Any:
    from .importer import import_archive

    if not _split(domains):
        raise typer.BadParameter("an import needs the archive's own domain", param_hint="--internal-domain")
    typer.echo(f"importing {path}...", err=True)
    try:
        return import_archive(
            path,
            _split(domains),
            users=_split(users) or None,
            seed=seed,
            rebase_to=datetime.now(UTC) if rebase else None,
        )
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from None


def _scenario(path: Path) -> Any:
    from .scenario import ScenarioError, load_scenario

    try:
        return load_scenario(path)
    except ScenarioError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(2) from None


def _cover_archive(config: Path, oldest: datetime) -> None:
    """Widen the written config's lookback to the archive's oldest mail: the daemon counts it back from
    its own (real) clock, at most 1,825 days minus the calendar's 90 days ahead."""
    from relinsights.config import load_config

    limit = 1825 - 90
    days = (datetime.now(UTC) - oldest).days + 2
    if days > 365:
        with open(config, "a", encoding="utf-8") as fh:
            fh.write(
                f"\n[tenant.sync]\n# reaches back to the imported archive's oldest mail\nlookback_days = {min(days, limit)}\n"
            )
        load_config(config)
    if days > limit:
        typer.echo(
            f"note: a daemon syncs mail of the last {limit} days by its own clock, and this archive's is older: "
            "sync with the sandbox clock (as the tests do) or import with --rebase",
            err=True,
        )


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A maildir folder, a .tar.gz of one, an mbox file or .eml files.")],
    internal_domain: InternalDomains = None,
    users: Users = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated ids.")] = 1,
    rebase: Rebase = False,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Also write the full report there as import-report.json.")
    ] = None,
) -> None:
    """Load a real mail archive as the sandbox's mailboxes and CRM, and report what it became.

    Serve the result with `relinsights sandbox serve --import PATH --internal-domain D`.
    """
    result = _import(path, internal_domain, users, seed, rebase)
    typer.echo(result.report.summary())
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        out = state_dir / "import-report.json"
        out.write_text(result.report.to_json(), encoding="utf-8")
        typer.echo(f"  report     {out}")


@app.command()
def serve(
    org: Annotated[
        str | None, typer.Option("--org", help="Organisation size: small (default), medium or large.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated organisation and of the faults.")] = 1,
    import_path: Annotated[
        Path | None, typer.Option("--import", help="Serve a real mail archive instead (needs --internal-domain).")
    ] = None,
    internal_domain: InternalDomains = None,
    users: Users = None,
    rebase: Rebase = False,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="Serve a hand-written scenario (TOML) instead.")
    ] = None,
    faults: Annotated[
        str, typer.Option("--faults", help='Fault spec, e.g. "429=0.05,503=0.02,slow=0.05:2.0,drop=0.01,410=0.02".')
    ] = "",
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the CA, credentials and relinsights.toml are written.")
    ] = Path("./sandbox-state"),
    credential: Annotated[
        str, typer.Option("--credential", help="How the written config authenticates: certificate or secret.")
    ] = "certificate",
) -> None:
    """Serve the token endpoint and Graph over HTTPS on loopback and write a daemon config for it."""
    from .faults import FaultSpec, FaultSpecError
    from .generator import SIZES, generate_org
    from .server import SandboxServer

    if sum(x is not None for x in (org, import_path, scenario)) > 1:
        raise typer.BadParameter("give one of --org, --import and --scenario", param_hint="--org")
    if org is not None and org not in SIZES:
        raise typer.BadParameter(f"use one of {', '.join(SIZES)}", param_hint="--org")
    if credential not in ("certificate", "secret"):
        raise typer.BadParameter("use certificate or secret", param_hint="--credential")
    try:
        spec = FaultSpec.parse(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    imported = None
    if import_path is not None:
        imported = _import(import_path, internal_domain, users, seed, rebase)
        typer.echo(imported.report.summary(), err=True)
        tenant = imported.org
    elif scenario is not None:
        tenant = _scenario(scenario).org
    else:
        typer.echo(f"generating the {org or 'small'} organisation (seed {seed})...", err=True)
        # Served to a daemon that runs on the wall clock: the organisation's "now" is the real now.
        tenant = generate_org(
            org or "small", seed=seed, now=datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        )
    state = state_dir.resolve()
    server = SandboxServer(tenant, seed=seed, faults=spec, port=port, state_dir=state)
    server.start()
    config = server.write_daemon_config(state, credential="secret" if credential == "secret" else "certificate")
    if imported is not None:
        _cover_archive(config, datetime.fromisoformat(imported.report.oldest))
        (state / "import-report.json").write_text(imported.report.to_json(), encoding="utf-8")
    elif scenario is not None:
        _cover_archive(config, tenant.now() - timedelta(days=365))
    stats = tenant.stats()
    typer.echo(f"sandbox listening on {server.base_url}")
    typer.echo(f"  tenant     {server.tenant_id}")
    typer.echo(f"  client     {server.client_id}")
    typer.echo(f"  graph      {server.graph_url}")
    typer.echo(f"  authority  {server.authority}")
    typer.echo(f"  CA bundle  {server.ca_path}")
    typer.echo(f"  config     {config}")
    typer.echo(f"  org        {stats['mailboxes']} mailboxes, {stats['messages']} messages, {stats['events']} events")
    typer.echo(
        f'  admin      POST {server.base_url}/_sandbox/advance {{"hours": 24}}, '
        f"GET {server.base_url}/_sandbox/truth, POST {server.base_url}/_sandbox/faults"
    )
    if spec.to_spec():
        typer.echo(f"  faults     {spec.to_spec()}")
    typer.echo("press Ctrl-C to stop")
    sys.stdout.flush()

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    server.serve_forever()
