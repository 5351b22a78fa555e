"""The CRM mirror against the sandbox's Dataverse: full first read, change tracking, deletions, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from relinsights.config import load_config
from relinsights.crm.mirror import SETS, mirror_tenant, mirrored_rows
from relinsights.db.tenants import ensure_tenant
from relinsights.sandbox.server import SandboxServer


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=4, state_dir=tmp_path / "sb") as server:
        yield server


def mirror(sandbox: SandboxServer, engine: Engine, tmp_path: Path) -> object:
    tenant = load_config(sandbox.write_daemon_config(tmp_path / "cfg")).tenants[0]
    return asyncio.run(mirror_tenant(engine, tenant)), ensure_tenant(engine, tenant).id


def assert_mirror_equals_truth(sandbox: SandboxServer, engine: Engine, tenant_pk: int) -> None:
    for spec in SETS:
        truth = sandbox.crm.truth([spec.entity_set])[spec.entity_set]
        mine = {r[spec.key].lower(): r for r in mirrored_rows(engine, tenant_pk, spec.entity_set)}
        assert set(mine) == set(truth), spec.entity_set
        for rid, row in mine.items():
            for col in spec.select:
                assert row.get(col) == truth[rid].get(col), (spec.entity_set, rid, col)
    parties = sandbox.crm.truth(["activityparties"])["activityparties"]
    activities = {a for s in ("phonecalls", "emails", "appointments") for a in sandbox.crm.truth([s])[s]}
    expected = {pid for pid, p in parties.items() if p["_activityid_value"] in activities}
    assert {r["activitypartyid"] for r in mirrored_rows(engine, tenant_pk, "activityparties")} == expected


def test_first_mirror_then_incremental_rounds_equal_the_crm(sandbox: SandboxServer, engine: Engine,
                                                           tmp_path: Path) -> None:
    report, pk = mirror(sandbox, engine, tmp_path)
    assert report.upserted["contacts"] > 10 and report.parties > 10  # type: ignore[attr-defined]
    assert_mirror_equals_truth(sandbox, engine, pk)  # type: ignore[arg-type]
    sandbox.org.advance(timedelta(days=3))  # contacts edited, opportunities closed, calls logged, rows deleted
    report, pk = mirror(sandbox, engine, tmp_path)
    assert "contacts" not in report.full_reads  # type: ignore[attr-defined]
    assert sum(report.upserted.values()) > 0  # type: ignore[attr-defined]
    assert_mirror_equals_truth(sandbox, engine, pk)  # type: ignore[arg-type]


def test_expired_change_tracking_falls_back_to_a_full_read(sandbox: SandboxServer, sqlite_engine: Engine,
                                                          tmp_path: Path) -> None:
    mirror(sandbox, sqlite_engine, tmp_path)
    sandbox.org.advance(timedelta(days=1))
    sandbox.dataverse.expire_change_tracking()
    report, pk = mirror(sandbox, sqlite_engine, tmp_path)
    assert {"contacts", "accounts", "opportunities"} <= set(report.full_reads)  # type: ignore[attr-defined]
    assert_mirror_equals_truth(sandbox, sqlite_engine, pk)  # type: ignore[arg-type]
