"""Write the latest KPI snapshots back to the Dataverse KPI tables that Dynamics 365 forms read.

A run, per tenant (docs: dataverse.md, "Write-back design we want"):

1. reads the latest snapshots and the ledger of rows written before (`writeback_row`, with value hashes);
2. reads, per kind of record, which KPI row each parent already points at (one paged `$select` read), so a
   row Microsoft's own feature wrote is updated in place; otherwise the row id is deterministic (uuid5);
3. plans the rows (`writeback_rows.py`) and drops those whose hash matches the ledger;
4. sends them with `UpsertMultiple`, `batch_size` rows a call, up to `max_parallel` calls at a time (the
   client follows `x-ms-dop-hint` and pauses the whole tenant on 429); a call that fails for its data is
   split in halves until the bad row is alone, and that row is reported while every other one lands;
5. points each record at its KPI row (`UpdateMultiple`, which never creates a record, only where the
   lookup differs), and deletes rows it owns that should no longer exist (top contacts that dropped out).

Each successful call updates the ledger at once, so an interrupted run resumes where it stopped.
A dry run reads (pointers, ledger) but writes nothing, and prints the exact requests it would send.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import Engine, delete, insert, select

from relinsights.compute.payload import series_days
from relinsights.compute.store import latest_as_of
from relinsights.config import PARENT_SETS, PARENTS, TableRef, TenantConfig
from relinsights.crm.client import (
    DataverseClient,
    DataverseError,
    DataverseNotFound,
    multiple_body,
)
from relinsights.crm.mirror import mirrored_rows
from relinsights.crm.writeback_rows import (
    DAILY,
    KPI,
    LINK,
    TOP,
    Person,
    Row,
    Snapshot,
    daily_rows,
    kpi_row,
    kpi_row_id,
    link_row,
)
from relinsights.crm.writeback_rows import top_rows as build_top_rows
from relinsights.db.models import KpiSnapshot, WritebackRow, WritebackRun, table_of

log = structlog.get_logger(__name__)
snapshot_t, ledger_t, run_t = table_of(KpiSnapshot), table_of(WritebackRow), table_of(WritebackRun)
LEDGER_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Failure:
    entity_set: str
    row_id: str
    record: str  # "<entity> <id>"
    error: str

    def to_json(self) -> dict[str, str]:
        return {"table": self.entity_set, "row_id": self.row_id, "record": self.record, "error": self.error}


@dataclass
class WritebackReport:
    tenant: str
    as_of: datetime | None = None
    dry_run: bool = False
    status: str = "ok"  # ok | partial (some rows failed) | failed (stopped) | nothing (no snapshots)
    records: int = 0
    written: dict[str, int] = field(default_factory=dict)  # entity set -> rows upserted
    skipped: int = 0  # unchanged since the last successful write
    parents_linked: int = 0
    deleted: int = 0
    failures: list[Failure] = field(default_factory=list)
    pending: int = 0  # planned but not sent (dry run, or the run stopped)
    requests: int = 0
    throttled: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "dry_run": self.dry_run,
            "status": self.status,
            "records": self.records,
            "written": dict(self.written),
            "rows_written": sum(self.written.values()),
            "skipped": self.skipped,
            "parents_linked": self.parents_linked,
            "deleted": self.deleted,
            "failed": [f.to_json() for f in self.failures],
            "pending": self.pending,
            "requests": self.requests,
            "throttled": self.throttled,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the dry run prints it: the same action and body the writer's calls send."""

    method: str
    path: str  # relative to the Web API base
    body: Any = None


@dataclass
class Plan:
    rows: list[Row] = field(default_factory=list)  # to upsert, KPI rows first
    links: list[Row] = field(default_factory=list)  # records to point at their KPI row
    deletes: list[tuple[str, str]] = field(default_factory=list)  # entity set, row id
    skipped: int = 0

    def requests(self, tenant: TenantConfig) -> list[tuple[str, Request]]:
        """(table, request) for everything the plan would send, in sending order."""
        size = tenant.writeback.batch_size
        out: list[tuple[str, Request]] = []
        for rows in ([r for r in self.rows if r.kind == KPI], self.links, [r for r in self.rows if r.kind != KPI]):
            for table, trows in _by_table(rows).items():
                out += [(table.entity_set, _bulk_request(table, chunk)) for chunk in _chunks(trows, size)]
        out += [(entity_set, Request("DELETE", f"{entity_set}({row_id})")) for entity_set, row_id in self.deletes]
        return out


