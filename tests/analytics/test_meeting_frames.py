"""The column build of Graph meetings (meeting_frames.py) against the object builder (activities.py), value by value."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relinsights.analytics import (
    Attendee,
    CalendarEvent,
    CrmAppointment,
    Role,
    Tier,
    build_activities,
)
from relinsights.analytics.activities import crm_meeting_key
from relinsights.analytics.activity_frames import build_activity_frames
from relinsights.analytics.frames import ROLE, ActivityFrames, FrameActivities, frames_of
from relinsights.analytics.meeting_frames import build_meeting_frames, event_rows, split_meetings, strip_lower
from relinsights.analytics.parties import PartyRules
from relinsights.analytics.records import Entity, RecordRef
from relinsights.analytics.sources import CrmParty

from .factory import SPELLING_USERS, SPELLINGS, at, rules

T = datetime(2026, 3, 10, 12, tzinfo=UTC)
MAILBOXES = ["bob@contoso.com", "robert@contoso.com", "carl@contoso.com", "ann@fabrikam.com", "box"]
# Spellings of one uid, none, and characters where Python's strip() / lower() and Rust's differ.
UIDS = ["UID1", "uid1", " uid1\t", "\x1cuid1", "UID2", "", None, "\u2003Ǆ-uid\u2003", "uid-\u1c89", "\x85uid2"]
RESPONSES = [None, "", "none", "organizer", "accepted", "Accepted", "declined", "tentativelyAccepted", "notResponded"]
ROLES = ["required", "Required", "optional", "organizer", "resource", ""]
TYPES = ["singleInstance", "occurrence", "exception", "seriesMaster", "SeriesMaster", None]


def tenant_rules() -> PartyRules:
    return rules(users=SPELLING_USERS)  # noreply@ is an ignored local part by default


def frame_build(events: list[CalendarEvent], party_rules: PartyRules) -> tuple[ActivityFrames, dict[str, int]]:
    skipped: Counter[str] = Counter()
    built, objects = build_meeting_frames(event_rows(events), (), party_rules, skipped)
    assert objects == []
    frames = ActivityFrames.combine([built])
    return frames, {k: v for k, v in sorted(skipped.items()) if v}


def assert_same(events: list[CalendarEvent], party_rules: PartyRules) -> ActivityFrames:
    expected = build_activities(rules=party_rules, events=events, keep_sources=False)
    frames, skipped = frame_build(events, party_rules)
    assert list(FrameActivities(frames)) == list(expected.activities)
    assert skipped == dict(expected.skipped)
    # And the generic conversion of the objects gives the very same frames.
    assert frames_of(expected.activities).acts.equals(frames.acts)
    assert frames_of(expected.activities).parts.equals(frames.parts)
    return frames


def assert_same_with_crm(events: list[CalendarEvent], appointments: list[CrmAppointment]) -> None:
    """Through build_activity_frames: keys a CRM appointment shares go to the object builder."""
    party_rules = tenant_rules()
    expected = build_activities(rules=party_rules, events=events, crm_appointments=appointments, keep_sources=False)
    frames, skipped = build_activity_frames(
        rules=party_rules, meetings=event_rows(events), crm_appointments=appointments
    )
    assert list(FrameActivities(frames)) == list(expected.activities)
    assert skipped == {k: n for k, n in expected.skipped.items() if n}


@st.composite
def attendee_lists(draw: st.DrawFn) -> tuple[Attendee, ...]:
    return tuple(
        Attendee(draw(st.sampled_from(SPELLINGS)), draw(st.sampled_from(ROLES)), draw(st.sampled_from(RESPONSES)))
        for _ in range(draw(st.integers(0, 5)))
    )


@st.composite
def calendars(draw: st.DrawFn) -> list[CalendarEvent]:
    """Meetings across mailboxes: copies that share an iCal uid and disagree on answers, times and more."""
    out: list[CalendarEvent] = []
    for n in range(draw(st.integers(0, 10))):
        start = None if draw(st.integers(0, 15)) == 0 else T + timedelta(minutes=draw(st.integers(-5000, 5000)))
        length = timedelta(minutes=draw(st.integers(-30, 300)), microseconds=draw(st.integers(0, 999_999)))
        end = None if draw(st.integers(0, 15)) == 0 else (start or T) + length
        event = CalendarEvent(
            graph_id=f"e{n}",
            mailbox=draw(st.sampled_from(MAILBOXES)),
            start=start,
            end=end,
            organizer=draw(st.sampled_from([*SPELLINGS, None])),
            attendees=draw(attendee_lists()),
            ical_uid=draw(st.sampled_from(UIDS)),
            is_all_day=draw(st.integers(0, 6)) == 0,
            is_cancelled=draw(st.integers(0, 12)) == 0,
            event_type=draw(st.sampled_from(TYPES)) if draw(st.integers(0, 4)) == 0 else "singleInstance",
            own_response=draw(st.sampled_from([None, "", "accepted", "Declined", "tentativelyAccepted"])),
        )
        out.append(event)
        for i in range(draw(st.integers(0, 3))):  # copies in other mailboxes
            out.append(
                CalendarEvent(
                    graph_id=f"e{n}-{i}",
                    mailbox=draw(st.sampled_from(MAILBOXES)),
                    start=event.start if draw(st.booleans()) else T + timedelta(hours=draw(st.integers(-90, 90))),
                    end=event.end,
                    organizer=draw(st.sampled_from([event.organizer, None, "eve@fabrikam.com", "not an address"])),
                    attendees=event.attendees if draw(st.booleans()) else draw(attendee_lists()),
                    ical_uid=draw(st.sampled_from([event.ical_uid, event.ical_uid, *UIDS])),
                    is_all_day=draw(st.sampled_from([event.is_all_day, not event.is_all_day])),
                    is_cancelled=draw(st.integers(0, 12)) == 0,
                    event_type=event.event_type,
                    own_response=draw(st.sampled_from([None, "accepted", "declined", "Accepted"])),
                )
            )
    return out


@st.composite
def appointments(draw: st.DrawFn) -> list[CrmAppointment]:
    party = st.builds(CrmParty, st.none(), st.none(), st.sampled_from(SPELLINGS))
    return [
        CrmAppointment(
            activity_id=f"crm{i}",
            start=T + timedelta(hours=draw(st.integers(-50, 50))),
            end=T + timedelta(hours=draw(st.integers(-50, 50))),
            organizer=draw(st.one_of(st.none(), party)),
            required=tuple(draw(st.lists(party, max_size=2))),
            global_object_id=draw(st.sampled_from(UIDS)),
            regarding=RecordRef(Entity.CONTACT, f"c{i}"),
        )
        for i in range(draw(st.integers(0, 3)))
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars(), st.randoms(use_true_random=False))
def test_frame_build_equals_object_build(events: list[CalendarEvent], rnd: object) -> None:
    rnd.shuffle(events)  # type: ignore[attr-defined]
    assert_same(events, tenant_rules())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars(), appointments())
def test_keys_shared_with_crm_appointments_merge_as_the_object_builder_does(
    events: list[CalendarEvent], crm: list[CrmAppointment]
) -> None:
    assert_same_with_crm(events, crm)


@given(calendars())
def test_rows_back_to_objects(events: list[CalendarEvent]) -> None:
    assert event_rows(events).objects() == events


@given(st.lists(st.one_of(st.none(), st.text(), st.sampled_from(UIDS))))
def test_keys_strip_and_lower_case_as_python_does(uids: list[str | None]) -> None:
    got = strip_lower(pl.Series(uids, dtype=pl.String)).to_list()
    assert got == [u.strip().lower() if u is not None else None for u in uids]


BOB, ROBERT, CARL = "bob@contoso.com", "Robert@Contoso.com", "carl@contoso.com"
ANN, DAN, EVE, FAY, ZOE = (
    "ann@fabrikam.com",
    "dan@fabrikam.com",
    "eve@fabrikam.com",
    "fay@fabrikam.com",
    "zoe@tailspin.com",
)
_ORG, _REQ, _OPT = ROLE[Role.ORGANIZER], ROLE[Role.REQUIRED], ROLE[Role.OPTIONAL]


def copy_of(
    uid: str,
    mailbox: str,
    *attendees: tuple[str, str, str | None],
    organizer: str | None = BOB,
    times: tuple[str, str | None] | None = ("2026-03-05 10:00", "2026-03-05 11:00"),
    **fields: Any,
) -> CalendarEvent:
    """One mailbox's copy of meeting `uid`; attendees as (address, role, response)."""
    return CalendarEvent(
        graph_id=f"{uid}-{mailbox}",
        mailbox=mailbox,
        start=at(times[0]) if times else None,
        end=at(times[1]) if times and times[1] else None,
        organizer=organizer,
        attendees=tuple(Attendee(a, role, response) for a, role, response in attendees),
        ical_uid=uid,
        **fields,
    )


