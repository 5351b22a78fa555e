"""Admin operations behind `relinsights tenants ...` and `relinsights purge ...`.

Purge is the answer to a privacy request or an opt-out: it deletes what is stored about one person (their
mailbox's mail and calendar, and every synced message or event they took part in) or one whole tenant,
and reports what it deleted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update

from relinsights.config import Config, ConfigError, normalise_domain
from relinsights.db.models import (
    Event,
    EventAttendee,
    Mailbox,
    Message,
    MessageParticipant,
    Tenant,
    table_of,
)
from relinsights.db.tenants import ensure_tenant, tenant_enabled

tenant_t, mailbox_t, message_t, event_t = table_of(Tenant), table_of(Mailbox), table_of(Message), table_of(Event)
participant_t, attendee_t = table_of(MessageParticipant), table_of(EventAttendee)


@dataclass
class TenantRow:
    name: str
    enabled: bool
    enabled_in_config: bool
    override: bool | None
    status: str
    mailboxes: int
    messages: int
    last_success: str | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def list_tenants(engine: Engine, cfg: Config) -> list[TenantRow]:
    out = []
    for t in cfg.tenants:
        row = ensure_tenant(engine, t)
        with engine.connect() as conn:
            mailboxes = conn.execute(
                select(func.count()).where(mailbox_t.c.tenant_pk == row.id, mailbox_t.c.in_scope.is_(True))
            ).scalar_one()
            messages = conn.execute(
                select(func.count())
                .select_from(message_t.join(mailbox_t, mailbox_t.c.id == message_t.c.mailbox_pk))
                .where(mailbox_t.c.tenant_pk == row.id)
            ).scalar_one()
        out.append(
            TenantRow(
                name=t.name,
                enabled=tenant_enabled(row, t),
                enabled_in_config=t.enabled,
                override=row.enabled_override,
                status=row.status,
                mailboxes=int(mailboxes),
                messages=int(messages),
                last_success=row.last_success_at.isoformat(timespec="seconds") if row.last_success_at else None,
                last_error=row.last_error,
            )
        )
    return out


@dataclass
class PurgeReport:
    scope: str
    mailboxes: int = 0
    messages: int = 0
    events: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def set_tenant_enabled(
    engine: Engine, cfg: Config, name: str, enabled: bool, purge: bool = False
) -> PurgeReport | None:
    row = ensure_tenant(engine, cfg.tenant(name))
    with engine.begin() as conn:
        conn.execute(update(tenant_t).where(tenant_t.c.id == row.id).values(enabled_override=enabled))
    if purge and not enabled:
        return _purge_tenant_data(engine, row.id or 0, f"tenant {name} (synced data; the tenant stays, disabled)")
    return None


def _purge_tenant_data(engine: Engine, tenant_pk: int, scope: str) -> PurgeReport:
    report = PurgeReport(scope=scope)
    with engine.begin() as conn:
        pks = list(conn.execute(select(mailbox_t.c.id).where(mailbox_t.c.tenant_pk == tenant_pk)).scalars())
        report.messages = _count(conn, message_t, message_t.c.mailbox_pk.in_(pks)) if pks else 0
        report.events = _count(conn, event_t, event_t.c.mailbox_pk.in_(pks)) if pks else 0
        # Mailboxes cascade to folders, cursors, messages, events and their participants.
        report.mailboxes = conn.execute(delete(mailbox_t).where(mailbox_t.c.tenant_pk == tenant_pk)).rowcount or 0
    return report


def purge_tenant(engine: Engine, cfg: Config, name: str) -> PurgeReport:
    row = ensure_tenant(engine, cfg.tenant(name))
    report = _purge_tenant_data(engine, row.id or 0, f"tenant {name}")
    with engine.begin() as conn:
        conn.execute(delete(tenant_t).where(tenant_t.c.id == row.id))
    report.notes.append(
        f"remove the [[tenant]] table named {name!r} from the configuration, or the next round syncs it again"
    )
    return report


def purge_user(engine: Engine, address: str) -> PurgeReport:
    """Everything stored about one person: their mailbox (if synced) and every item they took part in."""
    addr = address.strip().lower()
    if addr.count("@") != 1:
        raise ConfigError("purge", [f"--user: not an email address: {address!r}"])
    local, domain = addr.split("@")
    addr = f"{local}@{normalise_domain(domain)}"
    report = PurgeReport(scope=f"user {addr}")
    with engine.begin() as conn:
        own = [
            pk
            for pk, aliases, main in conn.execute(select(mailbox_t.c.id, mailbox_t.c.aliases, mailbox_t.c.address))
            if main == addr or addr in json.loads(aliases or "[]")
        ]
        msg_ids = set(conn.execute(select(participant_t.c.message_id).where(participant_t.c.address == addr)).scalars())
        msg_ids |= set(
            conn.execute(
                select(message_t.c.id).where(or_(message_t.c.from_address == addr, message_t.c.sender_address == addr))
            ).scalars()
        )
        ev_ids = set(conn.execute(select(attendee_t.c.event_id).where(attendee_t.c.address == addr)).scalars())
        ev_ids |= set(conn.execute(select(event_t.c.id).where(event_t.c.organizer_address == addr)).scalars())
        if own:
            msg_ids |= set(conn.execute(select(message_t.c.id).where(message_t.c.mailbox_pk.in_(own))).scalars())
            ev_ids |= set(conn.execute(select(event_t.c.id).where(event_t.c.mailbox_pk.in_(own))).scalars())
        report.messages = _delete_ids(conn, message_t, sorted(msg_ids))
        report.events = _delete_ids(conn, event_t, sorted(ev_ids))
        if own:
            report.mailboxes = conn.execute(delete(mailbox_t).where(mailbox_t.c.id.in_(own))).rowcount or 0
            report.notes.append(
                f"add {addr} to scope.exclude_users of its tenant, or the next round syncs the mailbox again"
            )
    report.notes.append(f"add {addr} to kpi.excluded_addresses so it never counts as a party in KPIs")
    return report


def _count(conn: Any, table: Any, cond: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(cond)).scalar_one())


def _delete_ids(conn: Any, table: Any, ids: list[int]) -> int:
    n = 0
    for i in range(0, len(ids), 500):
        n += conn.execute(delete(table).where(table.c.id.in_(ids[i : i + 500]))).rowcount or 0
    return n