def _by_table(rows: Iterable[Row]) -> dict[TableRef, list[Row]]:
    out: dict[TableRef, list[Row]] = defaultdict(list)
    for r in rows:
        out[r.table].append(r)
    return out


def _chunks(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _action(rows: Sequence[Row]) -> str:
    # Links only update records that exist (UpdateMultiple never creates a contact); our rows are upserts.
    return "UpdateMultiple" if rows[0].kind == LINK else "UpsertMultiple"


def _bulk_request(table: TableRef, rows: Sequence[Row]) -> Request:
    return Request(
        "POST",
        f"{table.entity_set}/Microsoft.Dynamics.CRM.{_action(rows)}",
        multiple_body(table.table, [r.target() for r in rows]),
    )


# ---------------------------------------------------------------- reading what is there


def latest_snapshots(engine: Engine, tenant_pk: int) -> list[Snapshot]:
    as_of = latest_as_of(engine, tenant_pk)
    if as_of is None:
        return []
    c = snapshot_t.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.entity, c.record_id, c.as_of, c.computed_at, c.accuracy, c.payload)
            .where(c.tenant_pk == tenant_pk, c.as_of == as_of)
            .order_by(c.entity, c.record_id)
        ).all()
    return [Snapshot(e, r, a, comp, acc, orjson.loads(p)) for e, r, a, comp, acc, p in rows]


@dataclass(frozen=True, slots=True)
class Ledgered:
    kind: str
    parent_id: str
    day: str | None
    hash: str


def read_ledger(engine: Engine, tenant_pk: int) -> dict[tuple[str, str], Ledgered]:
    c = ledger_t.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.entity_set, c.row_id, c.kind, c.parent_id, c.day, c.hash).where(c.tenant_pk == tenant_pk)
        ).all()
    return {(s, r): Ledgered(k, p, d, h) for s, r, k, p, d, h in rows}


@dataclass
class CrmContext:
    """What the mirror knows that the rows need: record names, people's names, opportunities per contact."""

    names: dict[str, str] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    opportunities: dict[str, int] = field(default_factory=dict)


def crm_context(engine: Engine, tenant_pk: int) -> CrmContext:
    from relinsights.compute.dataverse_rows import crm_ids, opportunity_links
    from relinsights.compute.views import record_name

    sets = (*PARENT_SETS.values(), "systemusers", "connections", "connectionroles")
    rows = {s: mirrored_rows(engine, tenant_pk, s) for s in sets}  # each table read once
    ctx = CrmContext()
    for entity, entity_set in PARENT_SETS.items():
        for row in rows[entity_set]:
            rid = str(row.get(f"{entity}id") or "").lower()
            label = record_name(entity, row) or str(row.get("emailaddress1") or rid)
            ctx.names[rid] = label
            if entity == "contact":
                ctx.people[f"contact:{rid}"] = (label, "contact", rid)
    for row in rows["systemusers"]:
        if address := str(row.get("internalemailaddress") or "").lower():
            uid = str(row.get("systemuserid") or "").lower()
            ctx.people[address] = (str(row.get("fullname") or address), "systemuser", uid)
    stakeholders = opportunity_links(rows, crm_ids(rows)).stakeholders
    for row in rows["opportunities"]:
        oid = str(row.get("opportunityid") or "").lower()
        contacts = set(stakeholders.get(oid, ()))
        if parent := row.get("_parentcontactid_value"):
            contacts.add(str(parent).lower())
        for contact in contacts:
            ctx.opportunities[contact] = ctx.opportunities.get(contact, 0) + 1
    return ctx


async def parent_pointers(client: DataverseClient, tenant: TenantConfig, entities: Iterable[str]) -> dict[str, str]:
    """Parent id -> the KPI row it points at, for every kind of record whose mapping has a parent lookup."""
    out: dict[str, str] = {}
    for entity in entities:
        column = tenant.writeback.parent(entity).parent_kpi
        if not column:
            continue
        value = f"_{column}_value"
        async for page in client.pages(PARENT_SETS[entity], [f"{entity}id", value]):
            for row in page.rows:
                if row.get(value):
                    out[str(row[f"{entity}id"]).lower()] = str(row[value]).lower()
    return out


