"""What `relinsights status` shows: per tenant, its last computation and write-back; per mailbox, its sync
state, counts and cursor age."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from relinsights.db.models import Event, KpiRun, Mailbox, Message, SyncCursor, Tenant, WritebackRun, table_of


@dataclass
class MailboxStatus:
    tenant: str
    mailbox: str
    status: str
    detail: str | None
    messages: int
    events: int
    cursor_age_s: float | None  # since the oldest delta stream of the mailbox last completed a round
    last_success: str | None
    last_error: str | None
    last_error_at: str | None
    error_count: int
    in_scope: bool

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    aware = dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite hands back UTC without its zone
    return aware.astimezone(UTC).isoformat(timespec="seconds")


def age_text(seconds: float | None) -> str:
    """A duration as people read it: 42s, 5.5m, 3.0h, 2.1d; never for None."""
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def mailbox_statuses(
    engine: Engine, tenant: str | None = None, include_out_of_scope: bool = False
) -> list[MailboxStatus]:
    m, t = table_of(Mailbox), table_of(Tenant)
    msg = select(Message.mailbox_pk, func.count().label("n")).group_by(Message.mailbox_pk).subquery()  # type: ignore[call-overload]
    ev = select(Event.mailbox_pk, func.count().label("n")).group_by(Event.mailbox_pk).subquery()  # type: ignore[call-overload]
    cur = (
        select(SyncCursor.mailbox_pk, func.min(SyncCursor.completed_at).label("oldest"))  # type: ignore[call-overload]
        .group_by(SyncCursor.mailbox_pk)
        .subquery()
    )
    q = (
        select(
            t.c.name.label("tenant_name"),
            m,
            func.coalesce(msg.c.n, 0).label("message_count"),
            func.coalesce(ev.c.n, 0).label("event_count"),
            cur.c.oldest,
        )
        .join(t, t.c.id == m.c.tenant_pk)
        .outerjoin(msg, msg.c.mailbox_pk == m.c.id)
        .outerjoin(ev, ev.c.mailbox_pk == m.c.id)
        .outerjoin(cur, cur.c.mailbox_pk == m.c.id)
        .order_by(t.c.name, m.c.address)
    )
    if tenant:
        q = q.where(t.c.name == tenant)
    if not include_out_of_scope:
        q = q.where(m.c.in_scope.is_(True))
    now = datetime.now(UTC)
    out = []
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            oldest = row["oldest"]
            if oldest is not None and oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            out.append(
                MailboxStatus(
                    tenant=row["tenant_name"],
                    mailbox=row["address"],
                    status=row["status"],
                    detail=row["status_detail"],
                    messages=int(row["message_count"]),
                    events=int(row["event_count"]),
                    cursor_age_s=round((now - oldest).total_seconds(), 1) if oldest else None,
                    last_success=_iso(row["last_success_at"]),
                    last_error=row["last_error"],
                    last_error_at=_iso(row["last_error_at"]),
                    error_count=row["error_count"],
                    in_scope=row["in_scope"],
                )
            )
    return out


def statuses_json(rows: list[MailboxStatus]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=2)


@dataclass
class TenantStatus:
    tenant: str
    status: str
    last_error: str | None
    computed_at: str | None  # when the last KPI computation finished
    as_of: str | None
    records: int
    accuracy: str | None
    writeback_at: str | None  # when the last write-back finished
    writeback_status: str | None  # ok | partial | failed
    rows_written: int
    rows_skipped: int
    rows_failed: int
    rows_pending: int
    writeback_error: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def tenant_statuses(engine: Engine, tenant: str | None = None) -> list[TenantStatus]:
    """Per tenant: its last KPI computation and its last write-back to Dataverse."""
    t, run, wb = table_of(Tenant), table_of(KpiRun), table_of(WritebackRun)
    out = []
    with engine.connect() as conn:
        tenants = conn.execute(select(t).order_by(t.c.name)).mappings().all()
        for row in tenants:
            if tenant and row["name"] != tenant:
                continue
            last = (
                conn.execute(select(run).where(run.c.tenant_pk == row["id"]).order_by(run.c.started_at.desc()).limit(1))
                .mappings()
                .first()
            )
            w = (
                conn.execute(
                    select(wb)
                    .where(wb.c.tenant_pk == row["id"])
                    .order_by(wb.c.started_at.desc(), wb.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            out.append(
                TenantStatus(
                    tenant=row["name"],
                    status=row["status"],
                    last_error=row["last_error"],
                    computed_at=_iso(last["finished_at"]) if last else None,
                    as_of=_iso(last["as_of"]) if last else None,
                    records=int(last["records"]) if last else 0,
                    accuracy=last["accuracy"] if last else None,
                    writeback_at=_iso(w["finished_at"]) if w else None,
                    writeback_status=w["status"] if w else None,
                    rows_written=int(w["written"]) if w else 0,
                    rows_skipped=int(w["skipped"]) if w else 0,
                    rows_failed=int(w["failed"]) if w else 0,
                    rows_pending=int(w["pending"]) if w else 0,
                    writeback_error=w["error"] if w else None,
                )
            )
    return out
