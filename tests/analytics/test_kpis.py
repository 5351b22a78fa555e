from __future__ import annotations

import random
from dataclasses import replace
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from relinsights.analytics import (
    Account,
    CallState,
    Contact,
    CrmParty,
    CrmRecords,
    Entity,
    InternalUser,
    Kind,
    Opportunity,
    OpportunityState,
    PhoneCall,
    RecordRef,
    Settings,
)
from relinsights.config import KpiConfig

from .factory import at, copies, event_copy, mail, meeting, rules, run

ANN, ZOE = "ann@fabrikam.com", "zoe@fabrikam.com"
BOB, CARL, DAN, EVE = "bob@contoso.com", "carl@contoso.com", "dan@contoso.com", "eve@contoso.com"
T = at("2026-03-10 12:00")
ANN_REF = RecordRef(Entity.CONTACT, "ann")
RECORDS = CrmRecords(
    contacts=[Contact("ann", (ANN,), parent_account_id="fab")], accounts=[Account("fab", website_url="fabrikam.com")]
)
FAB = RecordRef(Entity.ACCOUNT, "fab")


def test_ratios_are_empty_when_the_divisor_is_zero() -> None:
    k = run(RECORDS, T, messages=[mail(BOB, [ANN], "2026-03-01 09:00")]).of(ANN_REF)
    assert (k.ratio_by_us, k.ratio_by_them) == (None, 0.0)


def test_time_spent_is_rounded_once_at_the_end() -> None:
    settings = Settings(kpi=KpiConfig(email_write_minutes=0, email_read_minutes=0.5))
    messages = [mail(ANN, [BOB], f"2026-03-0{d} 09:00") for d in (1, 2, 3, 4, 5)]
    k = run(RECORDS, T, messages=messages, settings=settings).of(ANN_REF)
    # 2.5 rounded half up (not to even); rounding each email's 0.5 would give 0 or 5.
    assert k.time_spent_by_team_minutes == 3


def test_all_day_and_declined_meetings() -> None:
    all_day = meeting(BOB, {ANN: "accepted"}, "2026-03-02 00:00", "2026-03-03 00:00", all_day=True)
    declined = meeting(BOB, {ANN: "declined", CARL: "accepted"}, "2026-03-04 10:00", "2026-03-04 10:30")
    k = run(RECORDS, T, events=[all_day, declined]).of(ANN_REF)
    assert k.counts.meetings_sent == 2
    assert k.time_spent_by_team_minutes == 60  # bob and carl, 30 min each; the all-day one gives no time
    assert k.time_spent_by_customer_minutes == 0  # Ann declined
    assert [c.person for c in k.top_contacts_theirs] == ["contact:ann"]
    assert k.top_contacts_theirs[0].meetings == 1  # declined: did not take part


def test_calls_count_their_duration_on_both_sides_and_schedule_next() -> None:
    r = rules(users=[InternalUser(BOB, systemuser_id="su-bob")])
    bob, ann = CrmParty("systemuser", "su-bob"), CrmParty("contact", "ann", "+1 555")
    calls = [
        PhoneCall("c1", True, (bob,), (ann,), actual_end=at("2026-03-03 10:00"), duration_minutes=10),
        PhoneCall("c2", False, (ann,), (bob,), actual_end=at("2026-03-04 10:00"), duration_minutes=5.5),
        PhoneCall("c3", True, (bob,), (ann,), scheduled_end=at("2026-03-11 10:00"), state=CallState.OPEN),
    ]
    k = run(RECORDS, T, calls=calls, party_rules=r).of(ANN_REF)
    assert (k.counts.calls_made, k.counts.calls_received) == (1, 1)
    assert (k.time_spent_by_team_minutes, k.time_spent_by_customer_minutes) == (16, 16)
    assert k.next_interaction is not None and k.next_interaction.kind is Kind.CALL
    assert k.next_interaction.internal_party == BOB
    # The account sees the calls through Ann's contact record.
    assert run(RECORDS, T, calls=calls, party_rules=r).of(FAB).counts.calls_made == 1


def test_lookback_window() -> None:
    old = mail(BOB, [ANN], "2025-03-10 11:59")
    edge = mail(BOB, [ANN], "2025-03-10 12:00")
    k = run(RECORDS, T, messages=[old, edge]).of(ANN_REF)
    assert k.counts.emails_sent == 1


def test_daily_series_uses_the_tenant_time_zone() -> None:
    settings = Settings(zone=ZoneInfo("Asia/Tokyo"))
    as_of = at("2026-03-10 20:00")  # already 03-11 in Tokyo
    k = run(RECORDS, as_of, messages=[mail(BOB, [ANN], "2026-03-01 23:30")], settings=settings).of(ANN_REF)
    assert k.daily[-1].day == date(2026, 3, 11)
    assert k.daily[0].day == date(2026, 1, 11)
    (busy,) = [d for d in k.daily if d.counts.total]
    assert busy.day == date(2026, 3, 2)


