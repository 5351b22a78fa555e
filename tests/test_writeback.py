"""Write-back of the KPI snapshots to the sandbox's Dataverse KPI tables, over real HTTP and MSAL.

What lands must equal what was computed; a rerun writes nothing; a KPI row the parent already points at
is updated in place; throttling and a bad row lose nothing else; a dry run sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from conftest import tenant_config
from relinsights.cli import app
from relinsights.compute import compute_tenant
from relinsights.config import ConfigError, TenantConfig, load_config, parse_config
from relinsights.crm.mirror import mirror_tenant
from relinsights.crm.writeback import CrmContext, Ledgered, latest_snapshots, plan, writeback_tenant
from relinsights.crm.writeback_rows import Snapshot, kpi_row_id
from relinsights.db import make_engine
from relinsights.db.models import WritebackRow
from relinsights.doctor import run_doctor
from relinsights.graph.sync import sync_tenant
from relinsights.sandbox.dataverse_schema import Ref
from relinsights.sandbox.server import SandboxServer

KPI_SETS = {e: f"msdyn_{e}kpiitems" for e in ("contact", "account", "lead", "opportunity")}
PARENT_SETS = {"contact": "contacts", "account": "accounts", "lead": "leads", "opportunity": "opportunities"}


@dataclass
class Org:
    sandbox: SandboxServer
    engine: Engine
    tenant: TenantConfig
    config: Path

    def write(self, **kw: Any) -> Any:
        return asyncio.run(writeback_tenant(self.engine, self.tenant, **kw))

    def snapshots(self) -> list[Snapshot]:
        with self.engine.connect() as conn:
            pk = conn.exec_driver_sql("SELECT id FROM tenant").scalar_one()
        return latest_snapshots(self.engine, pk)


@contextmanager
def prepared(tmp_path: Path, engine: Engine) -> Iterator[Org]:
    with SandboxServer(size="small", seed=7, state_dir=tmp_path / "sandbox") as sb:
        config = sb.write_daemon_config(tmp_path / "cfg")
        # The CLI runs below must see the test's database (SQLite or PostgreSQL).
        url = engine.url.render_as_string(hide_password=False)
        text = config.read_text()
        config.write_text(text.replace(text.split("[database]\n", 1)[1].split("\n", 1)[0], f'url = "{url}"', 1))
        tenant = load_config(config).tenants[0]

        async def no_wait(_s: float) -> None:
            return None

        assert asyncio.run(sync_tenant(engine, tenant, sleep=no_wait, now=sb.org.now)).status == "ok"
        asyncio.run(mirror_tenant(engine, tenant))
        compute_tenant(engine, tenant, as_of=sb.org.now())
        yield Org(sb, engine, tenant, config)


@pytest.fixture
def org(tmp_path: Path, engine: Engine) -> Iterator[Org]:
    """On SQLite and on PostgreSQL (the ledger's SQL)."""
    with prepared(tmp_path, engine) as o:
        yield o


@pytest.fixture
def sqlite_org(tmp_path: Path, sqlite_engine: Engine) -> Iterator[Org]:
    """On SQLite only: what the test checks does not depend on the database."""
    with prepared(tmp_path, sqlite_engine) as o:
        yield o


def by_parent(rows: dict[str, dict[str, Any]], lookup: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rid, row in rows.items():
        out.setdefault(str(row[lookup]), []).append({"id": rid, **row})
    return out


def test_written_rows_equal_the_computed_kpis_and_a_rerun_writes_nothing(org: Org) -> None:
    report = org.write()
    assert report.status == "ok" and not report.failures, report.to_json()
    kpi = org.sandbox.crm.kpi_rows()
    snapshots = org.snapshots()
    assert len(snapshots) == report.records > 20
    for s in snapshots:
        rows = by_parent(kpi[KPI_SETS[s.entity]], f"_msdyn_{s.entity}id_value").get(s.record_id, [])
        assert len(rows) == 1, f"{s.entity} {s.record_id} has {len(rows)} KPI rows"
        row, p = rows[0], s.payload
        assert row["id"] == kpi_row_id(f"msdyn_{s.entity}kpiitem", s.record_id)
        assert row["msdyn_emailssent"] == p["emails_sent"] and row["msdyn_emailsreceived"] == p["emails_received"]
        assert row["msdyn_meetingssent"] == p["meetings_sent"] and row["msdyn_phonecallsmade"] == p["calls_made"]
        assert row["msdyn_timespentbyteam"] == round(p["time_spent_by_team_minutes"])
        rate = p["response_rate_by_them"]
        assert row["msdyn_responseratebythem"] == (None if rate is None else round(rate * 100, 2))
        health = p["health"] or {}
        states = {"Good": 0, "Fair": 1, "Poor": 2}
        assert row["msdyn_relationshiphealthscorestate"] == states.get(health.get("state"), 3)
        assert row["msdyn_relationshiphealthscorevalue"] == health.get("score")
        assert row["msdyn_computationaccuracy"] == 100000000
        parent = org.sandbox.crm.truth([PARENT_SETS[s.entity]])[PARENT_SETS[s.entity]][s.record_id]
        assert parent[f"_msdyn_{s.entity}kpiid_value"] == row["id"]
        # The 60-day series: exactly the days with activity, with their counts.
        daily = by_parent(kpi[f"msdyn_daily{s.entity}kpiitems"], "_msdyn_entityid_value").get(s.record_id, [])
        assert {d["msdyn_date"]: d["msdyn_emailssent"] for d in daily} == {
            day: c["emails_sent"] for day, c in p["relationship_activities"].items()
        }
        for table, side in (
            ("msdyn_mostcontactedbies", "top_contacts_ours"),
            ("msdyn_mostcontacteds", "top_contacts_theirs"),
        ):
            tops = sorted(
                (r for r in kpi[table].values() if r["msdyn_regardingentityid"] == s.record_id),
                key=lambda r: r["msdyn_name"],
            )
            assert [(r["msdyn_numberofemails"], r["msdyn_numberofmeetings"]) for r in tops] == [
                (t["emails"], t["meetings"]) for t in p[side][:3]
            ]
    written = dict(org.sandbox.crm.stats()["written"])
    again = org.write()
    assert again.status == "ok" and again.written == {} and again.parents_linked == 0
    assert again.skipped == sum(report.written.values())
    assert org.sandbox.crm.stats()["written"] == written, "a rerun with nothing changed must write nothing"


def test_a_kpi_row_the_parent_already_points_at_is_updated_in_place(sqlite_org: Org) -> None:
    s = next(s for s in sqlite_org.snapshots() if s.entity == "contact")
    theirs = str(uuid.uuid4())
    crm = sqlite_org.sandbox.crm
    crm.insert("msdyn_contactkpiitem", {"msdyn_name": "written by Dynamics", "msdyn_emailssent": 999}, row_id=theirs)
    crm.update("contact", s.record_id, {"msdyn_contactkpiid": Ref("msdyn_contactkpiitem", theirs)})
    report = sqlite_org.write()
    assert report.status == "ok"
    rows = by_parent(crm.kpi_rows()["msdyn_contactkpiitems"], "_msdyn_contactid_value")
    kpi = crm.kpi_rows()["msdyn_contactkpiitems"]
    assert kpi[theirs]["msdyn_emailssent"] == s.payload["emails_sent"]
    assert kpi_row_id("msdyn_contactkpiitem", s.record_id) not in kpi
    assert [r["id"] for r in rows[s.record_id]] == [theirs]
    assert report.parents_linked == report.records - 1, "the parent already pointing at its row is not written"


def test_throttling_storm_and_a_bad_row_lose_nothing_else(org: Org) -> None:
    snapshots = org.snapshots()
    bad = next(s for s in snapshots if s.entity == "contact" and s.payload["relationship_activities"])
    org.sandbox.crm.delete("contact", bad.record_id)  # deleted in the CRM after the computation
    settings = org.sandbox.dataverse.settings
    settings.max_requests, settings.window_seconds = 25, 1.0  # more requests than that: 429 storms
    tenant = org.tenant.model_copy(
        update={"writeback": org.tenant.writeback.model_copy(update={"batch_size": 16, "max_parallel": 3})}
    )
    report = asyncio.run(writeback_tenant(org.engine, tenant))
    assert report.status == "partial" and report.throttled > 0, report.to_json()
    failed_records = {f.record for f in report.failures}
    assert failed_records == {f"contact {bad.record_id}"}, report.failures
    expected_bad = (
        1
        + len(bad.payload["relationship_activities"])
        + len(bad.payload["top_contacts_ours"][:3])
        + len(bad.payload["top_contacts_theirs"][:3])
    )
    assert len(report.failures) == expected_bad
    assert all("contact" in f.error or "404" in f.error or "400" in f.error for f in report.failures)
    kpi = org.sandbox.crm.kpi_rows()
    for s in snapshots:
        rows = by_parent(kpi[KPI_SETS[s.entity]], f"_msdyn_{s.entity}id_value").get(s.record_id, [])
        assert len(rows) == (0 if s is bad else 1), s.record_id
    ids = [rid for table in kpi.values() for rid in table]
    assert len(ids) == len(set(ids)) == sum(report.written.values())
    # The failed rows are retried next time, the others skipped.
    settings.max_requests = 6000
    again = asyncio.run(writeback_tenant(org.engine, tenant))
    assert again.written == {} and len(again.failures) == expected_bad
    assert again.skipped == sum(report.written.values())
    status = CliRunner().invoke(app, ["status", "--json", "--config", str(org.config)])
    [t] = json.loads(status.output)["tenants"]
    assert t["writeback_status"] == "partial" and t["rows_failed"] == expected_bad and t["rows_pending"] == 0


def test_dry_run_prints_the_exact_requests_and_changes_nothing(sqlite_org: Org) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["writeback", "--once", "--dry-run", "--config", str(sqlite_org.config)])
    assert text.exit_code == 0, text.output
    assert "# msdyn_contactkpiitems:" in text.output and "# contacts:" in text.output
    assert "/msdyn_contactkpiitems/Microsoft.Dynamics.CRM.UpsertMultiple" in text.output
    assert "/contacts/Microsoft.Dynamics.CRM.UpdateMultiple" in text.output  # links never create a contact
    assert sqlite_org.sandbox.crm.kpi_rows()["msdyn_contactkpiitems"] == {}
    with sqlite_org.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(WritebackRow)).scalar_one() == 0
    listed = runner.invoke(app, ["writeback", "--once", "--dry-run", "--json", "--config", str(sqlite_org.config)])
    [report] = json.loads(listed.stdout)
    upserts = [r for r in report["requests"] if r["method"] == "POST"]
    assert report["pending"] == len(report["requests"]) - len(upserts) + sum(len(r["body"]["Targets"]) for r in upserts)
    assert runner.invoke(app, ["writeback", "--once", "--config", str(sqlite_org.config)]).exit_code == 0
    # What the dry run showed is what landed (the update stamp aside: it is the time of the computation).
    kpi = sqlite_org.sandbox.crm.kpi_rows()
    for r in (r for r in upserts if r["url"].endswith("UpsertMultiple")):
        table = r["url"].rsplit("/", 2)[-2]
        for target in r["body"]["Targets"]:
            key = next(k for k in target if k.endswith("id") and k.startswith(target["@odata.type"].split(".")[-1]))
            row = kpi[table][target[key]]
            for column, value in target.items():
                if column.endswith("@odata.bind"):
                    nav = column.removesuffix("@odata.bind").lower()
                    assert f"({row[f'_{nav}_value']})" in value
                elif not column.startswith("@") and column != key and value is not None and "T" not in str(value):
                    assert row[column] == value, (table, column)