# ---------------------------------------------------------------- planning


def plan(
    tenant: TenantConfig,
    snapshots: Sequence[Snapshot],
    ledger: dict[tuple[str, str], Ledgered],
    pointers: dict[str, str],
    ctx: CrmContext,
) -> Plan:
    cfg = tenant.writeback
    out = Plan()
    starts: dict[datetime, str] = {}  # every snapshot of a run shares its as-of: the window is made once

    def window_start(as_of: datetime) -> str:
        if as_of not in starts:
            starts[as_of] = series_days(as_of, tenant.zone)[0].isoformat()
        return starts[as_of]

    wanted: list[Row] = []
    parents = {s.record_id for s in snapshots}
    by_parent: dict[str, list[tuple[str, str, Ledgered]]] = defaultdict(list)
    for (entity_set, row_id), entry in ledger.items():
        by_parent[entry.parent_id].append((entity_set, row_id, entry))
    for s in snapshots:
        mapping = cfg.parent(s.entity)
        name = ctx.names.get(s.record_id, f"{s.entity} {s.record_id}")
        pointer = pointers.get(s.record_id)
        row_id = pointer or kpi_row_id(mapping.kpi.table, s.record_id)
        wanted.append(kpi_row(s, cfg, row_id=row_id, name=name, opportunities=ctx.opportunities.get(s.record_id, 0)))
        if mapping.parent_kpi and pointer != row_id:
            out.links.append(link_row(s.entity, s.record_id, mapping.parent_kpi, mapping.kpi, row_id))
        if mapping.daily is not None and cfg.daily_series:
            first = window_start(s.as_of)
            days = set((s.payload.get("relationship_activities") or {}).keys())
            days |= {
                e.day
                for es, _rid, e in by_parent.get(s.record_id, ())
                if e.kind == DAILY and es == mapping.daily.entity_set and e.day and e.day >= first
            }
            wanted += daily_rows(s, cfg, name, days)
        tops = build_top_rows(s, cfg, ctx.people)
        wanted += tops
        keep = {(r.table.entity_set, r.row_id) for r in tops}
        out.deletes += [
            (es, rid) for es, rid, e in by_parent.get(s.record_id, ()) if e.kind == TOP and (es, rid) not in keep
        ]
    # Records that have no snapshot any more (unlinked, purged): their top-contact rows name people.
    out.deletes += [(es, rid) for (es, rid), e in ledger.items() if e.kind == TOP and e.parent_id not in parents]
    for r in wanted:
        prev = ledger.get((r.table.entity_set, r.row_id))
        if prev is not None and prev.hash == r.hash:
            out.skipped += 1
        else:
            out.rows.append(r)
    out.rows.sort(key=lambda r: r.kind != KPI)  # KPI rows before the parents point at them
    return out


# ---------------------------------------------------------------- writing


def _record_ledger(engine: Engine, tenant_pk: int, rows: Sequence[Row]) -> None:
    now = datetime.now(UTC)
    c = ledger_t.c
    with engine.begin() as conn:
        for part in _chunks(rows, LEDGER_CHUNK):
            for entity_set in {r.table.entity_set for r in part}:
                ids = [r.row_id for r in part if r.table.entity_set == entity_set]
                conn.execute(
                    delete(ledger_t).where(c.tenant_pk == tenant_pk, c.entity_set == entity_set, c.row_id.in_(ids))
                )
        conn.execute(
            insert(ledger_t),
            [
                {
                    "tenant_pk": tenant_pk,
                    "entity_set": r.table.entity_set,
                    "row_id": r.row_id,
                    "kind": r.kind,
                    "parent_id": r.parent_id,
                    "day": r.day,
                    "hash": r.hash,
                    "written_at": now,
                }
                for r in rows
            ],
        )


def _forget(engine: Engine, tenant_pk: int, entity_set: str, row_id: str) -> None:
    c = ledger_t.c
    with engine.begin() as conn:
        conn.execute(delete(ledger_t).where(c.tenant_pk == tenant_pk, c.entity_set == entity_set, c.row_id == row_id))