def test_answers_roles_and_attendee_order() -> None:
    """An attendee's own answer beats the organizer's copy, which beats the others (declined first); a
    required row wins the role; someone else's organizer-role row makes a required attendee, placed with the
    optional ones; rooms are no one; required attendees come first, each group by person."""
    ann_copy = copy_of(
        "m",
        ANN,
        (ANN, "required", "none"),
        (DAN, "required", "declined"),
        (EVE, "optional", "declined"),
        own_response="tentativelyAccepted",
    )
    bob_copy = copy_of(
        "m",
        BOB,
        (BOB, "organizer", "organizer"),
        (ZOE, "required", "declined"),
        (ANN, "required", "accepted"),
        (CARL, "required", "none"),
        (DAN, "optional", "accepted"),
        ("room1@contoso.com", "resource", "accepted"),
        (EVE, "organizer", None),
        (FAY, "organizer", None),
    )
    carl_copy = copy_of("m", CARL, (CARL, "required", "none"), (ANN, "optional", "declined"), own_response="Declined")
    frames = assert_same([carl_copy, ann_copy, bob_copy], tenant_rules())
    assert frames.parts.select("person", "role", "attended").rows() == [
        (BOB, _ORG, True),
        (ANN, _REQ, True),  # her own answer (tentative) before the organizer's copy and Carl's "declined"
        (CARL, _REQ, False),  # his own copy: declined
        (DAN, _REQ, True),  # required on Ann's copy; the organizer's copy says accepted
        (ZOE, _REQ, False),
        (EVE, _OPT, False),  # first seen as optional; only other copies' answers: declined first
        (FAY, _REQ, True),  # an organizer-role row: required, but after the required ones
    ]


