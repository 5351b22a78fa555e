"""kpis.md section 6, value by value: the contract's own check of the whole pipeline.

Every email and meeting is stored as Exchange would: one copy per synced mailbox (the sender's Sent
Items and each recipient's Inbox; the organizer's and each attendee's calendar), so the example also
exercises deduplication.
"""

from __future__ import annotations

import pytest

from relinsights.analytics import (
    Contact,
    CrmRecords,
    Direction,
    Entity,
    HealthState,
    Kind,
    RecordKpis,
    RecordRef,
    Trend,
)

from .factory import Run, at, copies, event_copy, mail, meeting, run

ANN = "ann@fabrikam.com"
BOB, CARL, DAN = "bob@contoso.com", "carl@contoso.com", "dan@contoso.com"
T = at("2026-03-10 12:00")
ANN_REF = RecordRef(Entity.CONTACT, "ann")


@pytest.fixture(scope="module")
def example() -> Run:
    m1 = mail(ANN, [BOB, CARL], "2026-03-01 09:00", conv="X", mailbox=BOB)
    m2 = mail(BOB, [ANN], "2026-03-01 13:30", conv="X", in_reply_to=m1.internet_message_id)
    m3 = mail(BOB, [ANN], "2026-03-02 10:00", conv="Y")
    e4 = meeting(BOB, {ANN: "accepted", CARL: "declined", DAN: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00")
    e5 = meeting(ANN, {BOB: "none"}, "2026-03-12 15:00", "2026-03-12 15:30", mailbox=BOB, own_response="accepted")
    messages = [*copies(m1, CARL), m2, m3]
    events = [e4, event_copy(e4, CARL, own_response="declined"), event_copy(e4, DAN, own_response="accepted"), e5]
    records = CrmRecords(contacts=[Contact("ann", emails=("Ann@Fabrikam.com",))])
    return run(records, T, messages=messages, events=events)


@pytest.fixture(scope="module")
def ann(example: Run) -> RecordKpis:
    return example.of(ANN_REF)


def test_each_email_and_meeting_counts_once(example: Run) -> None:
    assert len(example.activities.activities) == 5
    assert [lk.reasons for lk in example.match.links_of(ANN_REF)] == [("contact-email",)] * 5


def test_emails_sent_received(ann: RecordKpis) -> None:
    assert (ann.counts.emails_sent, ann.counts.emails_received) == (2, 1)


def test_meetings_sent_received(ann: RecordKpis) -> None:
    # #5 is scheduled, not completed
    assert (ann.counts.meetings_sent, ann.counts.meetings_received) == (1, 0)
    assert (ann.counts.calls_made, ann.counts.calls_received) == (0, 0)


def test_time_spent_by_team(ann: RecordKpis) -> None:
    # 60 x 2 (bob, dan; carl declined) + 5 x 2 (#2, #3) + 2.5 x 2 (bob and carl read #1)
    assert ann.time_spent_by_team_minutes == 135


def test_time_spent_by_customer(ann: RecordKpis) -> None:
    # 60 x 1 (Ann) + 5 x 1 (#1) + 2.5 x 2 (Ann read #2, #3)
    assert ann.time_spent_by_customer_minutes == 70


def test_customer_turn_answered_by_us(ann: RecordKpis) -> None:
    by_us = ann.responses.by_us
    assert (by_us.turns, by_us.judged, by_us.answered) == (1, 1, 1)
    assert by_us.mean_hours == 4.50
    assert by_us.median_hours == 4.50
    assert by_us.rate == 1.00


def test_our_turns_unanswered_and_judged(ann: RecordKpis) -> None:
    by_them = ann.responses.by_them
    assert (by_them.turns, by_them.judged, by_them.answered) == (2, 2, 0)
    assert by_them.mean_hours is None  # empty, not zero
    assert by_them.rate == 0.00


def test_last_interaction(ann: RecordKpis) -> None:
    last = ann.last_interaction
    assert last is not None
    assert (last.kind, last.direction, last.time) == (Kind.MEETING, Direction.OUTGOING, at("2026-03-05 10:00"))
    assert last.internal_party == BOB


def test_next_interaction(ann: RecordKpis) -> None:
    nxt = ann.next_interaction
    assert nxt is not None
    assert (nxt.kind, nxt.direction, nxt.time) == (Kind.MEETING, Direction.INCOMING, at("2026-03-12 15:00"))
    assert nxt.internal_party == BOB


def test_health_parts(ann: RecordKpis) -> None:
    assert ann.health is not None
    parts = ann.health.parts
    assert round(parts.volume, 2) == 4.28
    assert round(parts.expected_volume, 2) == 3.41
    assert parts.engagement == 1.0
    assert round(parts.days_since_last or 0, 2) == 5.08
    assert parts.recency == 1.0
    assert (parts.customer_initiated, parts.window_activities) == (1, 4)
    assert parts.reciprocity == 0.5
    assert parts.judged_our_turns == 2
    assert parts.responsiveness == 0.5


def test_health_score_state_trend(ann: RecordKpis) -> None:
    assert ann.health is not None
    assert ann.health.score == 80
    assert ann.health.state is HealthState.GOOD
    # As of 02-24 12:00 the record has no activities.
    assert ann.health.previous.lookback_activities == 0
    assert ann.health.previous.state is HealthState.NOT_ENOUGH_INFO
    assert ann.health.trend is Trend.NOT_ENOUGH_INFO
    assert ann.health.weakest == "reciprocity"
    assert ann.health.reason == "The customer initiated 1 of 4 interactions in the last 90 days."


def test_ratios_top_contacts_and_series(ann: RecordKpis) -> None:
    # Not in the table; what our documented rules give for it.
    assert ann.ratio_by_us == 3.0 and ann.ratio_by_them == pytest.approx(1 / 3)
    ours = [(c.person, c.emails, c.meetings) for c in ann.top_contacts_ours]
    assert ours == [(BOB, 3, 1), (DAN, 0, 1), (CARL, 1, 0)]  # dan before carl: more recent
    (theirs,) = ann.top_contacts_theirs
    assert (theirs.person, theirs.addresses, theirs.emails, theirs.meetings) == ("contact:ann", (ANN,), 3, 1)
    assert theirs.last_contacted == at("2026-03-05 10:00")
    assert len(ann.daily) == 60 and str(ann.daily[-1].day) == "2026-03-10"
    by_day = {str(d.day): d.counts for d in ann.daily if d.counts.total}
    assert {k: (c.emails_sent, c.emails_received, c.meetings_sent) for k, c in by_day.items()} == {
        "2026-03-01": (1, 1, 0),
        "2026-03-02": (1, 0, 0),
        "2026-03-05": (0, 0, 1),
    }
