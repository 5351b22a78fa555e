from __future__ import annotations

import random
from dataclasses import replace

from relinsights.analytics import (
    Activity,
    CallState,
    CrmAppointment,
    CrmEmail,
    CrmParty,
    Direction,
    Entity,
    InternalUser,
    Kind,
    PhoneCall,
    RecordRef,
    Tier,
    build_activities,
)

from .factory import at, copies, event_copy, mail, meeting, rules

ANN, JOE = "ann@fabrikam.com", "joe@fabrikam.com"
BOB, CARL, DAN = "bob@contoso.com", "carl@contoso.com", "dan@contoso.com"
T = at("2026-03-10 12:00")


def build(**kw: object) -> tuple[list[Activity], dict[str, int]]:
    kw.setdefault("rules", rules())
    result = build_activities(**kw)  # type: ignore[arg-type]
    return list(result.activities), dict(result.skipped)


# ---------------------------------------------------------------- emails


def test_email_in_several_mailboxes_counts_once() -> None:
    m = mail(BOB, [ANN, CARL], "2026-03-01 09:00", mid="<Abc@Mail.Test>")
    rows = copies(m, CARL, DAN)
    # A copy whose id differs only by brackets and case is the same message.
    rows[2] = replace(rows[2], internet_message_id=" abc@MAIL.test")
    acts, _ = build(messages=rows)
    assert len(acts) == 1
    assert acts[0].key == "email:<abc@mail.test>"
    assert len(acts[0].sources) == 3


def test_email_without_message_id_is_not_merged() -> None:
    a = mail(BOB, [ANN], "2026-03-01 09:00", mid=None)
    b = mail(BOB, [ANN], "2026-03-01 09:00", mid=None, mailbox=CARL)
    acts, _ = build(messages=[a, b])
    assert len(acts) == 2


def test_direction_sent_and_received() -> None:
    acts, _ = build(messages=[mail(BOB, [ANN], "2026-03-01 09:00"), mail(ANN, [BOB], "2026-03-01 10:00")])
    assert [a.direction for a in acts] == [Direction.OUTGOING, Direction.INCOMING]


def test_internal_only_and_external_only_emails_are_not_activities() -> None:
    acts, skipped = build(messages=[mail(BOB, [CARL], "2026-03-01 09:00"), mail(ANN, [JOE], "2026-03-01 09:00")])
    assert acts == []
    assert skipped == {"no-direction": 2}


def test_bcc_never_decides_direction_nor_is_a_participant() -> None:
    only_bcc = mail(BOB, [CARL], "2026-03-01 09:00", bcc=[ANN])
    with_to = mail(BOB, [ANN], "2026-03-01 10:00", bcc=[JOE, DAN])
    acts, skipped = build(messages=[only_bcc, with_to])
    assert skipped == {"no-direction": 1}
    (act,) = acts
    assert {p.person for p in act.participants} == {BOB, ANN}


def test_drafts_are_not_activities() -> None:
    acts, skipped = build(messages=[mail(BOB, [ANN], "2026-03-01 09:00", draft=True)])
    assert acts == [] and skipped == {"draft": 1}


def test_ignored_sender_and_ignored_recipients() -> None:
    robot = mail("noreply@fabrikam.com", [BOB], "2026-03-01 09:00")
    to_robot = mail(BOB, ["no-reply@fabrikam.com"], "2026-03-01 09:00")
    mixed = mail(BOB, [ANN, "notifications@fabrikam.com"], "2026-03-01 09:00")
    acts, skipped = build(messages=[robot, to_robot, mixed])
    assert skipped == {"ignored-sender": 1, "no-direction": 1}
    (act,) = acts
    assert {p.person for p in act.participants} == {BOB, ANN}


def test_opted_out_user_is_dropped() -> None:
    r = rules(users=[InternalUser(CARL, opted_out=True)])
    acts, skipped = build(
        rules=r, messages=[mail(CARL, [ANN], "2026-03-01 09:00"), mail(ANN, [BOB, CARL], "2026-03-01 10:00")]
    )
    assert skipped == {"ignored-sender": 1}
    (act,) = acts
    assert {p.person for p in act.participants} == {ANN, BOB}


