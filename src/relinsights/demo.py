"""`relinsights demo`: a sandbox tenant in-process, a real sync against it, and a readable summary.

It leaves the database and the config in one directory so the user can go on with `relinsights status`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, literal, or_, select, union_all

from relinsights.compute.job import compute_tenant
from relinsights.compute.views import STATES, list_view
from relinsights.config import TenantConfig, load_config
from relinsights.crm.mirror import mirror_tenant
from relinsights.crm.writeback import writeback_tenant
from relinsights.db import make_engine, migrate
from relinsights.db.models import Event, Mailbox, Message, MessageParticipant, table_of
from relinsights.db.tenants import ensure_tenant
from relinsights.graph.sync import sync_tenant
from relinsights.report import write_report
from relinsights.status import mailbox_statuses


def run_demo(directory: Path, size: str, seed: int, out: Console) -> int:
    from relinsights.sandbox.server import SandboxServer

    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    out.print(f"[bold]relinsights demo[/]: generating a {size} sandbox organisation (seed {seed})...")
    with SandboxServer(size=size, seed=seed, state_dir=directory / "sandbox") as server:
        config_path = server.write_daemon_config(directory)
        cfg = load_config(config_path)
        engine = make_engine(cfg.database_url)
        migrate(engine)
        tenant = cfg.tenants[0]
        out.print(f"sandbox tenant at {server.base_url} (token endpoint, Graph, Dataverse); syncing over TLS...")
        report = asyncio.run(sync_tenant(engine, tenant, now=server.org.now))
        out.print("mirroring the CRM from Dataverse...")
        mirror = asyncio.run(mirror_tenant(engine, tenant))
        out.print("computing the relationship KPIs...")
        computed = compute_tenant(engine, tenant, as_of=server.org.now(), full=True)
        out.print("writing the KPIs back to the sandbox's Dataverse KPI tables...")
        written = asyncio.run(writeback_tenant(engine, tenant))
    _summary(engine, out, internal=set(tenant.internal_domains))
    _relationships(engine, tenant, out)
    out.print(
        f"\nsynced {report.messages_added} messages and {report.events_added} events from "
        f"{sum(1 for s in report.mailboxes.values() if s == 'ok')} mailboxes in {time.monotonic() - started:.1f} s "
        f"({report.requests} Graph requests); mirrored {sum(mirror.upserted.values())} CRM rows; computed the KPIs "
        f"of {computed.computed} records from {computed.activities} activities as of {computed.as_of:%Y-%m-%d %H:%M}; "
        f"wrote {sum(written.written.values())} rows to {len(written.written)} Dataverse KPI tables "
        f"({len(written.failures)} failed)."
    )
    out.print("writing the HTML report...")
    result = write_report(engine, [(tenant, ensure_tenant(engine, tenant).id or 0)], directory / "report")
    out.print(f"\ndatabase and config: {directory}\nnext: relinsights status --config {config_path}")
    out.print(f"      relinsights kpis list --config {config_path}")
    out.print(
        f"\nreport ({result.pages} record pages, {result.seconds:.1f} s): open {result.index}",
        highlight=False,
        soft_wrap=True,
    )
    return 0 if report.status == "ok" and written.status == "ok" else 1


def _summary(engine: Engine, out: Console, internal: set[str]) -> None:
    m, mp, mb = table_of(Message), table_of(MessageParticipant), table_of(Mailbox)
    # Every party of every message copy: its recipients' rows, its from and sender columns.
    parties = union_all(
        select(m.c.mailbox_pk, mp.c.address, mp.c.role).join(mp, mp.c.message_id == m.c.id),
        *(
            select(m.c.mailbox_pk, column.label("address"), literal(role).label("role")).where(column.is_not(None))
            for column, role in ((m.c.from_address, "from"), (m.c.sender_address, "sender"))
        ),
    ).subquery()
    external = ~or_(*(parties.c.address.like(f"%@{d}") for d in sorted(internal)))
    with engine.connect() as conn:
        externals: dict[int, int] = {
            pk: n
            for pk, n in conn.execute(
                select(parties.c.mailbox_pk, func.count(func.distinct(parties.c.address)))
                .where(external)
                .group_by(parties.c.mailbox_pk)
            ).all()
        }
        pks: dict[str, int] = {a: pk for a, pk in conn.execute(select(mb.c.address, mb.c.id)).all()}
        by_domain: Counter[str] = Counter()
        for address, n in conn.execute(
            select(parties.c.address, func.count())
            .where(parties.c.role.in_(["from", "to", "cc"]), external)
            .group_by(parties.c.address)
        ).all():
            by_domain[address.rsplit("@", 1)[-1]] += n
        events = conn.execute(select(func.count()).select_from(table_of(Event))).scalar_one()
    table = Table(title="mailboxes")
    for heading in ("mailbox", "status", "messages", "events", "external contacts", "detail"):
        table.add_column(heading)
    for st in mailbox_statuses(engine):
        table.add_row(
            st.mailbox,
            st.status,
            str(st.messages),
            str(st.events),
            str(externals.get(pks.get(st.mailbox, -1), 0)),
            (st.detail or "")[:50],
        )
    out.print(table)
    top = Table(title="most active customer domains (message copies, all mailboxes)")
    top.add_column("domain")
    top.add_column("messages", justify="right")
    for domain, n in by_domain.most_common(8):
        top.add_row(domain, str(n))
    out.print(top)
    out.print(f"{events} calendar event copies in the window.")


def _relationships(engine: Engine, tenant: TenantConfig, out: Console) -> None:
    """The healthiest and the coldest relationships, as a manager would want to see them first."""
    row = ensure_tenant(engine, tenant)
    scored = [r for r in list_view(engine, tenant, row.id or 0) if r["health_state"] != STATES["not-enough-info"]]
    healthiest = sorted(scored, key=lambda r: (-r["health_score"], -r["activities"]))
    for title, rows in (("coldest relationships", scored[:5]), ("healthiest relationships", healthiest[:5])):
        table = Table(title=title)
        for heading in ("record", "score", "state", "trend", "why"):
            table.add_column(heading)
        for r in rows:
            table.add_row(
                f"{r['entity']} {r['name'] or r['id'][:8]}",
                str(r["health_score"]),
                r["health_state"],
                r["health_trend"],
                r["reason"] or "",
            )
        out.print(table)
