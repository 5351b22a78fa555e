"""`relinsights sandbox ...`: run the sandbox tenant in the foreground."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="The local Microsoft 365 (+ Dataverse, later) emulator.")


@app.callback()
def _group() -> None:
    """Keeps `serve` a subcommand (Typer collapses a one-command app into that command)."""


@app.command()
def serve(
    org: Annotated[str, typer.Option("--org", help="Organisation size: small, medium or large.")] = "small",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated organisation and of the faults.")] = 1,
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

    if org not in SIZES:
        raise typer.BadParameter(f"use one of {', '.join(SIZES)}", param_hint="--org")
    if credential not in ("certificate", "secret"):
        raise typer.BadParameter("use certificate or secret", param_hint="--credential")
    try:
        spec = FaultSpec.parse(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    typer.echo(f"generating the {org} organisation (seed {seed})...", err=True)
    tenant = generate_org(org, seed=seed)
    state = state_dir.resolve()
    server = SandboxServer(tenant, seed=seed, faults=spec, port=port, state_dir=state)
    server.start()
    config = server.write_daemon_config(state, credential="secret" if credential == "secret" else "certificate")
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