def _is_row_error(exc: DataverseError) -> bool:
    """A failure caused by the data sent (worth splitting the call to find the row), not by the service."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429)


class Writer:
    def __init__(
        self, engine: Engine, tenant: TenantConfig, tenant_pk: int, client: DataverseClient, report: WritebackReport
    ):
        self.engine, self.tenant, self.tenant_pk, self.client, self.report = engine, tenant, tenant_pk, client, report
        self._gate = asyncio.Semaphore(tenant.writeback.max_parallel)
        self.written_ids: set[tuple[str, str]] = set()

    async def send(self, table: TableRef, rows: Sequence[Row]) -> None:
        """Send `rows` in one call; on a data error split it until the bad row is alone and report that row."""
        try:
            async with self._gate:
                await self.client.bulk(_action(rows), table.entity_set, table.table, [r.target() for r in rows])
        except DataverseError as exc:
            if not _is_row_error(exc):
                raise
            if len(rows) == 1:
                r = rows[0]
                self.report.failures.append(
                    Failure(table.entity_set, r.row_id, f"{r.parent_entity} {r.parent_id}", str(exc))
                )
                log.warning(
                    "writeback.row_failed",
                    tenant=self.tenant.name,
                    table=table.entity_set,
                    row=r.row_id,
                    record=r.parent_id,
                    error=str(exc),
                )
                return
            half = len(rows) // 2
            await asyncio.gather(self.send(table, rows[:half]), self.send(table, rows[half:]))
            return
        if rows[0].kind == LINK:
            self.report.parents_linked += len(rows)
            return
        await asyncio.to_thread(_record_ledger, self.engine, self.tenant_pk, rows)
        self.report.written[table.entity_set] = self.report.written.get(table.entity_set, 0) + len(rows)
        self.written_ids.update((table.entity_set, r.row_id) for r in rows)

    async def send_all(self, rows: Sequence[Row]) -> None:
        # A link whose KPI row failed is left out: pointing the record at it would fail too.
        rows = [r for r in rows if r.after is None or r.after in self.written_ids]
        size = self.tenant.writeback.batch_size
        await asyncio.gather(
            *(self.send(table, chunk) for table, trows in _by_table(rows).items() for chunk in _chunks(trows, size))
        )

    async def remove(self, entity_set: str, row_id: str) -> None:
        try:
            async with self._gate:
                await self.client.request("DELETE", f"{entity_set}({row_id})")
        except DataverseNotFound:
            pass  # already gone: what we wanted
        await asyncio.to_thread(_forget, self.engine, self.tenant_pk, entity_set, row_id)
        self.report.deleted += 1


# ---------------------------------------------------------------- one tenant


def _save_run(engine: Engine, tenant_pk: int, report: WritebackReport, started: datetime) -> None:
    details = {"written": report.written, "failed": [f.to_json() for f in report.failures[:200]]}
    with engine.begin() as conn:
        conn.execute(
            insert(run_t).values(
                tenant_pk=tenant_pk,
                as_of=report.as_of,
                started_at=started,
                finished_at=datetime.now(UTC),
                status=report.status,
                written=sum(report.written.values()),
                skipped=report.skipped,
                deleted=report.deleted,
                failed=len(report.failures),
                pending=report.pending,
                details=orjson.dumps(details).decode(),
                error=report.error,
            )
        )


def requests_json(base: str, requests: Sequence[tuple[str, Request]]) -> list[dict[str, Any]]:
    return [{"table": t, "method": r.method, "url": base + r.path, "body": r.body} for t, r in requests]


def render_requests(client_base: str, requests: Sequence[tuple[str, Request]]) -> str:
    """The dry run's listing: every request, grouped by table, with its exact body."""
    lines: list[str] = []
    current = None
    for table, req in requests:
        if table != current:
            count = sum(1 for t, _ in requests if t == table)
            lines += ["", f"# {table}: {count} request{'s' if count != 1 else ''}"]
            current = table
        lines.append(f"{req.method} {client_base}{req.path}")
        if req.body is not None:
            lines.append(orjson.dumps(req.body, option=orjson.OPT_INDENT_2).decode())
    return "\n".join(lines).lstrip("\n")