def test_organizer_and_base_copy() -> None:
    """The first copy by mailbox that names a resolvable organizer gives them; the organizer's own copy
    (an alias of their mailbox too) gives the times, else the first copy; an end before the start is a
    zero-length meeting; an all-day meeting lasts 0 minutes."""
    unsynced = [
        copy_of(
            "a",
            BOB,
            (ANN, "required", None),
            organizer="not an address",
            times=("2026-03-05 09:00", "2026-03-05 10:00"),
        ),
        copy_of("a", CARL, (BOB, "required", None), organizer=ANN, times=("2026-03-05 10:00", "2026-03-05 11:30")),
    ]
    synced = [
        copy_of("b", CARL, (ANN, "required", None), organizer=ROBERT, times=("2026-03-06 10:00", "2026-03-06 10:45")),
        copy_of("b", ROBERT, (ANN, "required", None), times=("2026-03-06 11:00", "2026-03-06 11:30")),
    ]
    inverted = copy_of("c", BOB, (ANN, "required", None), times=("2026-03-07 10:00", "2026-03-07 09:00"))
    all_day = copy_of(
        "d", BOB, (ANN, "required", None), times=("2026-03-08 00:00", "2026-03-09 00:00"), is_all_day=True
    )
    frames = assert_same([*unsynced, *synced, inverted, all_day], tenant_rules())
    assert frames.acts.select("key", "dir", "dur", "all_day").rows() == [
        ("meeting:a", 1, 60.0, False),  # received from Ann: Bob's copy is the first, hers is not synced
        ("meeting:b", 0, 30.0, False),  # Bob's copy, synced under his alias
        ("meeting:c", 0, 0.0, False),
        ("meeting:d", 0, 0.0, True),
    ]
    assert frames.parts.filter(pl.col("a") == 0).get_column("person").to_list() == [ANN, BOB]


