"""The loader's Graph calendar read (compute/load.py `_events`): event and attendee rows as two frames, on
SQLite (both ways it reads) and PostgreSQL, and the job's meetings built from them as the object builder would."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from conftest import tenant_config
from relinsights.analytics import Attendee, Kind, build_activities
from relinsights.analytics.frames import FrameActivities
from relinsights.compute import bulk_read, prepare
from relinsights.config import TenantConfig
from relinsights.db.models import Event, EventAttendee, Mailbox
from test_compute_db import ANN, BOB, CARL, DAN, Rows, T, at


@pytest.fixture
def tenant() -> TenantConfig:
    return tenant_config(dataverse_url="https://crm.test")


@pytest.mark.parametrize("reader", ["small", "large"])
def test_events_read_each_with_its_own_attendees(
    engine: Engine, tenant: TenantConfig, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each copy gets exactly its own attendees in stored order, without the organizer's own row; the owner's
    answer is their first decided one under any of their addresses; missing values read back as None; copies
    older than the window or of a mailbox out of scope are not read. Read in parts of two event ids."""
    monkeypatch.setattr(bulk_read, "PROCESS_READ_ROWS", 0 if reader == "large" else 10**9)
    monkeypatch.setattr(bulk_read, "RANGE_IDS", 2)
    rows = Rows(engine, tenant)
    rows.mailboxes(BOB, CARL)
    away = rows.insert(Mailbox, tenant_pk=rows.tenant_pk, user_id="user-dan", address=DAN, in_scope=False)

    def event(
        box: int, graph_id: str, when: str | None, attendees: list[tuple[str, str, str | None]], **kw: Any
    ) -> None:
        start = at(when) if when else None
        pk = rows.insert(
            Event,
            mailbox_pk=box,
            graph_id=graph_id,
            start=start,
            end=kw.pop("end", start and start + timedelta(minutes=30)),
            seen_round=1,
            **kw,
        )
        for address, role, response in attendees:
            rows.insert(EventAttendee, event_id=pk, role=role, address=address, response=response)

    bob, carl = rows.mailbox[BOB], rows.mailbox[CARL]
    event(bob, "old", "2024-01-01 09:00", [(ANN, "required", "accepted")], ical_uid="u0", organizer_address=ANN)
    event(
        bob,
        "e1",
        "2026-03-05 10:00",
        [
            (ANN, "organizer", "organizer"),
            ("bob@contoso.eu", "required", "Accepted"),  # Bob's alias: his own answer
            (CARL, "optional", "none"),
            (BOB, "required", "declined"),
            ("room@contoso.com", "resource", "accepted"),
        ],
        ical_uid="U1",
        organizer_address=ANN,
        event_type="singleInstance",
        is_online_meeting=True,
    )
    event(carl, "e2", "2026-03-06 10:00", [], end=None)  # no uid, organizer, type or end
    event(
        bob,
        "e3",
        "2026-03-07 10:00",
        [(BOB, "required", "none"), (ANN, "required", None)],
        ical_uid="U3",
        organizer_address=BOB,
    )
    event(carl, "e4", "2026-03-05 10:00", [(CARL, "required", "tentativelyAccepted")], ical_uid="U1", is_all_day=True)
    event(away, "gone", "2026-03-05 10:00", [(ANN, "required", "accepted")], ical_uid="U1")
    # Two copies whose attendees were stored alternately (rows of a later copy before an earlier one's).
    e5, e6 = (
        rows.insert(Event, mailbox_pk=bob, graph_id=g, start=at("2026-03-08 10:00"), ical_uid=g.upper(), seen_round=1)
        for g in ("e5", "e6")
    )
    for pk, address, response in [
        (e6, ANN, None),
        (e5, "bob@contoso.eu", "tentativelyAccepted"),  # Bob's first decided answer, under his alias
        (e6, CARL, "none"),
        (e5, BOB, "declined"),
    ]:
        rows.insert(EventAttendee, event_id=pk, role="required", address=address, response=response)

    inputs = prepare(engine, tenant, T).inputs
    got = {
        e.graph_id: (e.mailbox, e.start, e.end, e.organizer, e.ical_uid, e.event_type, e.own_response, e.attendees)
        for e in inputs.events.objects()
    }
    start = at("2026-03-05 10:00")
    assert got == {
        "e1": (
            BOB,
            start,
            start + timedelta(minutes=30),
            ANN,
            "U1",
            "singleInstance",
            "Accepted",
            (
                Attendee("bob@contoso.eu", "required", "Accepted"),
                Attendee(CARL, "optional", "none"),
                Attendee(BOB, "required", "declined"),
                Attendee("room@contoso.com", "resource", "accepted"),
            ),
        ),
        "e2": (CARL, at("2026-03-06 10:00"), None, None, None, None, None, ()),
        "e3": (
            BOB,
            at("2026-03-07 10:00"),
            at("2026-03-07 10:30"),
            BOB,
            "U3",
            None,
            None,
            (Attendee(BOB, "required", "none"), Attendee(ANN, "required", None)),
        ),
        "e4": (
            CARL,
            start,
            start + timedelta(minutes=30),
            None,
            "U1",
            None,
            "tentativelyAccepted",
            (Attendee(CARL, "required", "tentativelyAccepted"),),
        ),
        "e5": (
            BOB,
            at("2026-03-08 10:00"),
            None,
            None,
            "E5",
            None,
            "tentativelyAccepted",
            (Attendee("bob@contoso.eu", "required", "tentativelyAccepted"), Attendee(BOB, "required", "declined")),
        ),
        "e6": (
            BOB,
            at("2026-03-08 10:00"),
            None,
            None,
            "E6",
            None,
            None,
            (Attendee(ANN, "required", None), Attendee(CARL, "required", "none")),
        ),
    }
    assert [e.is_all_day for e in inputs.events.objects() if e.graph_id == "e4"] == [True]
    assert len(inputs.events) == 6 and inputs.source_rows == 6

    # The job's meetings are the object builder's over the same rows.
    p = prepare(engine, tenant, T)
    want = build_activities(rules=p.inputs.rules, events=p.inputs.events.objects()).activities
    meetings = [a for a in FrameActivities(p.frames) if a.kind is Kind.MEETING]
    assert meetings == [replace(a, sources=()) for a in want] and len(meetings) == 2
    assert p.skipped == {"no-organizer": 3}