async def writeback_tenant(
    engine: Engine,
    tenant: TenantConfig,
    *,
    dry_run: bool = False,
    tokens: Any = None,
    printer: Callable[[str, list[tuple[str, Request]]], None] | None = None,
    client_options: dict[str, Any] | None = None,
) -> WritebackReport:
    """Write the tenant's latest KPI snapshots to Dataverse (or, with `dry_run`, print what would be sent)."""
    from relinsights.auth import TokenSource
    from relinsights.db.tenants import ensure_tenant

    started_wall, started = datetime.now(UTC), time.monotonic()
    tenant_pk = ensure_tenant(engine, tenant).id or 0
    report = WritebackReport(tenant.name, dry_run=dry_run)
    if not tenant.dataverse_url or not tenant.dataverse_token_scope:
        raise DataverseError(f"tenant {tenant.name} has no dataverse_url; set it to write KPIs back", code="config")
    snapshots = await asyncio.to_thread(latest_snapshots, engine, tenant_pk)
    if not snapshots:
        report.status = "nothing"
        report.error = "no KPI snapshots yet: run `relinsights compute --once` first"
        return report
    report.as_of, report.records = snapshots[0].as_of, len(snapshots)
    ledger, ctx = await asyncio.to_thread(lambda: (read_ledger(engine, tenant_pk), crm_context(engine, tenant_pk)))
    dv_tokens = tokens or TokenSource(tenant, tenant.dataverse_token_scope)
    async with DataverseClient(
        tenant, dv_tokens, max_parallel=tenant.writeback.max_parallel, **(client_options or {})
    ) as client:
        entities = sorted({s.entity for s in snapshots}, key=PARENTS.index)
        pointers = await parent_pointers(client, tenant, entities)
        the_plan = plan(tenant, snapshots, ledger, pointers, ctx)
        report.skipped = the_plan.skipped
        if dry_run:
            requests = the_plan.requests(tenant)
            report.pending = len(the_plan.rows) + len(the_plan.links) + len(the_plan.deletes)
            if printer is not None:
                printer(client.base_url, requests)
            report.requests, report.seconds = client.requests_sent, time.monotonic() - started
            return report
        writer = Writer(engine, tenant, tenant_pk, client, report)
        try:
            await writer.send_all([r for r in the_plan.rows if r.kind == KPI])
            await writer.send_all(the_plan.links)
            await writer.send_all([r for r in the_plan.rows if r.kind != KPI])
            for entity_set, row_id in the_plan.deletes:
                await writer.remove(entity_set, row_id)
            report.status = "partial" if report.failures else "ok"
        except DataverseError as exc:
            report.status, report.error = "failed", f"{exc}; {exc.fix}"
            log.error("writeback.failed", tenant=tenant.name, error=str(exc), fix=exc.fix)
        finally:
            report.pending = max(
                0,
                len(the_plan.rows)
                - sum(report.written.values())
                - len([f for f in report.failures if f.entity_set not in PARENT_SETS.values()]),
            )
            report.requests, report.throttled = client.requests_sent, client.throttled
            report.seconds = time.monotonic() - started
            await asyncio.to_thread(_save_run, engine, tenant_pk, report, started_wall)
    log.info(
        "writeback.done",
        tenant=tenant.name,
        status=report.status,
        written=sum(report.written.values()),
        skipped=report.skipped,
        failed=len(report.failures),
        seconds=round(report.seconds, 2),
    )
    return report


def last_writeback(engine: Engine, tenant_pk: int) -> dict[str, Any] | None:
    """The tenant's latest write-back run, for `status`."""
    c = run_t.c
    with engine.connect() as conn:
        row = conn.execute(
            select(
                c.started_at,
                c.finished_at,
                c.as_of,
                c.status,
                c.written,
                c.skipped,
                c.deleted,
                c.failed,
                c.pending,
                c.error,
            )
            .where(c.tenant_pk == tenant_pk)
            .order_by(c.started_at.desc(), c.id.desc())
            .limit(1)
        ).first()
    return dict(row._mapping) if row is not None else None


def writeback_due(engine: Engine, tenant: TenantConfig, tenant_pk: int) -> bool:
    """Snapshots newer than the last write-back, or a last write-back that did not finish cleanly."""
    if not (tenant.dataverse_url and tenant.writeback.enabled):
        return False
    latest = latest_as_of(engine, tenant_pk)
    if latest is None:
        return False
    last = last_writeback(engine, tenant_pk)
    return last is None or last["status"] in ("failed", "partial") or last["as_of"] is None or last["as_of"] < latest
