"""The KPI job over database rows: kpis.md's worked example stored as Graph and Dataverse would leave it,
computed by `compute_tenant`, stored, and read back by `relinsights kpis show|list` (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from subprocess import PIPE
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select, text
from typer.testing import CliRunner

from conftest import tenant_config
from relinsights.analytics import Entity, MailMessage, RecordRef, build_activities, mail_frames
from relinsights.analytics.frames import us
from relinsights.analytics.kpis import RecordKpis
from relinsights.analytics.spillfile import SpilledBytes
from relinsights.cli import app
from relinsights.compute import bulk_read, compute_payloads, compute_tenant, job, load, prepare, read_process, store
from relinsights.compute.bulk_read import Query
from relinsights.compute.child import ComputeFailed, compute_in_child, run_in_child
from relinsights.compute.report import ComputeReport
from relinsights.compute.schedule import compute_due, daily_slot
from relinsights.compute.store import payloads_of
from relinsights.config import LoggingConfig, ServiceConfig, TenantConfig
from relinsights.daemon import Daemon
from relinsights.db import make_engine
from relinsights.db.models import (
    CrmCursor,
    CrmRecord,
    Event,
    EventAttendee,
    KpiRun,
    KpiSnapshot,
    Mailbox,
    Message,
    MessageParticipant,
    WorkLease,
    table_of,
)
from relinsights.db.tenants import ensure_tenant

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ANN, BOB, CARL, DAN = "ann@fabrikam.com", "bob@contoso.com", "carl@contoso.com", "dan@contoso.com"
ANN_ID = "0a0a0a0a-0000-4000-8000-00000000a001"
ZOE, ZOE_ID = "zoe@fabrikam.com", "0c0c0c0c-0000-4000-8000-00000000c001"
LEAD_ID = "0b0b0b0b-0000-4000-8000-00000000b001"
runner = CliRunner()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Rows:
    """Writes rows the way the Graph sync and the CRM mirror store them."""

    def __init__(self, engine: Engine, tenant: TenantConfig) -> None:
        self.engine = engine
        self.tenant_pk = ensure_tenant(engine, tenant).id
        self.mailbox: dict[str, int] = {}
        self.n = 0

    def insert(self, model: Any, **values: Any) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(insert(table_of(model)).values(**values).returning(table_of(model).c.id)).scalar_one()
            )

    def mailboxes(self, *addresses: str, status: str = "ok") -> None:
        for a in addresses:
            local = a.split("@")[0]
            self.mailbox[a] = self.insert(
                Mailbox,
                tenant_pk=self.tenant_pk,
                user_id=f"user-{local}",
                address=a,
                aliases=json.dumps([a, f"{local}@contoso.eu"]),
                status=status,
                in_scope=True,
                error_count=0,
            )

    def mail(self, key: str, sender: str, to: list[str], when: str, conv: str, *, copies: list[str], **kw: Any) -> None:
        for box in copies:
            self.n += 1
            pk = self.insert(
                Message,
                mailbox_pk=self.mailbox[box],
                graph_id=f"g{self.n}",
                internet_message_id=f"<{key}@fabrikam.com>",
                conversation_id=conv,
                from_address=sender,
                sender_address=sender,
                sent_at=at(when),
                received_at=at(when),
                is_draft=False,
                seen_round=1,
                **kw,
            )
            for address in to:  # from and sender are the message's columns (migration 0008)
                self.insert(MessageParticipant, message_id=pk, role="to", address=address)

    def meeting(
        self, uid: str, organizer: str, responses: dict[str, str], start: str, end: str, *, copies: list[str]
    ) -> None:
        for box in copies:
            self.n += 1
            pk = self.insert(
                Event,
                mailbox_pk=self.mailbox[box],
                graph_id=f"e{self.n}",
                ical_uid=uid,
                event_type="singleInstance",
                start=at(start),
                end=at(end),
                is_all_day=False,
                is_cancelled=False,
                is_online_meeting=True,
                organizer_address=organizer,
                seen_round=1,
            )
            self.insert(EventAttendee, event_id=pk, role="organizer", address=organizer, response="organizer")
            for address, response in responses.items():
                # Exchange keeps responses on the organizer's copy; attendees' copies say "none".
                shown = response if box == organizer else "none"
                self.insert(EventAttendee, event_id=pk, role="required", address=address, response=shown)

    def crm(self, entity_set: str, record_id: str, data: dict[str, Any], parent: str | None = None) -> None:
        self.insert(
            CrmRecord,
            tenant_pk=self.tenant_pk,
            entity_set=entity_set,
            record_id=record_id,
            parent_id=parent,
            data=json.dumps(data),
            synced_at=T,
        )


def worked_example(engine: Engine, tenant: TenantConfig) -> Rows:
    """kpis.md section 6: every copy a real mailbox would hold, and Ann's contact row in the CRM mirror."""
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL, DAN)
    rows.mail("m1", ANN, [BOB, CARL], "2026-03-01 09:00", "X", copies=[BOB, CARL])
    rows.mail("m2", BOB, [ANN], "2026-03-01 13:30", "X", copies=[BOB], in_reply_to="<m1@fabrikam.com>")
    rows.mail("m3", BOB, [ANN], "2026-03-02 10:00", "Y", copies=[BOB])
    people = {ANN: "accepted", CARL: "declined", DAN: "accepted"}
    rows.meeting("uid-4", BOB, people, "2026-03-05 10:00", "2026-03-05 11:00", copies=[BOB, CARL, DAN])
    rows.meeting("uid-5", ANN, {BOB: "none"}, "2026-03-12 15:00", "2026-03-12 15:30", copies=[BOB])
    rows.crm("contacts", ANN_ID, {"contactid": ANN_ID, "fullname": "Ann Smith", "emailaddress1": "Ann@Fabrikam.com"})
    return rows


@pytest.fixture
def tenant() -> TenantConfig:
    return tenant_config(dataverse_url="https://crm.test")


def stored(engine: Engine, as_of: datetime = T) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as conn:
        pk = conn.execute(select(func.min(table_of(KpiRun).c.tenant_pk))).scalar_one()
    return payloads_of(engine, pk, as_of)


def test_the_worked_example_from_database_rows(engine: Engine, tenant: TenantConfig) -> None:
    worked_example(engine, tenant)
    report = compute_tenant(engine, tenant, as_of=T)
    assert (report.activities, report.records, report.computed, report.reused) == (5, 1, 1, 0)
    assert (report.tier, report.accuracy, report.mode) == ("enhanced", "Complete", "incremental")
    # The job drops its source rows once activities are built, and still reports how many it read.
    kept = prepare(engine, tenant, T).inputs
    assert report.source_rows == len(kept.messages) + len(kept.events) + len(kept.phone_calls) >= 5
    ann = stored(engine)[("contact", ANN_ID)]
    assert (ann["emails_sent"], ann["emails_received"], ann["meetings_sent"], ann["meetings_received"]) == (2, 1, 1, 0)
    assert (ann["calls_made"], ann["calls_received"], ann["activities"]) == (0, 0, 4)
    assert (ann["time_spent_by_team_minutes"], ann["time_spent_by_customer_minutes"]) == (135, 70)
    assert ann["average_first_response_time_by_us_hours"] == 4.5 and ann["response_rate_by_us"] == 1.0
    assert ann["median_first_response_time_by_us_hours"] == 4.5
    assert ann["average_first_response_time_by_them_hours"] is None and ann["response_rate_by_them"] == 0.0
    assert ann["turns"] == {
        "customer": {"turns": 1, "judged": 1, "answered": 1},
        "ours": {"turns": 2, "judged": 2, "answered": 0},
    }
    assert ann["last_interaction"] == {
        "time": "2026-03-05T10:00:00+00:00",
        "kind": "meeting",
        "direction": "outgoing",
        "activity_key": "meeting:uid-4",
        "internal_party": BOB,
    }
    assert ann["next_interaction"]["time"] == "2026-03-12T15:00:00+00:00"
    assert ann["next_interaction"]["direction"] == "incoming"
    health = ann["health"]
    assert (health["score"], health["state"], health["trend"]) == (80, "Good", "Not enough info")
    assert health["parts"] == {"engagement": 1.0, "recency": 1.0, "reciprocity": 0.5, "responsiveness": 0.5}
    assert round(health["measures"]["volume"], 2) == 4.28 and round(health["measures"]["expected_volume"], 2) == 3.41
    assert round(health["measures"]["days_since_last"], 2) == 5.08
    assert ann["relationship_activities"] == {
        "2026-03-01": {k: int(k == "emails_sent") + int(k == "emails_received") for k in _COUNT_KEYS},
        "2026-03-02": {k: int(k == "emails_sent") for k in _COUNT_KEYS},
        "2026-03-05": {k: int(k == "meetings_sent") for k in _COUNT_KEYS},
    }
    assert [p["person"] for p in ann["top_contacts_theirs"]] == [f"contact:{ANN_ID}"]
    assert ann["top_contacts_ours"][0]["person"] == BOB and ann["link_reasons"] == {"contact-email": 4}


