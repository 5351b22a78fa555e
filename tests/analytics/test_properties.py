"""Property-based checks (hypothesis) over generated activity sets: what must hold for any input."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relinsights.analytics import (
    Account,
    Attendee,
    CalendarEvent,
    Contact,
    CrmRecords,
    InternalUser,
    MailMessage,
    RecordKpis,
)

from .factory import copies, rules, run

INTERNAL = ["bob@contoso.com", "carl@contoso.com", "dan@contoso.com"]
EXTERNAL = ["ann@fabrikam.com", "eve@fabrikam.com", "zoe@tailspin.com"]
PEOPLE = INTERNAL + EXTERNAL
T = datetime(2026, 3, 10, 12, tzinfo=UTC)
RECORDS = CrmRecords(
    contacts=(Contact("ann", ("ann@fabrikam.com",), "fab"), Contact("zoe", ("zoe@tailspin.com",))),
    accounts=(Account("fab", website_url="https://www.fabrikam.com"),),
)
RESPONSES = ["accepted", "declined", "tentativelyAccepted", "none", None]


@st.composite
def emails(draw: st.DrawFn) -> list[MailMessage]:
    out = []
    for n in range(draw(st.integers(0, 14))):
        sender = draw(st.sampled_from(PEOPLE))
        to = draw(st.lists(st.sampled_from([p for p in PEOPLE if p != sender]), min_size=1, max_size=3, unique=True))
        cc = draw(
            st.lists(st.sampled_from([p for p in PEOPLE if p != sender and p not in to]), max_size=2, unique=True)
        )
        minutes = draw(st.integers(0, 60 * 24 * 60))  # within 60 days before T
        out.append(
            MailMessage(
                graph_id=f"m{n}",
                mailbox=sender,
                sent_at=T - timedelta(minutes=minutes),
                from_address=sender,
                to=tuple(to),
                cc=tuple(cc),
                internet_message_id=f"<m{n}@x>",
                conversation_id=f"c{draw(st.integers(0, 4))}",
            )
        )
    return out


@st.composite
def meetings(draw: st.DrawFn) -> list[CalendarEvent]:
    out = []
    for n in range(draw(st.integers(0, 5))):
        organizer = draw(st.sampled_from(PEOPLE))
        attendees = draw(
            st.lists(st.sampled_from([p for p in PEOPLE if p != organizer]), min_size=1, max_size=4, unique=True)
        )
        start = T + timedelta(hours=draw(st.integers(-24 * 50, 24 * 10)))
        out.append(
            CalendarEvent(
                graph_id=f"e{n}",
                mailbox=organizer,
                start=start,
                end=start + timedelta(minutes=draw(st.sampled_from([15, 30, 60, 90]))),
                organizer=organizer,
                attendees=tuple(Attendee(a, "required", draw(st.sampled_from(RESPONSES))) for a in attendees),
                ical_uid=f"uid{n}",
            )
        )
    return out


def summary(kpis: dict) -> dict:
    """The values that must not move (everything except object identities)."""
    out = {}
    for ref, k in kpis.items():
        assert isinstance(k, RecordKpis)
        out[str(ref)] = (
            k.counts,
            k.time_spent_by_team_minutes,
            k.time_spent_by_customer_minutes,
            k.ratio_by_us,
            k.ratio_by_them,
            k.responses,
            k.last_interaction and (k.last_interaction.time, k.last_interaction.kind),
            k.next_interaction and (k.next_interaction.time, k.next_interaction.kind),
            k.daily,
            k.health and (k.health.score, k.health.state, k.health.trend),
        )
    return out


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(emails(), meetings(), st.randoms(use_true_random=False))
def test_order_and_mailbox_copies_do_not_change_kpis(msgs: list, evs: list, rnd: random.Random) -> None:
    base = summary(run(RECORDS, T, messages=msgs, events=evs).kpis)
    # Every internal recipient's mailbox holds its own copy; rows arrive in any order.
    copied = [c for m in msgs for c in copies(m, *[p for p in (*m.to, *m.cc) if p in INTERNAL])]
    ev_copies = [
        replace(e, graph_id=f"{e.graph_id}-{a.address}", mailbox=a.address)
        for e in evs
        for a in e.attendees
        if a.address in INTERNAL
    ]
    rows, erows = copied + msgs, evs + ev_copies
    rnd.shuffle(rows)
    rnd.shuffle(erows)
    assert summary(run(RECORDS, T, messages=rows, events=erows).kpis) == base


@FAST
@given(emails(), meetings())
def test_response_rates_stay_between_0_and_1(msgs: list, evs: list) -> None:
    for k in run(RECORDS, T, messages=msgs, events=evs).kpis.values():
        for side in (k.responses.by_us, k.responses.by_them):
            assert side.rate is None or 0.0 <= side.rate <= 1.0
            assert side.answered <= side.judged <= side.turns
            assert (side.rate is None) == (side.judged == 0)
        assert k.time_spent_by_team_minutes >= 0 and k.time_spent_by_customer_minutes >= 0


@FAST
@given(emails(), st.sampled_from(["noreply@fabrikam.com", "notifications@tailspin.com", "gone@contoso.com"]))
def test_ignored_or_opted_out_addresses_change_nothing(msgs: list, extra: str) -> None:
    opted_out = InternalUser("gone@contoso.com", opted_out=True)
    party_rules = rules(users=[opted_out])
    base = summary(run(RECORDS, T, messages=msgs, party_rules=party_rules).kpis)
    widened = [replace(m, cc=(*m.cc, extra)) for m in msgs]
    assert summary(run(RECORDS, T, messages=widened, party_rules=party_rules).kpis) == base