# ---------------------------------------------------------------- planning without a network


def snapshot(**payload: Any) -> Snapshot:
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    base = {"emails_sent": 1, "relationship_activities": {}, "top_contacts_ours": [], "top_contacts_theirs": []}
    return Snapshot("contact", "c1", now, now, "Complete", base | payload)


def _ledger_of(p: Any) -> dict[tuple[str, str], Ledgered]:
    return {(r.table.entity_set, r.row_id): Ledgered(r.kind, r.parent_id, r.day, r.hash) for r in p.rows}


def test_plan_skips_unchanged_rows_zeroes_emptied_days_and_deletes_dropped_top_contacts() -> None:
    tenant = tenant_config(dataverse_url="https://org.test")
    person = {"emails": 2, "meetings": 0, "calls": 0, "last_contacted": "2026-03-01T10:00:00+00:00"}
    first = snapshot(
        relationship_activities={"2026-03-01": {"emails_sent": 2}, "2026-02-27": {"emails_received": 1}},
        top_contacts_theirs=[{"person": "a@x.test", **person}, {"person": "b@x.test", **person}],
    )
    p1 = plan(tenant, [first], {}, {}, CrmContext())
    assert Counter(r.kind for r in p1.rows) == {"kpi": 1, "daily": 2, "top": 2} and p1.skipped == 0
    [link] = p1.links
    kpi_id = kpi_row_id("msdyn_contactkpiitem", "c1")
    assert link.target() == {"contactid": "c1", "msdyn_contactkpiid@odata.bind": f"/msdyn_contactkpiitems({kpi_id})"}
    same = plan(tenant, [first], _ledger_of(p1), {"c1": kpi_row_id("msdyn_contactkpiitem", "c1")}, CrmContext())
    assert same.rows == [] and same.skipped == 5 and same.links == [] and same.deletes == []
    # A message deleted (2026-02-27 goes to nothing) and b@ dropped out of the top contacts.
    second = snapshot(
        relationship_activities={"2026-03-01": {"emails_sent": 2}},
        top_contacts_theirs=[{"person": "a@x.test", **person}],
    )
    p2 = plan(tenant, [second], _ledger_of(p1), {}, CrmContext())
    [zeroed] = [r for r in p2.rows if r.kind == "daily"]
    assert zeroed.day == "2026-02-27" and zeroed.body["msdyn_emailsreceived"] == 0
    assert p2.deletes == [("msdyn_mostcontacteds", kpi_row_id("msdyn_mostcontacted", "c1", "2"))]
    # The record lost its snapshot altogether: its top-contact rows (they name people) go.
    p3 = plan(tenant, [], _ledger_of(p1), {}, CrmContext())
    assert len(p3.deletes) == 2 and p3.rows == []


