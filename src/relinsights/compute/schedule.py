"""When the daemon's KPI computation of a tenant is due: daily at `kpi.compute_at` (tenant-local time),
and the first one as soon as the data is there (right after the first full sync and CRM mirror).

Due is decided from the database, not from timers, so a daemon restarted after the daily time still
computes that day, and replicas that each see the time pass compute once (the one holding the lease
computes; the others then find the run done).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from relinsights.compute.store import last_run_started
from relinsights.config import TenantConfig
from relinsights.crm.mirror import SETS
from relinsights.db.models import CrmCursor, Mailbox, Tenant, table_of
from relinsights.db.tenants import tenant_enabled

UNFINISHED = ("pending", "syncing")


def daily_slot(now: datetime, tenant: TenantConfig) -> datetime:
    """The latest moment at or before `now` that is `kpi.compute_at` on a tenant-local day."""
    local = now.astimezone(tenant.zone)
    slot = datetime.combine(local.date(), tenant.kpi.compute_at, tzinfo=tenant.zone)
    if slot > local:
        slot = datetime.combine(local.date() - timedelta(days=1), tenant.kpi.compute_at, tzinfo=tenant.zone)
    return slot


def data_ready(engine: Engine, tenant: TenantConfig, row: Tenant) -> bool:
    """Every in-scope mailbox synced once (even if it failed: that run is Partial) and the CRM mirrored."""
    mb, cur = table_of(Mailbox), table_of(CrmCursor)
    with engine.connect() as conn:
        mirrored = conn.execute(
            select(func.count()).where(cur.c.tenant_pk == row.id, cur.c.completed_at.is_not(None))
        ).scalar_one()
        if mirrored < len(SETS):
            return False
        if not tenant_enabled(row, tenant):
            return True
        statuses = (
            conn.execute(select(mb.c.status).where(mb.c.tenant_pk == row.id, mb.c.in_scope.is_(True))).scalars().all()
        )
    return bool(statuses) and not any(s in UNFINISHED for s in statuses)


def compute_due(engine: Engine, tenant: TenantConfig, row: Tenant, now: datetime) -> bool:
    if not tenant.dataverse_url:
        return False  # no CRM, no records to compute KPIs for
    assert row.id is not None
    last = last_run_started(engine, row.id)
    if last is None:
        return data_ready(engine, tenant, row)
    return last < daily_slot(now, tenant)
