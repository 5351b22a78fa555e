"""What `relinsights status` shows: per mailbox, its sync state, counts and cursor age."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from relinsights.db.models import Event, Mailbox, Message, SyncCursor, Tenant, table_of


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
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


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