_COUNT_KEYS = ("emails_sent", "emails_received", "meetings_sent", "meetings_received", "calls_made", "calls_received")


def write_config(tmp_path: Path, engine: Engine, **tenant: str) -> Path:
    url = engine.url.render_as_string(hide_password=False)
    extra = "".join(f'{k} = "{v}"\n' for k, v in tenant.items())
    path = tmp_path / "relinsights.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n'
        '[[tenant]]\nname = "contoso"\ntenant_id = "11111111-2222-3333-4444-555555555555"\n'
        'client_id = "66666666-7777-8888-9999-000000000000"\ngraph_url = "https://graph.test/v1.0"\n'
        f'dataverse_url = "https://crm.test"\ninternal_domains = ["contoso.com"]\n{extra}'
        '[tenant.credential]\nsecret_env = "RELINSIGHTS_TEST_SECRET"\n'
    )
    return path


def test_compute_and_kpis_commands(engine: Engine, tenant: TenantConfig, tmp_path: Path) -> None:
    rows = worked_example(engine, tenant)
    rows.crm(
        "leads",
        LEAD_ID,
        {"leadid": LEAD_ID, "fullname": "Lee", "emailaddress1": "lee@northwind.example", "statecode": 0},
    )
    cfg = str(write_config(tmp_path, engine))
    res = runner.invoke(app, ["kpis", "show", ANN, "--config", cfg])
    assert res.exit_code == 1 and "relinsights compute --once" in res.stderr  # nothing computed yet

    res = runner.invoke(app, ["compute", "--once", "--as-of", "2026-03-10T12:00:00Z", "--json", "--config", cfg])
    assert res.exit_code == 0, res.output
    [report] = json.loads(res.stdout)
    assert (report["tenant"], report["records"], report["computed"]) == ("contoso", 1, 1)

    # --json prints every stored value under the payload's own keys, plus where and when it comes from.
    show = json.loads(runner.invoke(app, ["kpis", "show", " Ann@Fabrikam.com", "--json", "--config", cfg]).stdout)
    payload = stored(engine)[("contact", ANN_ID)]
    assert {k: show[k] for k in payload} == payload
    assert show["record"] == {"entity": "contact", "id": ANN_ID, "name": "Ann Smith"}
    assert (show["as_of"], show["accuracy"], show["linked"]) == ("2026-03-10T12:00:00+00:00", "Complete", True)
    assert (show["series_first_day"], show["series_last_day"]) == ("2026-01-10", "2026-03-10")
    by_id = json.loads(runner.invoke(app, ["kpis", "show", f"contact:{ANN_ID[:8]}", "--json", "--config", cfg]).stdout)
    assert by_id == show

    text = runner.invoke(app, ["kpis", "show", ANN_ID, "--config", cfg], env={"COLUMNS": "200"})
    assert text.exit_code == 0
    for widget in (
        "Contact Ann Smith",
        "health 80 Good",
        "time invested: team 135 min",
        "responses by us: mean 4.50 h, median 4.50 h, rate 100% (1/1 customer turns)",
        "responses by them: mean -, median -, rate 0% (0/2 of our turns)",
        "last interaction: 2026-03-05 10:00 UTC meeting sent (bob@contoso.com)",
        "next interaction: 2026-03-12 15:00 UTC meeting received",
        "top contacts (theirs): ann@fabrikam.com 4",
        "E 1.00 R 1.00 P 0.50 Q 0.50",
        "last 60 days: 2026-01-10 │",
    ):
        assert widget in text.stdout, widget

    lee = runner.invoke(app, ["kpis", "show", "lee@northwind.example", "--config", cfg])
    assert lee.exit_code == 0 and "no activity linked to this record" in lee.stdout
    missing = runner.invoke(app, ["kpis", "show", "nobody@nowhere.example", "--config", cfg])
    assert missing.exit_code == 1 and "no contact, lead, account or opportunity" in missing.stderr

    good = json.loads(runner.invoke(app, ["kpis", "list", "--state", "good", "--json", "--config", cfg]).stdout)
    assert [(r["id"], r["health_score"], r["name"]) for r in good] == [(ANN_ID, 80, "Ann Smith")]
    assert good[0]["reason"] == show["health"]["reason"]
    assert (
        json.loads(runner.invoke(app, ["kpis", "list", "--trend", "declining", "--json", "--config", cfg]).stdout) == []
    )
    bad = runner.invoke(app, ["kpis", "list", "--state", "great", "--config", cfg])
    assert bad.exit_code == 2


def test_rerunning_an_as_of_replaces_it_and_time_moves_the_values(engine: Engine, tenant: TenantConfig) -> None:
    worked_example(engine, tenant)
    first = compute_tenant(engine, tenant, as_of=T)
    again = compute_tenant(engine, tenant, as_of=T)
    assert (first.computed, again.computed, again.reused) == (1, 1, 0)
    assert first.recomputed == again.recomputed == {"new": 1}  # (no run dated before T)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table_of(KpiSnapshot))).scalar_one() == 1
    # A day later the health decays and #5 is still scheduled: recomputed, and equal to a full computation.
    later = compute_tenant(engine, tenant, as_of=T + timedelta(days=1))
    assert (later.computed, later.reused, later.recomputed) == (1, 0, {"time": 1})
    with engine.connect() as conn:
        details = conn.execute(select(table_of(KpiRun).c.details).where(table_of(KpiRun).c.id == later.run_id))
        assert json.loads(details.scalar_one())["recomputed"] == {"time": 1}  # kept with the run's history
    assert compute_tenant(engine, tenant, as_of=T + timedelta(days=1), full=True).recomputed == {"full": 1}
    full = compute_payloads(engine, tenant, T + timedelta(days=1))
    assert {(str(r.entity), r.id): p for r, p in full.items()} == stored(engine, T + timedelta(days=1))