def test_skips_by_reason() -> None:
    kept = [
        copy_of("ok", BOB, (ANN, "required", "accepted")),
        copy_of("declined", BOB, (CARL, "required", None), (ANN, "required", "declined")),  # still outgoing
        copy_of("received", BOB, organizer=ANN),  # a received meeting needs nothing more
    ]
    dropped = [
        copy_of("master", BOB, (ANN, "required", None), event_type="SeriesMaster"),
        copy_of("cancelled", BOB, (ANN, "required", None)),
        copy_of("cancelled", ANN, (ANN, "required", None), is_cancelled=True),
        copy_of("nobody", BOB, (ANN, "required", None), organizer="not an address"),
        copy_of("robot", BOB, (ANN, "required", None), organizer="noreply@fabrikam.com"),
        copy_of("robot", CARL, (ANN, "required", None), organizer=ANN),  # the first copy's organizer counts
        copy_of("opted-out", BOB, (ANN, "required", None), organizer="olga@contoso.com"),
        copy_of("untimed", BOB, (ANN, "required", None), times=("2026-03-05 10:00", None)),
        copy_of("untimed", CARL, (ANN, "required", None)),  # times, but not the organizer's copy
        copy_of("internal", BOB, (CARL, "required", None), ("room@fabrikam.com", "resource", None)),
    ]
    frames = assert_same([*kept, *dropped], tenant_rules())
    assert sorted(frames.acts.get_column("key").to_list()) == ["meeting:declined", "meeting:ok", "meeting:received"]
    assert frame_build(dropped, tenant_rules())[1] == {
        "cancelled": 1,
        "ignored-organizer": 2,
        "no-external": 1,
        "no-organizer": 1,
        "no-time": 1,
        "series-master": 1,
    }


def test_a_key_a_crm_appointment_shares_goes_to_the_object_builder() -> None:
    tracked = copy_of("Shared-UID", BOB, (ANN, "required", "accepted"))
    other = copy_of("other", BOB, (ANN, "required", "accepted"))
    crm = CrmAppointment(
        activity_id="a1",
        start=tracked.start,
        end=tracked.end,
        organizer=CrmParty(None, None, BOB),
        global_object_id=" shared-uid ",
        regarding=RecordRef(Entity.CONTACT, "c1"),
    )
    rows = event_rows([tracked, other])
    keyed, objects = split_meetings(rows.events, rows.attendees, {crm_meeting_key(crm)})
    assert objects == [tracked] and keyed.get_column("key").to_list() == ["meeting:other"]
    assert_same_with_crm([tracked, other], [crm])
    frames, _ = build_activity_frames(rules=tenant_rules(), meetings=rows, crm_appointments=[crm])
    assert frames.acts.select("key", "regarding").rows() == [
        ("meeting:other", []),
        ("meeting:shared-uid", ["contact:c1"]),
    ]


def test_the_basic_tier_reads_no_graph_meetings() -> None:
    frames, skipped = build_activity_frames(
        rules=tenant_rules(), tier=Tier.BASIC, meetings=event_rows([copy_of("ok", BOB, (ANN, "required", None))])
    )
    assert len(frames) == 0 and skipped == {}


def test_nothing_in_nothing_out() -> None:
    assert_same([], tenant_rules())
    frames, skipped = frame_build(
        [copy_of("m", BOB, (ANN, "required", None), event_type="seriesMaster")], tenant_rules()
    )
    assert len(frames) == 0 and skipped == {"series-master": 1}
