"""Incremental equals full: day after day on a sandbox organisation whose mail, meetings and CRM records
change (new mail, contacts' addresses edited, opportunities won and lost, calls logged, rows deleted),
every snapshot the incremental job stores equals what a full computation computes as of the same T."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from relinsights.compute import compute_payloads, compute_tenant
from relinsights.compute.store import payloads_of
from relinsights.config import TenantConfig, load_config
from relinsights.crm.mirror import mirror_tenant
from relinsights.db.tenants import ensure_tenant
from relinsights.graph.sync import sync_tenant
from relinsights.sandbox.generator import OrgSize, generate_org
from relinsights.sandbox.server import SandboxServer

# Between "small" and "medium": enough records of every kind, quick enough to sync every simulated day.
MEDIUM_ISH = OrgSize("medium-ish", 8, 2, 2, 24, 4, (2, 4), 200, 30, 1.0, 1.0)


def test_incremental_runs_equal_full_computations_over_simulated_days(sqlite_engine: Engine, tmp_path: Path) -> None:
    with SandboxServer(org=generate_org(MEDIUM_ISH, seed=3), state_dir=tmp_path / "sandbox") as sandbox:
        tenant = load_config(sandbox.write_daemon_config(tmp_path / "cfg")).tenants[0]
        pk = ensure_tenant(sqlite_engine, tenant).id or 0

        async def no_wait(_s: float) -> None:
            return None

        reused = computed = 0
        # Days advanced before each run: a first run, daily runs, a gap of three days.
        for step in (0, 1, 3, 1):
            if step:
                sandbox.org.advance(timedelta(days=step))
            asyncio.run(sync_tenant(sqlite_engine, tenant, sleep=no_wait, now=sandbox.org.now))
            asyncio.run(mirror_tenant(sqlite_engine, tenant))
            for hours in (17, 20) if step == 3 else (17,):  # and a second run later the same day
                as_of = sandbox.org.now() + timedelta(hours=hours)
                report = compute_tenant(sqlite_engine, tenant, as_of=as_of)
                assert_equals_full(sqlite_engine, tenant, pk, as_of)
                if step:
                    reused += report.reused
                    computed += report.computed
        # Closed opportunities and leads, and quiet records, were carried over rather than recomputed.
        assert reused > 20 and computed > reused


def assert_equals_full(engine: Engine, tenant: TenantConfig, tenant_pk: int, as_of: datetime) -> None:
    full = {(str(ref.entity), ref.id): p for ref, p in compute_payloads(engine, tenant, as_of).items()}
    mine = payloads_of(engine, tenant_pk, as_of)
    assert mine.keys() == full.keys()
    assert [k for k in full if mine[k] != full[k]] == []