def test_a_run_that_fails_writes_nothing_and_leaves_the_as_of_as_it_was(
    engine: Engine, tenant: TenantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's snapshots go into its one transaction as they are computed (on PostgreSQL, by a thread beside
    the KPIs): a run that fails once some are written, or whose writes fail, leaves the as-of's earlier run
    whole and adds no run."""
    rows = worked_example(engine, tenant)
    rows.crm("contacts", ZOE_ID, {"contactid": ZOE_ID, "fullname": "Zoe Lee", "emailaddress1": ZOE})
    rows.mail("z1", ZOE, [BOB], "2026-03-03 09:00", "Z", copies=[BOB])
    first = compute_tenant(engine, tenant, as_of=T)
    before = stored(engine)
    assert set(before) == {("contact", ANN_ID), ("contact", ZOE_ID)}

    def runs() -> list[int]:
        with engine.connect() as conn:
            return list(conn.execute(select(table_of(KpiRun).c.id)).scalars())

    monkeypatch.setattr(store, "SNAPSHOT_CHUNK", 1)  # (each row its own chunk: written before the next is made)
    payload, made = job.kpi_payload, []

    def the_second_fails(k: RecordKpis) -> bytes:
        made.append(k.record)
        if len(made) == 2:
            raise RuntimeError("no payload for the second record")
        return payload(k)

    monkeypatch.setattr(job, "kpi_payload", the_second_fails)
    with pytest.raises(RuntimeError, match="second record"):
        compute_tenant(engine, tenant, as_of=T, full=True)
    assert stored(engine) == before and runs() == [first.run_id]

    monkeypatch.setattr(job, "kpi_payload", payload)

    def the_disk_is_full(self: store.RunWriter, rows: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.RunWriter, "_insert", the_disk_is_full)
    with pytest.raises(OSError, match="disk full"):
        compute_tenant(engine, tenant, as_of=T, full=True)
    assert stored(engine) == before and runs() == [first.run_id]


def test_the_run_writer_stores_each_row_as_given(engine: Engine, tenant: TenantConfig) -> None:
    """The snapshots' write (on PostgreSQL a COPY, on SQLite an INSERT a row) keeps every value as it was
    given: text that COPY's format escapes (tabs, newlines, backslashes, "\\N"), no value, times."""
    tenant_pk = ensure_tenant(engine, tenant).id
    assert tenant_pk is not None
    payloads = SpilledBytes()
    texts = ['{"a": "tab\there"}', '{"b": "line\nbreak \\ back\\slash \\N"}', '{"c": "Zoë \u2603"}', "{}"]
    written = [
        store.SnapshotRow(
            "contact",
            f"c{n}",
            payloads.append(value.encode()),
            f"f{n}",
            T + timedelta(days=n) if n % 2 else None,
            n,
            T - timedelta(hours=n) if n % 2 else None,
            n * 10 if n % 2 else None,
            "Good" if n % 2 else None,
            "Declining" if n % 2 else None,
            payloads,
        )
        for n, value in enumerate(texts)
    ]
    with store.RunWriter(engine, tenant_pk, T, T, "Complete") as writer:
        for row in written:
            writer.add(row)
        writer.finish(store.RunRecord(datetime.now(UTC), "full", "enhanced", 0, 0, len(texts), {}), [])
    names = ("record_id", "fingerprint", "stable_until", "activities", "last_interaction_at", "health_score",
             "health_state", "health_trend", "payload")
    c = table_of(KpiSnapshot).c
    with engine.connect() as conn:
        back = conn.execute(select(*(c[n] for n in names)).order_by(c.record_id)).all()
    assert [tuple(r) for r in back] == [
        tuple(r.payload.decode() if n == "payload" else getattr(r, n) for n in names) for r in written
    ]
    payloads.close()


def test_a_quiet_record_is_reused_until_time_moves_one_of_its_values(engine: Engine, tenant: TenantConfig) -> None:
    """A closed lead gets no health score: its values only step at breakpoints (here, the 60-day series)."""
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB)
    rows.crm("leads", LEAD_ID, {"leadid": LEAD_ID, "emailaddress1": "lee@northwind.example", "statecode": 2})
    rows.mail("l1", BOB, ["lee@northwind.example"], "2026-02-01 09:00", "L", copies=[BOB])
    rows.mail("l2", "lee@northwind.example", [BOB], "2026-02-01 11:00", "L", copies=[BOB])
    runs = [compute_tenant(engine, tenant, as_of=T + timedelta(days=d)) for d in (0, 1, 2, 25)]
    assert [(r.computed, r.reused) for r in runs] == [(1, 0), (0, 1), (0, 1), (1, 0)]  # 02-01 left the series
    assert [r.recomputed for r in runs] == [{"new": 1}, {}, {}, {"time": 1}]
    for d in (2, 25):
        full = compute_payloads(engine, tenant, T + timedelta(days=d))
        assert {(str(r.entity), r.id): p for r, p in full.items()} == stored(engine, T + timedelta(days=d))
    assert stored(engine, T + timedelta(days=25))[("lead", LEAD_ID)]["relationship_activities"] == {}
    # A new email changes the lead's inputs.
    rows.mail("l3", BOB, ["lee@northwind.example"], "2026-02-26 09:00", "L", copies=[BOB])
    assert compute_tenant(engine, tenant, as_of=T + timedelta(days=26)).recomputed == {"inputs": 1}
    # An input change (a new email) is seen at once.
    rows.mail("l3", BOB, ["lee@northwind.example"], "2026-04-05 09:00", "L", copies=[BOB])
    assert compute_tenant(engine, tenant, as_of=T + timedelta(days=26)).computed == 1


def test_a_failing_mailbox_makes_the_computation_partial(engine: Engine, tenant: TenantConfig) -> None:
    rows = worked_example(engine, tenant)
    rows.mailboxes("erin@contoso.com", status="throttled")
    report = compute_tenant(engine, tenant, as_of=T)
    assert report.accuracy == "Partial" and report.failed_mailboxes == ["erin@contoso.com"]
    with engine.connect() as conn:
        assert conn.execute(select(table_of(KpiSnapshot).c.accuracy)).scalars().all() == ["Partial"]


def test_the_daily_computation_is_due_once_per_day_after_the_data_is_there(
    engine: Engine, tenant: TenantConfig
) -> None:
    rows = worked_example(engine, tenant)
    row = ensure_tenant(engine, tenant)
    now = at("2026-03-10 01:00")
    assert daily_slot(now, tenant) == at("2026-03-09 02:00")
    assert daily_slot(at("2026-03-10 02:00"), tenant) == at("2026-03-10 02:00")
    assert not compute_due(engine, tenant, row, now)  # the CRM was never mirrored
    from relinsights.crm.mirror import SETS

    for spec in SETS:
        rows.insert(CrmCursor, tenant_pk=rows.tenant_pk, entity_set=spec.entity_set, delta_link="", completed_at=now)
    assert compute_due(engine, tenant, row, now)  # the first run: as soon as the data is there
    compute_tenant(engine, tenant, as_of=T)  # started_at is the wall clock, later than any slot below
    assert not compute_due(engine, tenant, row, datetime.now(UTC))
    assert compute_due(engine, tenant, row, datetime.now(UTC) + timedelta(days=1))
    paris = tenant.model_copy(update={"timezone": "Europe/Paris"})
    assert daily_slot(at("2026-03-10 01:30"), paris) == at("2026-03-10 01:00")  # 02:00 in Paris
    assert not compute_due(engine, tenant.model_copy(update={"dataverse_url": None}), row, now)