def test_the_mapping_renames_tables_and_leaves_columns_out() -> None:
    tenant = tenant_config(
        dataverse_url="https://org.test",
        writeback={
            "columns": {"time_spent_by_team": "", "emails_sent": "new_mailsout"},
            "contact": {
                "kpi": {"table": "new_contactkpi", "entity_set": "new_contactkpis"},
                "kpi_parent": "new_Contact",
                "parent_kpi": "",
            },
            "daily_series": False,
        },
    )
    p = plan(tenant, [snapshot()], {}, {}, CrmContext())
    [row] = p.rows
    target = row.target()
    assert row.table.entity_set == "new_contactkpis" and target["new_contactkpiid"] == row.row_id
    assert target["new_mailsout"] == 1 and "msdyn_emailssent" not in target and "msdyn_timespentbyteam" not in target
    assert target["new_Contact@odata.bind"] == "/contacts(c1)" and p.links == []


def test_an_unknown_kpi_column_name_is_a_config_error() -> None:
    base = {
        "name": "t",
        "tenant_id": str(uuid.uuid4()),
        "client_id": str(uuid.uuid4()),
        "credential": {"secret_env": "X"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config({"tenant": [base | {"writeback": {"columns": {"emails_snet": "x"}}}]})
    assert "tenant[0] (t).writeback.columns: unknown KPI name(s) emails_snet" in str(err.value)


def test_doctor_names_a_write_back_column_missing_from_dataverse(sqlite_org: Org, tmp_path: Path) -> None:
    text = sqlite_org.config.read_text() + '\n[tenant.writeback.columns]\nhealth_score = "new_healthscore"\n'
    sqlite_org.config.write_text(text)
    cfg = load_config(sqlite_org.config)
    checks = run_doctor(cfg, make_engine(cfg.database_url), "sandbox")
    failed = [c for c in checks if c.level == "fail"]
    assert failed and all("new_healthscore" in c.detail and "[writeback] mapping" in c.detail for c in failed), failed
    assert {c.name.split()[2] for c in failed} == set(KPI_SETS.values())
    assert any(c.level == "ok" and c.name.startswith("write-back table msdyn_mostcontacteds") for c in checks)