def test_aliases_are_one_participant() -> None:
    r = rules(users=[InternalUser(BOB, aliases=("robert@contoso.com",))])
    acts, _ = build(rules=r, messages=[mail(ANN, [BOB], "2026-03-01 09:00", cc=["robert@contoso.com"])])
    assert [(p.person, p.role) for p in acts[0].participants] == [(ANN, "from"), (BOB, "to")]


def test_rows_order_does_not_matter() -> None:
    m = mail(BOB, [ANN], "2026-03-01 09:00", cc=[CARL])
    messages = [*copies(m, CARL), mail(ANN, [BOB], "2026-03-02 09:00")]
    e = meeting(BOB, {ANN: "accepted", CARL: "accepted"}, "2026-03-03 10:00", "2026-03-03 11:00")
    events = [e, event_copy(e, CARL, own_response="declined")]
    first, _ = build(messages=messages, events=events)
    for seed in range(5):
        random.Random(seed).shuffle(messages)
        again, _ = build(messages=messages, events=events[::-1] if seed % 2 else events)
        assert again == first


# ---------------------------------------------------------------- meetings


def test_meeting_direction_and_attendance() -> None:
    e = meeting(BOB, {ANN: "accepted", CARL: "declined", DAN: None}, "2026-03-05 10:00", "2026-03-05 11:00")
    received = meeting(ANN, {BOB: "accepted"}, "2026-03-06 10:00", "2026-03-06 10:30", mailbox=BOB)
    acts, _ = build(events=[e, received])
    sent, recv = acts
    assert (sent.direction, recv.direction) == (Direction.OUTGOING, Direction.INCOMING)
    assert {p.person: p.attended for p in sent.participants} == {BOB: True, ANN: True, CARL: False, DAN: True}
    assert sent.duration_minutes == 60