@pytest.fixture
def daemon(sqlite_engine: Engine, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon on `sqlite_engine` with one tenant, contoso (not started: tests drive its ticks)."""
    made = Daemon(write_config(tmp_path, sqlite_engine))
    yield made
    made.engine.dispose()
    if made._lock is not None:
        made._lock.close()


def test_the_daemon_schedules_the_computation_and_runs_it_once_when_due(
    sqlite_engine: Engine, tenant: TenantConfig, daemon: Daemon
) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from relinsights.crm.mirror import SETS

    rows = worked_example(sqlite_engine, tenant)
    scheduler = AsyncIOScheduler()
    daemon._schedule(scheduler)
    assert "compute:contoso" in {job.id for job in scheduler.get_jobs()}
    configured = daemon.cfg.tenants[0]

    async def tick() -> None:
        daemon.stopping = asyncio.Event()
        await daemon._compute_tick(configured)

    def runs() -> int:
        with sqlite_engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table_of(KpiRun))).scalar_one())

    asyncio.run(tick())
    assert runs() == 0  # the CRM mirror has not run yet: nothing to compute
    for spec in SETS:
        rows.insert(CrmCursor, tenant_pk=rows.tenant_pk, entity_set=spec.entity_set, delta_link="", completed_at=T)
    asyncio.run(tick())
    asyncio.run(tick())
    assert runs() == 1  # the first run, then nothing until tomorrow's kpi.compute_at


def test_the_daemon_computes_in_a_process_of_its_own(sqlite_engine: Engine, tenant: TenantConfig) -> None:
    worked_example(sqlite_engine, tenant)
    report = asyncio.run(compute_in_child(sqlite_engine, tenant, ServiceConfig(), LoggingConfig(level="warning")))
    assert (report.computed, report.recomputed) == (1, {"new": 1})
    full = compute_payloads(sqlite_engine, tenant, report.as_of)
    assert {(str(r.entity), r.id): p for r, p in full.items()} == stored(sqlite_engine, report.as_of)


def _loaded_by(modules: str, packages: set[str]) -> list[str]:
    """Which of `packages` a fresh interpreter holds after importing `modules` (comma-separated)."""
    import subprocess
    import sys

    probe = f"import json, sys, {modules}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {packages!r})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(loaded.stdout))


def test_the_daemon_leaves_the_column_engine_to_its_computation_process() -> None:
    assert _loaded_by("relinsights.daemon", {"polars", "numpy"}) == []  # (about 60 MiB and a second of start-up)


def test_the_computation_process_leaves_the_sync_stack_to_the_daemon() -> None:
    # What the computation's process imports (compute/child.py's target, and the job it runs): about 55 MiB
    # less held through every step of a run.
    sync_stack = {"msgraph", "kiota_http", "msal", "httpx", "azure", "alembic", "mako", "scipy"}
    assert _loaded_by("relinsights.compute.child, relinsights.compute.job", sync_stack) == []


def dies(_out: Connection, code: int) -> None:
    os._exit(code)  # as the kernel's out-of-memory killer would leave it: no answer


def sleeps(_out: Connection, pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def test_a_computation_process_that_fails_or_dies_says_so(tmp_path: Path, tenant: TenantConfig) -> None:
    never_migrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ComputeFailed, match=r"KPI computation of contoso failed: .*no such table"):
        asyncio.run(compute_in_child(never_migrated, tenant, ServiceConfig(), LoggingConfig(level="warning")))
    never_migrated.dispose()
    with pytest.raises(ComputeFailed, match=r"dying ended without a result: its process exited with code 3 ") as died:
        asyncio.run(run_in_child("dying", dies, 3))
    assert died.value.exitcode == 3


def test_stopping_the_daemon_kills_its_computation_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def start_then_cancel() -> None:
        task = asyncio.create_task(run_in_child("sleeping", sleeps, str(pid_file)))
        while not pid_file.exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(start_then_cancel())  # (returns once the waiting thread has reaped the process)
    assert time.monotonic() - started < 60
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_computation_stopped_with_the_daemon_is_no_failure(
    sqlite_engine: Engine, tenant: TenantConfig, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relinsights.crm.mirror import SETS

    rows = worked_example(sqlite_engine, tenant)
    for spec in SETS:
        rows.insert(CrmCursor, tenant_pk=rows.tenant_pk, entity_set=spec.entity_set, delta_link="", completed_at=T)
    configured = daemon.cfg.tenants[0]

    def lease() -> tuple[int, str | None]:
        with sqlite_engine.connect() as conn:
            found = conn.execute(
                select(table_of(WorkLease).c.attempts, table_of(WorkLease).c.last_error).where(
                    table_of(WorkLease).c.unit == "compute:contoso"
                )
            ).one()
        return int(found[0]), found[1]

    def killed(stop: bool, code: int) -> Any:
        async def run(*_args: Any) -> None:
            if stop:
                daemon.stopping.set()  # as SIGTERM does, reaching the daemon and its computation together
            raise ComputeFailed(f"KPI computation of contoso ended: its process exited with code {code}", code)

        return run

    async def tick() -> None:
        daemon.stopping = asyncio.Event()
        await daemon._compute_tick(configured)

    monkeypatch.setattr("relinsights.daemon.compute_in_child", killed(stop=True, code=-9))
    asyncio.run(tick())
    assert lease() == (0, None)  # released cleanly: computed again at the next start, no backoff
    # SIGTERM may reach the computation before the daemon has seen it: the same.
    monkeypatch.setattr("relinsights.daemon.compute_in_child", killed(stop=False, code=-15))
    asyncio.run(tick())
    assert lease() == (0, None)
    monkeypatch.setattr("relinsights.daemon.compute_in_child", killed(stop=False, code=-9))
    asyncio.run(tick())
    attempts, error = lease()
    assert attempts == 1 and error is not None and "exited with code -9" in error  # a failure: backs off


def test_the_daemon_computes_one_tenant_at_a_time(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    contoso = daemon.cfg.tenants[0]
    tenants = [contoso, contoso.model_copy(update={"name": "fabrikam"})]
    running: list[str] = []
    overlaps: list[list[str]] = []

    async def compute(
        _engine: Engine, tenant: TenantConfig, _service: ServiceConfig, _logging: LoggingConfig
    ) -> ComputeReport:
        running.append(tenant.name)
        overlaps.append(list(running))
        await asyncio.sleep(0.2)
        running.remove(tenant.name)
        return ComputeReport(tenant.name, T, "incremental", "enhanced", "Complete")

    async def nothing(_tenant: TenantConfig) -> None:
        return None

    monkeypatch.setattr("relinsights.daemon.compute_in_child", compute)
    monkeypatch.setattr(daemon, "_compute_due", lambda _tenant: True)
    monkeypatch.setattr(daemon, "_writeback_tick", nothing)

    async def both() -> None:
        daemon.stopping = asyncio.Event()
        await asyncio.gather(*(daemon._compute_tick(t) for t in tenants))

    asyncio.run(both())
    assert sorted(o[0] for o in overlaps) == ["contoso", "fabrikam"]  # both computed,
    assert all(len(o) == 1 for o in overlaps)  # never side by side


def test_the_migrations_create_the_kpi_tables_exactly_as_the_models_say(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_retention_prunes_old_snapshots_but_keeps_the_latest(engine: Engine, tenant: TenantConfig) -> None:
    from relinsights.retention import prune

    worked_example(engine, tenant)
    for d in (0, 1, 2):
        compute_tenant(engine, tenant, as_of=T + timedelta(days=d))

    def as_ofs() -> list[datetime]:
        with engine.connect() as conn:
            return sorted(conn.execute(select(KpiSnapshot.as_of)).scalars())  # type: ignore[arg-type]

    assert len(as_ofs()) == 3
    # A year and half a day after the first run, only the first snapshot is out of the lookback window.
    pruned = prune(engine, tenant, T + timedelta(days=tenant.sync.lookback_days, hours=12))
    assert pruned.snapshots >= 1 and len(as_ofs()) == 2  # (plus any weekly similar-won rows as old)
    # Years later everything is old, but the latest snapshot stays: incremental runs and `kpis show` need it.
    prune(engine, tenant, T + timedelta(days=3000))
    assert [a.date() for a in as_ofs()] == [(T + timedelta(days=2)).date()]


def readers_started(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command lines of the reader processes started from now on (they start as they did)."""
    commands: list[list[str]] = []
    popen = bulk_read.subprocess.Popen

    def spy(args: list[str], **kwargs: Any) -> Any:
        commands.append(list(args))
        return popen(args, **kwargs)

    monkeypatch.setattr(bulk_read.subprocess, "Popen", spy)
    return commands


def test_a_large_read_gives_its_children_the_database_on_stdin_and_never_shows_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL URI may hold a password: it reaches the reader processes on their standard input, not
    on their command lines (any local user can list those), and a failed read names the database with the
    password hidden."""
    commands = readers_started(monkeypatch)
    secret = "s3cret-Pa55"
    location = f"postgresql://relinsights:{secret}@127.0.0.1:9/nowhere"  # port 9: nothing listens
    shown = "postgresql://relinsights:***@127.0.0.1:9/nowhere"
    with pytest.raises(RuntimeError) as failed, ExitStack() as started:
        queries = [Query("SELECT 1", ["one"]), Query("SELECT 2", ["two"])]
        list(bulk_read._start_in_processes(started, location, shown, queries)())
    assert len(commands) == min(bulk_read.READERS, 2)
    assert not any(secret in arg for command in commands for arg in command)
    assert str(failed.value).startswith(f"reading {shown} failed: ")
    assert secret not in str(failed.value)


def test_the_readers_keep_the_memory_a_part_frees_for_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader processes run with polars' allocator keeping freed memory (one arena, no decay), not with the
    run's own setting (returned at once, which the children would inherit), and otherwise the run's environment."""
    monkeypatch.setenv("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
    monkeypatch.setenv("RELINSIGHTS_TEST_MARK", "kept")
    envs: list[dict[str, str]] = []
    popen = bulk_read.subprocess.Popen

    def spy(args: list[str], **kwargs: Any) -> Any:
        envs.append(kwargs["env"])
        return popen(args, **kwargs)

    monkeypatch.setattr(bulk_read.subprocess, "Popen", spy)
    db = _numbers_db(tmp_path / "read.db", 10)
    with ExitStack() as started:
        rows = list(bulk_read._start_in_processes(started, str(db), str(db), [Query("SELECT x FROM t", ["x"])])())
    assert rows[0].get_column("x").to_list() == list(range(10))
    assert envs and all(env["_RJEM_MALLOC_CONF"] == "narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:0" for env in envs)
    assert all(env["RELINSIGHTS_TEST_MARK"] == "kept" and env["PATH"] == os.environ["PATH"] for env in envs)
    assert os.environ["_RJEM_MALLOC_CONF"] == "dirty_decay_ms:0,muzzy_decay_ms:0"  # (this process's unchanged)


def test_an_admins_allocator_setting_reaches_the_readers_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's environment set `_RJEM_MALLOC_CONF` before relinsights loaded: the readers run with it, as
    the run does, not with their own."""
    import relinsights

    monkeypatch.setenv("_RJEM_MALLOC_CONF", "dirty_decay_ms:500,muzzy_decay_ms:1000,narenas:2")  # (as polars left it)
    monkeypatch.setattr(relinsights, "ADMIN_MALLOC_CONF", "narenas:2")
    assert bulk_read.reader_env()["_RJEM_MALLOC_CONF"] == "narenas:2"
    monkeypatch.setattr(relinsights, "ADMIN_MALLOC_CONF", None)
    assert bulk_read.reader_env()["_RJEM_MALLOC_CONF"] == bulk_read.READER_MALLOC_CONF


def _numbers_db(path: Path, n: int) -> Path:
    import sqlite3

    make_engine(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE t (x INTEGER)")
        raw.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(n)])
    return path


def test_the_readers_of_a_large_read_share_its_parts_and_read_each_once(tmp_path: Path) -> None:
    """Readers started on the same parts each take the next part no other has taken: every part is read,
    and by one reader only (both readers' reports of what they wrote, taken together). The columns a part
    names are written as categoricals of the read's categories, the others as they are."""
    db = _numbers_db(tmp_path / "read.db", 40)
    tasks = [
        arg
        for j in range(8)
        for arg in (
            str(tmp_path / f"part-{j}"),
            "1" if j % 2 else "",
            f"SELECT x, 'v' || x AS v FROM t WHERE x % 8 = {j}",
        )
    ]
    children = [
        bulk_read.subprocess.Popen(
            [sys.executable, "-P", bulk_read._READER, *tasks], stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        for _ in range(2)
    ]
    told = [child.communicate(str(db).encode())[0].decode().split() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sorted(told[0] + told[1]) == sorted(tasks[0::3])  # (each part once: no part told twice)
    parts = [pl.read_parquet(f).sort("x") for f in tasks[0::3]]
    assert [p.get_column("x").to_list() for p in parts] == [list(range(j, 40, 8)) for j in range(8)]
    assert [p.get_column("v").cast(pl.String).to_list() for p in parts] == [
        [f"v{x}" for x in range(j, 40, 8)] for j in range(8)
    ]
    assert [p.schema["v"] for p in parts] == [bulk_read.CODED if j % 2 else pl.String() for j in range(8)]


def test_a_large_read_gives_each_part_as_soon_as_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part's rows come (and are made ready) once its reader has written them, while the readers are still
    at the next parts: a reader here writes its second part only once this process has taken the first."""
    reader, go = tmp_path / "reader.py", tmp_path / "go"
    reader.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            import polars as pl
            sys.stdin.read()
            for j, output in enumerate(sys.argv[1::3]):
                deadline = time.monotonic() + 20
                while j and not Path({str(go)!r}).exists():  # (the test's process has the first part)
                    if time.monotonic() > deadline:
                        sys.exit("the first part was not taken while this reader ran")
                    time.sleep(0.01)
                pl.DataFrame({{"x": [j]}}).write_parquet(output)
                print(output, flush=True)
            """
        )
    )
    monkeypatch.setattr(bulk_read, "_READER", str(reader))
    monkeypatch.setattr(bulk_read, "READERS", 1)
    ready: list[int] = []

    def take(part: pl.DataFrame) -> pl.DataFrame:
        ready.append(part.item())
        go.touch()
        return part

    with ExitStack() as started:
        rows = bulk_read._start_in_processes(started, "unused", "unused", [Query(["first", "second"], ["x"], take)])
        (frame,) = rows()
    assert ready == [0, 1] and frame.to_series().to_list() == [0, 1]


def test_a_failed_part_of_a_large_read_is_an_error_naming_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that fails ends the read with the reader's error, its database named; the other readers are
    stopped and the read's files removed."""
    monkeypatch.setattr(bulk_read.tempfile, "tempdir", str(tmp_path))
    db = _numbers_db(tmp_path / "read.db", 5)
    with (
        pytest.raises(RuntimeError, match=r"(?s)reading .*read\.db failed: .*no such table: missing"),
        ExitStack() as s,
    ):
        queries = [Query("SELECT x FROM t", ["x"]), Query(["SELECT x FROM t", "SELECT y FROM missing"], ["y"])]
        list(bulk_read._start_in_processes(s, str(db), str(db), queries)())
    assert not list(tmp_path.glob("relinsights-read-*"))


def test_a_reader_that_dies_without_a_word_is_an_error_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader killed (by the kernel's out-of-memory killer, say) writes no error: the read says how it ended."""
    reader = tmp_path / "reader.py"
    reader.write_text("import os, signal, sys\nsys.stdin.read()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setattr(bulk_read, "_READER", str(reader))
    with pytest.raises(RuntimeError, match=r"^reading db failed: a reader ended with -9$"), ExitStack() as started:
        list(bulk_read._start_in_processes(started, "db", "db", [Query("SELECT 1", ["one"])])())


def test_readers_started_before_one_fails_to_start_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    popen, started = bulk_read.subprocess.Popen, []

    def second_fails(args: list[str], **kwargs: Any) -> Any:
        if started:
            raise OSError("no more processes")
        started.append(popen([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs))
        return started[-1]

    monkeypatch.setattr(bulk_read.subprocess, "Popen", second_fails)
    with pytest.raises(OSError, match="no more processes"), ExitStack() as reads:
        bulk_read._start_in_processes(reads, "db", "db", [Query("SELECT 1", ["one"]), Query("SELECT 2", ["two"])])
    assert len(started) == 1 and started[0].returncode == -9


@pytest.mark.parametrize("recipients", ["joined", "alone"])
@pytest.mark.parametrize("reader", ["small", "large"])
def test_messages_read_each_with_its_own_recipients(
    engine: Engine, tenant: TenantConfig, reader: str, recipients: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader reads messages and their recipients as two frames: each message gets exactly its own
    To/Cc, in stored order, however mailboxes and the stored rows of messages interleave, and never those of
    a draft or of mail older than the window. Both ways a database is read (SQLite: a large read in child
    processes with ADBC's driver, a small one through sqlite3) give the same rows, read in parts of two
    message ids; so do both ways of reading the recipients (joined to their messages in the window, or by
    message id alone: then a draft's and old mail's are read too, and left out)."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    monkeypatch.setattr(bulk_read, "RANGE_IDS", 2)
    monkeypatch.setattr(load, "OUTSIDE_SHARE", 1.0 if recipients == "alone" else -1.0)
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)

    def message(box: str, graph_id: str, when: str, parts: list[tuple[str, str]], draft: bool = False) -> int:
        pk = rows.insert(
            Message,
            mailbox_pk=rows.mailbox[box],
            graph_id=graph_id,
            internet_message_id=f"<{graph_id}@fabrikam.com>",
            from_address=ANN,
            sender_address=ANN,
            sent_at=at(when),
            is_draft=draft,
            seen_round=1,
        )
        for role, address in parts:
            rows.insert(MessageParticipant, message_id=pk, role=role, address=address)
        return pk

    message(BOB, "old", "2024-01-01 09:00", [("to", "leak-old@x.com")])  # before the window
    message(BOB, "m1", "2026-03-01 09:00", [("to", BOB), ("cc", CARL), ("to", DAN), ("bcc", "b@x.com")])
    message(CARL, "draft", "2026-03-01 10:00", [("to", "leak-draft@x.com")], draft=True)
    message(CARL, "m2", "2026-03-01 11:00", [])
    message(BOB, "m3", "2026-03-02 09:00", [("cc", BOB)])
    message(CARL, "m4", "2026-03-03 09:00", [("to", CARL), ("to", BOB)])
    # Two messages whose recipients were stored alternately (rows of a later message before an earlier one's).
    m5, m6 = (message(BOB, g, "2026-03-04 09:00", []) for g in ("m5", "m6"))
    for pk, role, address in [(m6, "to", DAN), (m5, "cc", DAN), (m6, "to", CARL), (m5, "to", BOB), (m5, "cc", CARL)]:
        rows.insert(MessageParticipant, message_id=pk, role=role, address=address)

    messages = prepare(engine, tenant, T).inputs.messages
    got = {m.internet_message_id: (m.mailbox, m.to, m.cc, m.bcc) for m in messages.objects()}
    # Bcc is not even read: it never makes a participant.
    assert got == {
        "<m1@fabrikam.com>": (BOB, (BOB, DAN), (CARL,), ()),
        "<m2@fabrikam.com>": (CARL, (), (), ()),
        "<m3@fabrikam.com>": (BOB, (), (BOB,), ()),
        "<m4@fabrikam.com>": (CARL, (CARL, BOB), (), ()),
        "<m5@fabrikam.com>": (BOB, (BOB,), (DAN, CARL), ()),
        "<m6@fabrikam.com>": (BOB, (DAN, CARL), (), ()),
    }
    assert len(messages) == 6
    # Addresses (and roles) come as the read's categories, however the database was read.
    coded = [messages.messages.schema[c] for c in ("mailbox", "from_address", "sender_address")]
    assert coded + [messages.recipients.schema[c] for c in ("role", "address")] == [mail_frames.CODED] * 5
    readers = pl.Categorical(pl.Categories(*read_process.CATEGORIES))  # (what the reader processes write)
    assert readers == mail_frames.CODED
    leaks = {"leak-old@x.com", "leak-draft@x.com"}
    read = set(messages.recipients.get_column("address").to_list())
    assert (read & leaks == leaks) if recipients == "alone" else not read & leaks
    assert sorted(messages.messages.get_column("sent").to_list()) == [
        us(at(w))
        for w in (
            "2026-03-01 09:00",
            "2026-03-01 11:00",
            "2026-03-02 09:00",
            "2026-03-03 09:00",
            "2026-03-04 09:00",
            "2026-03-04 09:00",
        )
    ]


def test_recipients_are_read_without_their_messages_only_where_that_reads_few_more(
    engine: Engine, tenant: TenantConfig
) -> None:
    """By message id alone only when every mailbox of the database is one of the tenant's in scope and at most
    a tenth of its messages were sent before the window or never; otherwise joined to the window's messages."""
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)
    since = T - timedelta(days=365)
    for n in range(10):
        rows.mail(f"m{n}", ANN, [BOB], "2026-03-01 09:00", "X", copies=[BOB])

    def alone() -> bool:
        with engine.connect() as conn:
            hint = conn.execute(select(func.max(table_of(Message).c.id))).scalar_one()
            scoped = {m.pk: m for m in load._mailboxes(conn, rows.tenant_pk, tenant) if m.in_scope}
            return load._every_mailbox_scoped(conn, scoped) and load._few_outside(conn, since, hint)

    assert alone()
    rows.mail("old", ANN, [BOB], "2024-01-01 09:00", "X", copies=[BOB])  # 1 of 11 messages outside: 9%
    assert alone()
    rows.insert(Message, mailbox_pk=rows.mailbox[BOB], graph_id="draft", is_draft=True, seen_round=1)  # never sent
    assert not alone()  # 2 of 12
    with engine.begin() as conn:
        conn.execute(table_of(Message).delete().where(table_of(Message).c.graph_id == "draft"))
    assert alone()
    with engine.begin() as conn:  # a mailbox left out of scope: its mail is not the read's
        conn.execute(table_of(Mailbox).update().where(table_of(Mailbox).c.address == CARL).values(in_scope=False))
    assert not alone()
    with engine.begin() as conn:
        conn.execute(table_of(Mailbox).update().values(in_scope=True))
    assert alone()
    other = Rows(engine, tenant_config(name="other"))  # another tenant's mailbox in the same database
    other.mailboxes("eve@northwind.com")
    assert not alone()


@pytest.mark.parametrize("reader", ["small", "large"])
def test_a_read_that_takes_every_mailbox_as_scoped_leaves_out_the_rows_of_one_that_is_not(
    engine: Engine, tenant: TenantConfig, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where every mailbox stored is one of the scoped ones, the reads do not test each row's mailbox. A mailbox
    stored between that count and the read (here: the count told so while one is out of scope) has its mail
    and meetings left out as the rows are made, and the KPIs are those of the scoped mailboxes alone."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    rows = worked_example(engine, tenant)
    expected = compute_payloads(engine, tenant, T)
    rows.mailboxes("eve@contoso.com")
    rows.mail("m9", ANN, ["eve@contoso.com"], "2026-03-03 09:00", "Z", copies=["eve@contoso.com"])
    rows.meeting(
        "uid-9",
        "eve@contoso.com",
        {ANN: "accepted"},
        "2026-03-06 10:00",
        "2026-03-06 11:00",
        copies=["eve@contoso.com"],
    )
    with engine.begin() as conn:
        conn.execute(
            table_of(Mailbox).update().where(table_of(Mailbox).c.address == "eve@contoso.com").values(in_scope=False)
        )
    windows: list[str] = []
    real_window = load._window

    def window(*args: Any) -> str:
        windows.append(sql := real_window(*args))
        return sql

    monkeypatch.setattr(load, "_window", window)
    monkeypatch.setattr(load, "_every_mailbox_scoped", lambda conn, scoped: True)
    inputs = prepare(engine, tenant, T).inputs
    assert windows and not any("mailbox" in sql for sql in windows)  # (no test of the rows' mailboxes)
    owners = [
        copies.get_column("mailbox").cast(pl.String).to_list()
        for copies in (inputs.messages.messages, inputs.events.events)
    ]
    assert set(owners[0]) == {BOB, CARL} and set(owners[1]) == {BOB, CARL, DAN}  # (none null, none Eve's)
    assert compute_payloads(engine, tenant, T) == expected
    monkeypatch.setattr(load, "_every_mailbox_scoped", lambda conn, scoped: False)
    windows.clear()
    assert compute_payloads(engine, tenant, T) == expected
    assert windows and all("mailbox" in sql for sql in windows)


def test_recipients_read_alone_or_joined_give_the_same_kpis(
    engine: Engine, tenant: TenantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A draft and old mail to the contact, their recipients read too when read by message id alone, change no
    KPI: the activity build leaves them out."""
    rows = worked_example(engine, tenant)
    rows.mail("old", BOB, [ANN], "2024-01-01 09:00", "Z", copies=[BOB])
    pk = rows.insert(Message, mailbox_pk=rows.mailbox[BOB], graph_id="draft", is_draft=True, seen_round=1)
    rows.insert(MessageParticipant, message_id=pk, role="to", address=ANN)
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0)  # (the large read: the one the benchmark's tenant takes)
    payloads = {}
    for share in (-1.0, 1.0):
        monkeypatch.setattr(load, "OUTSIDE_SHARE", share)
        payloads[share] = compute_payloads(engine, tenant, T)
    assert payloads[1.0] == payloads[-1.0]
    assert payloads[1.0][RecordRef(Entity.CONTACT, ANN_ID)]["emails_sent"] == 2


def test_the_mail_and_the_calendars_of_a_large_read_share_its_reader_processes(
    engine: Engine, tenant: TenantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One large read takes the mail and the calendars (each reader costs about 0.3 s of CPU to start): READERS
    processes in all, not READERS a table, and the KPIs are those of the small read."""
    worked_example(engine, tenant)
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 10**9)
    small = compute_payloads(engine, tenant, T)
    started = readers_started(monkeypatch)
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0)
    monkeypatch.setattr(bulk_read, "RANGE_IDS", 2)  # (parts enough for every reader)
    large = compute_payloads(engine, tenant, T)
    assert len(started) == bulk_read.READERS
    read = " ".join(arg for command in started for arg in command)
    assert "FROM message m" in read and "FROM event e" in read  # (every reader has every query's parts)
    assert large == small and any(p["meetings_sent"] + p["meetings_received"] for p in large.values())


@pytest.mark.parametrize("reader", ["small", "large"])
def test_conversation_ids_are_read_as_tokens_that_group_the_messages_as_the_ids_do(
    engine: Engine, tenant: TenantConfig, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conversation ids are only compared: the read gives each a short token of its own (from hashes made as
    each part is read), equal exactly where the ids are equal, also across parts and mailboxes; none for a
    message without one (NULL or empty)."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    monkeypatch.setattr(bulk_read, "RANGE_IDS", 2)
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)
    conversations = ["AAQk-1", "AAQk-2", "AAQk-1", None, "aaqk-1", "", "AAQk-2", "AAQk-1 ", "AAQk-1"]
    pks = [
        rows.insert(
            Message,
            mailbox_pk=rows.mailbox[(BOB, CARL)[i % 2]],
            graph_id=f"g{i}",
            internet_message_id=f"<m{i}@fabrikam.com>",
            conversation_id=conv,
            from_address=ANN,
            sender_address=ANN,
            sent_at=at("2026-03-01 09:00") + timedelta(hours=i),
            is_draft=False,
            seen_round=1,
        )
        for i, conv in enumerate(conversations)
    ]
    read = dict(prepare(engine, tenant, T).inputs.messages.messages.select("m", "conversation_id").iter_rows())
    tokens = [read[pk] for pk in pks]
    assert [t is None for t in tokens] == [not c for c in conversations]
    assert all(isinstance(t, str) and len(t) <= 12 for t in tokens if t is not None)  # (held in place by polars)
    pairs = [(c, t) for c, t in zip(conversations, tokens, strict=True) if c]
    assert all((a == c) == (b == d) for a, b in pairs for c, d in pairs)
    assert len({t for _, t in pairs}) == 4  # AAQk-1, AAQk-2, aaqk-1 and "AAQk-1 " are four conversations


def sent_copy(rows: Rows, box: str, graph_id: str, message_id: str | None, to: tuple[str, ...]) -> int:
    """A copy of a message from Ann in `box`, sent 2026-03-01 09:00 to `to`: its row id."""
    pk = rows.insert(
        Message,
        mailbox_pk=rows.mailbox[box],
        graph_id=graph_id,
        internet_message_id=message_id,
        from_address=ANN,
        sender_address=ANN,
        sent_at=at("2026-03-01 09:00"),
        is_draft=False,
        seen_round=1,
    )
    for address in to:
        rows.insert(MessageParticipant, message_id=pk, role="to", address=address)
    return pk


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=40))
def test_conversation_tokens_number_the_hash_pairs_in_order_also_where_two_share_a_first_hash(
    pairs: list[tuple[int, int]],
) -> None:
    """The tokens number the conversations' hash pairs in their order, equal exactly where both hashes are, and
    none for (0, 0): also where two conversations share a first hash (sorted by it alone, they would be
    numbered as one, or interleave)."""
    hashes = pl.DataFrame(pairs, schema={"c1": pl.UInt64, "c2": pl.UInt64}, orient="row")
    tokens = load._conversation_codes(hashes).to_list()
    numbered = {pair: n for n, pair in enumerate(sorted(set(pairs)), start=1)}
    assert tokens == [None if pair == (0, 0) else str(numbered[pair]) for pair in pairs]


@pytest.mark.parametrize("reader", ["small", "large"])
def test_the_copies_one_owner_holds_of_a_message_are_ordered_by_their_graph_ids_as_the_object_builder_does(
    engine: Engine, tenant: TenantConfig, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where one mailbox holds several copies of a message (ids that normalise alike), the build reads their
    Graph ids, theirs alone, and they decide what the copies decide (the order of the recipients) exactly as
    the object builder, given every Graph id, does: in Python's (code point) order, upper case before lower,
    ASCII before the rest, whatever the database's collation. A Graph id is read with the message only where
    the internetMessageId has no letter or digit (none, or nothing but brackets and spaces): those copies
    are keyed by their Graph id, the others by their message id."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    monkeypatch.setattr(load, "GRAPH_ID_CHUNK", 2)  # (the ranks span reads)
    asked: list[int] = []

    def graph_ids(engine: Engine, ids: list[int]) -> list[tuple[int, str]]:
        asked.extend(ids)
        return real(engine, ids)

    real = load.graph_ids
    monkeypatch.setattr(load, "graph_ids", graph_ids)
    if engine.dialect.name == "postgresql":  # a collation that sorts otherwise (ICU's root: "alpha" < "Zeta")
        with engine.begin() as conn:
            conn.execute(text('ALTER TABLE message ALTER COLUMN graph_id TYPE varchar(255) COLLATE "und-x-icu"'))
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)
    copies = [  # one message, four copies: three in Bob's mailbox (its id spelt three ways), one in Carl's
        (BOB, "éclair", " <SAME@fabrikam.com> ", (BOB, "x@fabrikam.com")),
        (CARL, "aaa", "<same@fabrikam.com>", (CARL, "w@fabrikam.com")),
        (BOB, "Zeta", "<Same@fabrikam.com>", (BOB, "z@fabrikam.com")),
        (BOB, "alpha", "<same@FABRIKAM.com>", (BOB, "a@fabrikam.com")),
    ]
    others = [(BOB, g, message_id, (BOB,)) for g, message_id in [("Ωmega", None), ("beta", "<>"), ("gamma", " < > ")]]
    pks = {
        graph_id: sent_copy(rows, box, graph_id, message_id, to)
        for box, graph_id, message_id, to in [*copies, *others, (BOB, "other", "<other@fabrikam.com>", (BOB,))]
    }
    p = prepare(engine, tenant, T)
    assert sorted(asked) == sorted(pks[g] for g in ("éclair", "Zeta", "alpha"))
    read = dict(p.inputs.messages.messages.select("m", "graph_id").iter_rows())
    assert {g: read[pk] for g, pk in pks.items()} == {g: g if g in ("Ωmega", "beta", "gamma") else None for g in pks}
    assert sorted(p.frames.acts.get_column("key").to_list()) == sorted(
        [f"email:graph:{g}" for g in ("Ωmega", "beta", "gamma")]
        + ["email:<same@fabrikam.com>", "email:<other@fabrikam.com>"]
    )
    # The recipients in the object builder's order, given the copies with their Graph ids.
    objects = [
        MailMessage(
            graph_id=g, mailbox=box, sent_at=at("2026-03-01 09:00"), from_address=ANN, to=to, internet_message_id=i
        )
        for box, g, i, to in copies
    ]
    (want,) = build_activities(rules=p.inputs.rules, messages=objects).activities
    a = p.frames.acts.get_column("key").to_list().index("email:<same@fabrikam.com>")
    got = p.frames.parts.filter(pl.col("a") == a).get_column("address").to_list()
    assert got == [x.address for x in want.participants]
    assert got[2:5] == ["z@fabrikam.com", "a@fabrikam.com", "x@fabrikam.com"]  # (Bob's copies, then Carl's)


@pytest.mark.parametrize("reader", ["small", "large"])
def test_a_copy_gone_before_its_graph_id_is_read_waits_for_the_next_run_and_the_rest_are_built_whole(
    engine: Engine, tenant: TenantConfig, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that went (deleted by the sync) between the read of the messages and that of the Graph ids
    which order it among its mailbox's copies of its message is left for the next run; its message is built
    from the other copies, every other message as it is."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)
    copies = [
        (BOB, "<m@fabrikam.com>", "x@fabrikam.com"),
        (CARL, "<n@fabrikam.com>", "w@fabrikam.com"),
        (BOB, "<m@fabrikam.com>", "y@fabrikam.com"),
        (BOB, "<m@fabrikam.com>", "z@fabrikam.com"),
    ]
    pks = [sent_copy(rows, box, f"g{i}", message_id, (BOB, to)) for i, (box, message_id, to) in enumerate(copies)]
    real = load.graph_ids

    def deleted_first(engine: Engine, ids: list[int]) -> list[tuple[int, str]]:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM message WHERE id = :id"), {"id": pks[2]})
        return real(engine, ids)

    monkeypatch.setattr(load, "graph_ids", deleted_first)
    p = prepare(engine, tenant, T)
    keys = p.frames.acts.get_column("key").to_list()
    addresses = {
        key: p.frames.parts.filter(pl.col("a") == keys.index(key)).get_column("address").to_list()
        for key in ("email:<m@fabrikam.com>", "email:<n@fabrikam.com>")
    }
    assert addresses == {
        "email:<m@fabrikam.com>": [ANN, BOB, "x@fabrikam.com", "z@fabrikam.com"],
        "email:<n@fabrikam.com>": [ANN, BOB, "w@fabrikam.com"],
    }


def test_the_mail_rows_are_made_of_the_parts_read_without_copying_them_whole() -> None:
    """The read's parts (bulk_read.joined) become MailRows without their columns copied into one: with the
    first column in the read's parts, a select made every column one part, a copy of the year of mail (0.2
    GB more at 2,000,000 activities)."""
    parts = [
        pl.DataFrame(
            {
                "m": [10 * p + i for i in range(10)],
                "graph_id": [""] * 10,
                "box": [1] * 10,
                "sent": [us(T)] * 10,
                "from_address": [ANN] * 10,
                "sender_address": [ANN] * 10,
                "internet_message_id": [f"<{p}.{i}@fabrikam.com>" for i in range(10)],
                "in_reply_to": [""] * 10,
                "conversation_id": [f"conv{i % 3}" for i in range(10)],
            }
        )
        for p in range(4)
    ]
    read = bulk_read.joined(parts, Query("", parts[0].columns, load._mail_part))
    scoped = {1: load.MailboxInfo(1, BOB, (), True, "ok", False, None)}
    no_recipients = pl.DataFrame(schema={"m": pl.Int64, "role": pl.String, "address": pl.String})
    rows = load._mail_rows([read, no_recipients], scoped, lambda ids: pytest.fail(f"no Graph id to read: {ids}"))
    assert rows.messages.height == 40
    assert rows.messages.get_column("internet_message_id").n_chunks() == 4
    assert rows.messages.get_column("mailbox").to_list() == [BOB] * 40


def test_copies_whose_message_ids_have_no_letter_or_digit_get_their_graph_ids_read_after_and_go_if_gone() -> None:
    """The read leaves the Graph id out wherever there is an internetMessageId; one that would normalise to
    nothing ("<>", "< >") keys its copy by the Graph id, read afterwards for those alone. A copy whose Graph
    id is no longer there (deleted since) is left out, as the next run would not see it either."""
    ids = ["<a@x>", "", "<>", "< >", "<1>", "<>"]
    part = pl.DataFrame(
        {
            "m": list(range(1, 7)),
            "graph_id": ["", "g2", "", "", "", ""],  # (read only where there is no message id)
            "box": [1] * 6,
            "sent": [us(T)] * 6,
            "from_address": [ANN] * 6,
            "sender_address": [ANN] * 6,
            "internet_message_id": ids,
            "in_reply_to": [""] * 6,
            "conversation_id": [""] * 6,
        }
    )
    read = bulk_read.joined([part], Query("", part.columns, load._mail_part))
    scoped = {1: load.MailboxInfo(1, BOB, (), True, "ok", False, None)}
    asked: list[list[int]] = []

    def graph_ids(wanted: list[int]) -> list[tuple[int, str]]:
        asked.append(wanted)
        return [(3, "g3"), (4, "g4")]  # (6 went)

    no_recipients = pl.DataFrame(schema={"m": pl.Int64, "role": pl.String, "address": pl.String})
    rows = load._mail_rows([read, no_recipients], scoped, graph_ids)
    assert asked == [[3, 4, 6]]
    got = dict(rows.messages.select("m", "graph_id").iter_rows())
    assert got == {1: None, 2: "g2", 3: "g3", 4: "g4", 5: None}


def test_id_ranges_split_the_ids_up_to_the_last_and_leave_the_last_part_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_read, "RANGE_IDS", 4)
    assert bulk_read.id_ranges(3, "m.id") == ["1 = 1"]
    assert bulk_read.id_ranges(4, "m.id") == ["1 = 1"]
    assert bulk_read.id_ranges(10, "m.id") == ["m.id > 0 AND m.id <= 4", "m.id > 4 AND m.id <= 8", "m.id > 8"]
    # Both sides of a join bounded alike.
    assert bulk_read.id_ranges(6, "m.id", "p.message_id") == [
        "m.id > 0 AND m.id <= 4 AND p.message_id > 0 AND p.message_id <= 4",
        "m.id > 4 AND p.message_id > 4",
    ]


@pytest.mark.parametrize("unixepoch", [True, False], ids=["unixepoch", "strftime"])
def test_sqlite_times_are_read_as_the_microseconds_their_text_spells(
    unixepoch: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps a timestamp as text; the large reads turn it into microseconds in SQL (epoch_micros),
    with SQLite's unixepoch or, before 3.38, strftime: the same instant as parsing the text, exactly, through
    both drivers (sqlite3 for a small read, ADBC's own SQLite for a large one), fractions of any length."""
    import sqlite3

    import adbc_driver_sqlite.dbapi as adbc_sqlite
    import polars as pl

    monkeypatch.setattr(bulk_read.sqlite3, "sqlite_version_info", (3, 45, 0) if unixepoch else (3, 37, 2))
    texts = [
        "2026-03-01 09:00:00.000001",
        "2026-03-01 23:59:59.999999",
        "2026-03-01 09:00:00.5",  # (not as SQLAlchemy writes: six digits always)
        "2026-03-01 09:00:00",
        "1999-12-31 23:59:59.123456",
    ]
    path = tmp_path / "times.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, at DATETIME NOT NULL)")
        db.executemany("INSERT INTO t (at) VALUES (?)", [(x,) for x in texts])
    sql = f"SELECT {bulk_read.epoch_micros('sqlite', 'at')} FROM t ORDER BY i"
    assert ("unixepoch(" in sql) is unixepoch
    expected = [us(datetime.fromisoformat(x).replace(tzinfo=UTC)) for x in texts]
    with closing(sqlite3.connect(path)) as db:
        assert [v for (v,) in db.execute(sql)] == expected
    with closing(adbc_sqlite.connect(f"file:{path}?mode=ro")) as adbc, closing(adbc.cursor()) as cursor:
        cursor.execute(sql)
        assert pl.DataFrame(cursor.fetch_arrow()).to_series().to_list() == expected
    assert bulk_read.epoch_micros("postgresql", "m.sent_at") == "m.sent_at"  # (typed: read as it is)


def test_compute_command_passes_the_freed_memory_limit(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, engine)
    cfg.write_text("[service]\ncompute_keep_freed_below_mib = 123\n" + cfg.read_text())
    limits: list[int] = []

    def compute_tenant(_engine: Engine, tenant: TenantConfig, **kwargs: Any) -> ComputeReport:
        limits.append(kwargs["keep_freed_below_mib"])
        return ComputeReport(tenant=tenant.name, as_of=T, mode="full", tier="enhanced", accuracy="Complete")

    monkeypatch.setattr("relinsights.compute.compute_tenant", compute_tenant)
    res = runner.invoke(app, ["compute", "--once", "--full", "--json", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert limits == [123]