def test_only_completed_activities_count() -> None:
    r = rules(users=[InternalUser(BOB, systemuser_id="su-bob")])
    running = meeting(BOB, {ANN: "accepted"}, "2026-03-10 11:00", "2026-03-10 13:00")
    overdue = PhoneCall(
        "c9",
        True,
        (CrmParty("systemuser", "su-bob"),),
        (CrmParty("contact", "ann"),),
        scheduled_end=at("2026-03-09 10:00"),
        state=CallState.OPEN,
    )
    k = run(RECORDS, T, events=[running], calls=[overdue], party_rules=r).of(ANN_REF)
    assert k.counts.total == 0 and k.time_spent_by_team_minutes == 0
    assert k.last_interaction is None and k.next_interaction is None


def test_future_email_is_not_counted_as_of_t() -> None:
    k = run(RECORDS, T, messages=[mail(BOB, [ANN], "2026-03-10 12:00:01")]).of(ANN_REF)
    assert k.counts.total == 0 and k.last_interaction is None and k.next_interaction is None


def test_top_contacts_rank_count_then_recency_and_keep_three() -> None:
    messages = [
        mail(BOB, [ANN], "2026-03-01 09:00"),
        mail(BOB, [ANN], "2026-03-02 09:00"),
        mail(CARL, [ANN], "2026-03-03 09:00"),
        mail(DAN, [ANN], "2026-03-04 09:00"),
        mail(EVE, [ANN], "2026-03-02 10:00"),
    ]
    k = run(RECORDS, T, messages=messages).of(ANN_REF)
    assert [(c.person, c.total) for c in k.top_contacts_ours] == [(BOB, 2), (DAN, 1), (CARL, 1)]
    assert k.top_contacts_ours[0].last_contacted == at("2026-03-02 09:00")


def test_account_theirs_are_its_external_set_members() -> None:
    messages = [mail(BOB, [ANN, ZOE, "max@other.example"], "2026-03-01 09:00"), mail(ZOE, [BOB], "2026-03-02 09:00")]
    k = run(RECORDS, T, messages=messages).of(FAB)
    assert [(c.person, c.emails) for c in k.top_contacts_theirs] == [(ZOE, 2), ("contact:ann", 1)]
    assert k.reasons == {"account-contact": 1, "account-domain": 2}


def test_ignored_and_opted_out_addresses_change_nothing() -> None:
    base = [mail(BOB, [ANN], "2026-03-01 09:00", cc=[CARL]), mail(ANN, [BOB], "2026-03-02 09:00", conv="X")]
    noisy = [
        replace(base[0], cc=(CARL, "noreply@fabrikam.com", "eve@contoso.com")),
        replace(base[1], to=(BOB, "mailer-daemon@contoso.com")),
    ]
    r = rules(users=[InternalUser("eve@contoso.com", opted_out=True)])
    plain = run(RECORDS, T, messages=base, party_rules=r).of(ANN_REF)
    with_noise = run(RECORDS, T, messages=noisy, party_rules=r).of(ANN_REF)
    assert plain == with_noise


def test_health_only_for_open_or_always_scored_records() -> None:
    records = CrmRecords(
        contacts=[Contact("ann", (ANN,))],
        opportunities=[
            Opportunity(
                "won",
                at("2026-01-01 00:00"),
                OpportunityState.WON,
                contact_id="ann",
                actual_close_date=date(2026, 3, 9),
            ),
            Opportunity("open", at("2026-01-01 00:00"), contact_id="ann"),
        ],
    )
    result = run(
        records,
        T,
        messages=[mail(BOB, [ANN], "2026-03-01 09:00")],
        settings=Settings(kpi=KpiConfig(opportunity_requires_team=False)),
    )
    assert result.of(RecordRef(Entity.OPPORTUNITY, "won")).health is None
    assert result.of(RecordRef(Entity.OPPORTUNITY, "open")).health is not None
    assert result.of(ANN_REF).health is not None


@pytest.mark.parametrize("seed", range(4))
def test_kpis_invariant_to_row_order_and_mailbox_copies(seed: int) -> None:
    rng = random.Random(seed)
    ours_people, their_people = [BOB, CARL, DAN, EVE], [ANN, ZOE, "max@fabrikam.com"]
    messages, events = [], []
    for i in range(40):
        ours = rng.random() < 0.5
        sender = rng.choice(ours_people if ours else their_people)
        to = rng.sample(their_people if ours else ours_people, k=rng.randint(1, 2))
        messages.append(mail(sender, to, f"2026-02-{1 + i % 27:02d} {8 + i % 10:02d}:00", conv=f"c{i % 7}"))
    for i in range(6):
        day = f"2026-03-{1 + i:02d}"
        attendees = {ANN: rng.choice(["accepted", "declined"]), CARL: "accepted"}
        events.append(meeting(BOB, attendees, f"{day} 10:00", f"{day} 11:00"))
    plain = run(RECORDS, T, messages=messages, events=events).kpis
    assert plain  # something to compare

    # Every internal mailbox that received a message holds a copy of it; calendars likewise.
    copied = [c for m in messages for c in copies(m, *[p for p in m.to if p in ours_people])]
    copied_events = [*events, *(event_copy(e, CARL) for e in events)]
    rng.shuffle(copied)
    rng.shuffle(copied_events)
    again = run(RECORDS, T, messages=copied, events=copied_events).kpis
    assert again == plain
    for k in plain.values():
        for side in (k.responses.by_us, k.responses.by_them):
            assert side.rate is None or 0.0 <= side.rate <= 1.0
