"""A tenant's own row: found or made from its config, and whether its enhanced insights are on.

Apart from the Graph sync (which uses them too) so that what only reads a tenant's data, the KPI
computation first, does not load the Graph SDK, MSAL and HTTP stack with it (about 24 MiB resident).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session, select

from relinsights.config import TenantConfig
from relinsights.db.models import Tenant


def ensure_tenant(engine: Engine, cfg: TenantConfig) -> Tenant:
    """The tenant's row (made on first use), its directory id as the config says."""
    with Session(engine, expire_on_commit=False) as s:
        row = s.exec(select(Tenant).where(Tenant.name == cfg.name)).first()
        if row is None:
            row = Tenant(name=cfg.name, directory_id=cfg.tenant_id, created_at=datetime.now(UTC))
            s.add(row)
        else:
            row.directory_id = cfg.tenant_id
        s.commit()
        s.refresh(row)
        return row


def tenant_enabled(row: Tenant, cfg: TenantConfig) -> bool:
    """Enhanced insights on? An admin's `tenants enable|disable` wins over the config's `enabled`."""
    return cfg.enabled if row.enabled_override is None else row.enabled_override
