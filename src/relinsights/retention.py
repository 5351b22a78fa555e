"""Retention: what falls out of the lookback window is deleted (daily, by the daemon)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, func, or_, select

from relinsights.config import TenantConfig
from relinsights.db.models import Event, KpiSnapshot, Mailbox, Message, SimilarWonSnapshot, Tenant, table_of

message_t, event_t, mailbox_t, tenant_t = table_of(Message), table_of(Event), table_of(Mailbox), table_of(Tenant)
snapshot_t, similar_t = table_of(KpiSnapshot), table_of(SimilarWonSnapshot)


@dataclass
class Pruned:
    messages: int = 0
    events: int = 0
    snapshots: int = 0


def prune(engine: Engine, tenant: TenantConfig, now: datetime) -> Pruned:
    cutoff = now - timedelta(days=tenant.sync.lookback_days)
    out = Pruned()
    with engine.begin() as conn:
        pks = (
            select(mailbox_t.c.id)
            .join(tenant_t, tenant_t.c.id == mailbox_t.c.tenant_pk)
            .where(tenant_t.c.name == tenant.name)
        )
        old_mail = or_(
            message_t.c.received_at < cutoff, and_(message_t.c.received_at.is_(None), message_t.c.sent_at < cutoff)
        )
        out.messages = conn.execute(delete(message_t).where(message_t.c.mailbox_pk.in_(pks), old_mail)).rowcount or 0
        out.events = (
            conn.execute(delete(event_t).where(event_t.c.mailbox_pk.in_(pks), event_t.c.end < cutoff)).rowcount or 0
        )
        # KPI history is kept for the lookback window too; the latest snapshots always stay (incremental
        # computation starts from them, and `kpis show` reads them).
        tenant_pk = select(tenant_t.c.id).where(tenant_t.c.name == tenant.name).scalar_subquery()
        for t in (snapshot_t, similar_t):
            latest = select(func.max(t.c.as_of)).where(t.c.tenant_pk == tenant_pk).scalar_subquery()
            out.snapshots += (
                conn.execute(
                    delete(t).where(t.c.tenant_pk == tenant_pk, t.c.as_of < cutoff, t.c.as_of < latest)
                ).rowcount
                or 0
            )
    return out
