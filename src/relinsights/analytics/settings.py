"""The tenant settings one KPI computation needs, bundled: the KPI constants, the time zone, the lookback.

The constants themselves live in `relinsights.config` (KpiConfig, HealthConfig); this only groups them
with the two tenant values that sit elsewhere in the config (timezone, sync.lookback_days).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from relinsights.config import KpiConfig, TenantConfig


@dataclass(frozen=True, slots=True)
class Settings:
    kpi: KpiConfig = field(default_factory=KpiConfig)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    lookback_days: int = 365

    @classmethod
    def for_tenant(cls, tenant: TenantConfig) -> Settings:
        return cls(kpi=tenant.kpi, zone=tenant.zone, lookback_days=tenant.sync.lookback_days)