def test_meeting_copies_merge_and_own_response_wins() -> None:
    e = meeting(BOB, {ANN: "accepted", CARL: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00")
    carl_copy = event_copy(e, CARL, own_response="declined")
    acts, _ = build(events=[carl_copy, e])
    (act,) = acts
    assert {p.person: p.attended for p in act.participants}[CARL] is False
    assert len(act.sources) == 2


def test_meeting_needs_an_external_participant() -> None:
    acts, skipped = build(events=[meeting(BOB, {CARL: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00")])
    assert acts == [] and skipped == {"no-external": 1}


def test_cancelled_meeting_is_not_an_activity_even_in_one_copy() -> None:
    e = meeting(BOB, {ANN: "accepted", CARL: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00")
    acts, skipped = build(events=[e, event_copy(e, CARL, is_cancelled=True)])
    assert acts == [] and skipped == {"cancelled": 1}


def test_all_day_meeting_counts_without_time() -> None:
    e = meeting(BOB, {ANN: "accepted"}, "2026-03-05 00:00", "2026-03-06 00:00", all_day=True)
    (act,) = build(events=[e])[0]
    assert act.kind is Kind.MEETING and act.all_day and act.duration_minutes == 0


def test_completed_scheduled_and_in_progress() -> None:
    e = meeting(BOB, {ANN: "accepted"}, "2026-03-10 11:30", "2026-03-10 12:00")
    running = meeting(BOB, {ANN: "accepted"}, "2026-03-10 11:30", "2026-03-10 12:30")
    later = meeting(BOB, {ANN: "accepted"}, "2026-03-10 12:00:01", "2026-03-10 13:00")
    done, now, future = build(events=[e, running, later])[0]
    assert done.completed(T) and not done.scheduled(T)  # end at T: completed
    assert not now.completed(T) and not now.scheduled(T)  # started, not ended: neither
    assert future.scheduled(T) and not future.completed(T)


def test_series_master_and_resources_are_skipped() -> None:
    master = meeting(BOB, {ANN: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00", event_type="seriesMaster")
    room = meeting(BOB, {ANN: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00", resources=["room1@contoso.com"])
    acts, skipped = build(events=[master, room])
    assert skipped == {"series-master": 1}
    assert {p.person for p in acts[0].participants} == {BOB, ANN}


def test_meeting_with_ignored_organizer_is_not_an_activity() -> None:
    acts, skipped = build(
        events=[meeting("noreply@fabrikam.com", {BOB: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00")]
    )
    assert acts == [] and skipped == {"ignored-organizer": 1}


# ---------------------------------------------------------------- CRM sources and tiers


def _crm_email(mid: str | None, regarding: RecordRef | None = None) -> CrmEmail:
    return CrmEmail(
        activity_id="A1",
        sent_at=at("2026-03-01 09:00"),
        sender=CrmParty("systemuser", "SU-BOB", BOB),
        to=(CrmParty("contact", "ann", ANN),),
        message_id=mid,
        regarding=regarding,
    )


def test_graph_and_crm_copies_of_one_email_count_once_with_regarding() -> None:
    opp = RecordRef(Entity.OPPORTUNITY, "o1")
    m = mail(BOB, [ANN], "2026-03-01 09:00", mid="<x1@test>")
    # The CRM copy disagrees (promoted later, a party added by hand): Graph's view wins, regarding is kept.
    crm = replace(
        _crm_email("X1@test", opp), sent_at=at("2026-03-01 08:59"), cc=(CrmParty("systemuser", "su-carl", CARL),)
    )
    acts, _ = build(messages=[m], crm_emails=[crm])
    (act,) = acts
    assert act.regarding == (opp,)
    assert act.time == at("2026-03-01 09:00")
    assert {p.person for p in act.participants} == {BOB, ANN}
    assert act.sources == ("crm:A1", f"graph:{m.graph_id}")


def test_basic_tier_reads_only_crm_activities() -> None:
    m = mail(BOB, [ANN], "2026-03-02 09:00")
    appt = CrmAppointment(
        "AP1",
        at("2026-03-05 10:00"),
        at("2026-03-05 11:00"),
        organizer=CrmParty("systemuser", "SU-BOB", BOB),
        required=(CrmParty("contact", "ann", ANN),),
        global_object_id="UIDX",
    )
    acts, _ = build(tier=Tier.BASIC, messages=[m], crm_emails=[_crm_email(None)], crm_appointments=[appt])
    assert [(a.kind, a.key) for a in acts] == [(Kind.EMAIL, "email:crm:A1"), (Kind.MEETING, "meeting:uidx")]


def test_crm_appointment_and_graph_event_merge_by_ical_uid() -> None:
    e = meeting(BOB, {ANN: "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00", uid="ABCDEF")
    appt = CrmAppointment(
        "AP1",
        at("2026-03-05 10:00"),
        at("2026-03-05 11:00"),
        global_object_id="abcdef",
        regarding=RecordRef(Entity.ACCOUNT, "acc"),
    )
    (act,) = build(events=[e], crm_appointments=[appt])[0]
    assert act.regarding == (RecordRef(Entity.ACCOUNT, "acc"),)


def test_phone_calls() -> None:
    bob = CrmParty("systemuser", "SU-BOB", None)
    ann = CrmParty("contact", "ann", "+33 1 23 45 67 89")  # a phone number is not an address
    made = PhoneCall("C1", True, (bob,), (ann,), actual_end=at("2026-03-03 10:00"), duration_minutes=12)
    received = PhoneCall("C2", False, (ann,), (bob,), scheduled_end=at("2026-03-04 10:00"), duration_minutes=None)
    planned = PhoneCall("C3", True, (bob,), (ann,), scheduled_end=at("2026-03-12 10:00"), state=CallState.OPEN)
    overdue = PhoneCall("C4", True, (bob,), (ann,), scheduled_end=at("2026-03-09 10:00"), state=CallState.OPEN)
    cancelled = PhoneCall("C5", True, (bob,), (ann,), actual_end=at("2026-03-03 10:00"), state=CallState.CANCELLED)
    r = rules(users=[InternalUser(BOB, systemuser_id="su-bob")])
    acts, skipped = build(rules=r, phone_calls=[made, received, planned, overdue, cancelled, made])
    assert skipped == {"cancelled": 1}
    by_key = {a.key: a for a in acts}
    c1, c2, c3, c4 = (by_key[f"call:c{i}"] for i in range(1, 5))
    assert (c1.direction, c1.duration_minutes, c1.completed(T)) == (Direction.OUTGOING, 12, True)
    assert (c2.direction, c2.duration_minutes, c2.time) == (Direction.INCOMING, 0, at("2026-03-04 10:00"))
    assert c3.scheduled(T) and not c3.completed(T)
    assert not c4.scheduled(T) and not c4.completed(T)  # an overdue open call is neither
    assert [(p.person, p.internal, p.party) for p in c1.participants] == [
        (BOB, True, None),
        ("contact:ann", False, RecordRef(Entity.CONTACT, "ann")),
    ]
