"""Small builders for analytics tests: rows, rules and a one-call pipeline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import count
from typing import overload

import polars as pl

from relinsights.analytics import (
    Activity,
    ActivitySet,
    Attendee,
    CalendarEvent,
    CrmAppointment,
    CrmEmail,
    CrmRecords,
    InternalUser,
    MailMessage,
    MatchResult,
    PartyRules,
    PhoneCall,
    RecordIndex,
    RecordKpis,
    RecordRef,
    Settings,
    Tier,
    assign_threads,
    build_activities,
    compute_all,
    match_activities,
)
from relinsights.analytics.activity_frames import build_activity_frames
from relinsights.analytics.activity_table import ActivityTable, settle_threads
from relinsights.analytics.columnar import compute_kpis
from relinsights.analytics.frames import ActivityFrames, FrameActivities, frames_of
from relinsights.analytics.mail_frames import mail_rows
from relinsights.analytics.match_frames import match_frames
from relinsights.analytics.matching import LinkTable
from relinsights.analytics.meeting_frames import event_rows
from relinsights.config import KpiConfig

_ids = count(1)


def at(text: str) -> datetime:
    """'2026-03-01 09:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# The users and address spellings the column builders' hypothesis tests draw from: internal (with an alias),
# external, ignored (robot, opted out), invalid and raw spellings of one address.
SPELLING_USERS = [
    InternalUser("bob@contoso.com", ("robert@contoso.com",)),
    InternalUser("carl@contoso.com"),
    InternalUser("olga@contoso.com", opted_out=True),
]
SPELLINGS = [
    "bob@contoso.com",
    "Robert@Contoso.com",
    "carl@contoso.com",
    "olga@contoso.com",
    "ann@fabrikam.com",
    " <ANN@fabrikam.com> ",
    "eve@fabrikam.com",
    "zoe@tailspin.com",
    "noreply@fabrikam.com",
    "not an address",
    "",
]


def rules(
    *,
    domains: Sequence[str] = ("contoso.com",),
    users: Iterable[InternalUser] = (),
    kpi: KpiConfig | None = None,
) -> PartyRules:
    return PartyRules(internal_domains=domains, users=users, kpi=kpi or KpiConfig())


def mail(
    sender: str,
    to: Sequence[str],
    when: str,
    *,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    conv: str | None = None,
    mid: str | None = "auto",
    mailbox: str | None = None,
    in_reply_to: str | None = None,
    draft: bool = False,
) -> MailMessage:
    n = next(_ids)
    return MailMessage(
        graph_id=f"g{n}",
        mailbox=mailbox or sender,
        sent_at=at(when),
        from_address=sender,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        internet_message_id=f"<m{n}@test>" if mid == "auto" else mid,
        conversation_id=conv or f"conv{n}",
        in_reply_to=in_reply_to,
        is_draft=draft,
    )


def copies(message: MailMessage, *mailboxes: str) -> list[MailMessage]:
    """The same message as stored in several mailboxes (each copy has its own Graph id)."""
    out = [message]
    for i, box in enumerate(mailboxes):
        out.append(
            MailMessage(
                graph_id=f"{message.graph_id}-{i}",
                mailbox=box,
                sent_at=message.sent_at,
                from_address=message.from_address,
                to=message.to,
                cc=message.cc,
                bcc=(),  # only the sender's copy has Bcc
                internet_message_id=message.internet_message_id,
                conversation_id=message.conversation_id,
                in_reply_to=message.in_reply_to,
            )
        )
    return out


def meeting(
    organizer: str,
    attendees: Mapping[str, str | None],
    start: str,
    end: str,
    *,
    mailbox: str | None = None,
    uid: str | None = "auto",
    all_day: bool = False,
    cancelled: bool = False,
    own_response: str | None = None,
    event_type: str | None = "singleInstance",
    resources: Sequence[str] = (),
) -> CalendarEvent:
    n = next(_ids)
    atts = tuple(Attendee(a, "required", r) for a, r in attendees.items())
    atts += tuple(Attendee(r, "resource", "accepted") for r in resources)
    return CalendarEvent(
        graph_id=f"e{n}",
        mailbox=mailbox or organizer,
        start=at(start),
        end=at(end),
        organizer=organizer,
        attendees=atts,
        ical_uid=f"UID{n}" if uid == "auto" else uid,
        is_all_day=all_day,
        is_cancelled=cancelled,
        event_type=event_type,
        own_response=own_response,
    )


def event_copy(event: CalendarEvent, mailbox: str, **changes: object) -> CalendarEvent:
    from dataclasses import replace

    return replace(event, graph_id=f"{event.graph_id}-{mailbox}", mailbox=mailbox, **changes)  # type: ignore[arg-type]


@dataclass
class Run:
    activities: ActivitySet
    match: MatchResult
    kpis: dict[RecordRef, RecordKpis]

    def of(self, ref: RecordRef) -> RecordKpis:
        return self.kpis[ref]


def run(
    records: CrmRecords,
    as_of: datetime,
    *,
    messages: Iterable[MailMessage] = (),
    events: Iterable[CalendarEvent] = (),
    crm_emails: Iterable[CrmEmail] = (),
    crm_appointments: Iterable[CrmAppointment] = (),
    calls: Iterable[PhoneCall] = (),
    party_rules: PartyRules | None = None,
    settings: Settings | None = None,
    tier: Tier = Tier.ENHANCED,
) -> Run:
    settings = settings or Settings()
    party_rules = party_rules or rules(kpi=settings.kpi)
    messages, events, crm_emails = list(messages), list(events), list(crm_emails)
    crm_appointments, calls = list(crm_appointments), list(calls)
    acts = build_activities(
        rules=party_rules,
        tier=tier,
        messages=messages,
        events=events,
        crm_emails=crm_emails,
        crm_appointments=crm_appointments,
        phone_calls=calls,
    )
    index = RecordIndex(records, party_rules, kpi=settings.kpi, zone=settings.zone)
    match = match_activities(acts.activities, index)
    kpis = compute_all(match, as_of, settings, health_for=records.health_refs())
    # Every analytics test run also holds the column engine to the per-record reference, value by value.
    threads = assign_threads({lk.activity.key: lk.activity for links in match.links.values() for lk in links}.values())
    columnar = compute_kpis(
        match.links, as_of, settings, threads=threads, identities=match.identities, health_for=records.health_refs()
    )
    assert {k.record: k for k in columnar} == kpis

    # ...and the job's column pipeline (frames built from the rows, matched as joins) to the same.
    def build(settle: bool, spill_keys: bool = False) -> tuple[ActivityFrames, dict[str, int]]:
        return build_activity_frames(
            rules=party_rules,
            tier=tier,
            mail=mail_rows(messages),
            meetings=event_rows(events),
            crm_emails=crm_emails,
            crm_appointments=crm_appointments,
            phone_calls=calls,
            settle=settle,
            spill_keys=spill_keys,
        )

    frames, skipped = build(settle=False)
    assert list(FrameActivities(frames)) == [replace(a, sources=()) for a in acts.activities]
    assert skipped == dict(acts.skipped)
    lazy = FrameActivities(frames)
    framed = match_frames(frames, index, lazy)
    assert dict(framed.links) == {
        ref: tuple(replace(lk, activity=replace(lk.activity, sources=())) for lk in links)
        for ref, links in match.links.items()
    }
    # As the job builds them: each email's thread tokens settled into one naming its thread before the pieces
    # are sorted into one, the keys kept in a file, and the frames compacted. The same as settling the frames
    # built above, but for the names of the threads (this run's numbers).
    settled = build(settle=True, spill_keys=True)[0].compacted()
    after = settle_threads(frames)
    assert settled.parts.equals(after.parts)
    assert settled.key_column().equals(after.acts.get_column("key"))
    assert settled.acts.drop("conversations", "key_h", "krank").equals(after.acts.drop("conversations", "key"))
    assert settled.key_order().equals(after.key_order())
    tokens = [f.acts.get_column("conversations").list.join("\x00") for f in (settled, after)]
    assert same_partition(*tokens)
    table = ActivityTable(settled, as_of, settings, identities=framed.identities, acts=lazy)
    engine = compute_kpis(framed.links, as_of, settings, health_for=records.health_refs(), table=table)
    assert {k.record: k for k in engine} == kpis
    return Run(acts, match, kpis)


def same_partition(a: pl.Series, b: pl.Series) -> bool:
    """Whether two columns split the rows alike (equal values in one exactly where equal in the other)."""
    pairs = pl.DataFrame({"a": a, "b": b})
    return pairs.n_unique() == pairs.select("a").n_unique() == pairs.select("b").n_unique()


class _Guarded(Sequence[Activity]):
    """The activities, refusing to be read while armed: match_frames must only hand them to the LinkTable."""

    def __init__(self, acts: Sequence[Activity]) -> None:
        self.acts, self.armed = acts, True

    def __len__(self) -> int:
        return len(self.acts)

    @overload
    def __getitem__(self, i: int) -> Activity: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Activity]: ...
    def __getitem__(self, i: int | slice) -> Activity | Sequence[Activity]:
        assert not self.armed, "match_frames read an activity"
        return self.acts[i]

    def __iter__(self) -> Iterator[Activity]:
        assert not self.armed, "match_frames iterated the activities"
        return iter(self.acts)


def check(acts: Sequence[Activity], index: RecordIndex) -> MatchResult:
    """Both results, asserted equal in everything match_activities promises; returns the reference."""
    want = match_activities(acts, index)
    guarded = _Guarded(acts)
    got = match_frames(frames_of(acts), index, guarded)
    guarded.armed = False
    assert isinstance(got.links, LinkTable) and isinstance(want.links, LinkTable)
    assert dict(got.links) == dict(want.links)
    assert list(got.links) == list(want.links)  # records in order of their first link
    # The compact form too: the same (position, shape) pairs and the same shapes, numbered alike.
    assert {ref: got.links.pairs(ref) for ref in got.links} == {ref: want.links.pairs(ref) for ref in want.links}
    assert list(got.links.shapes) == list(want.links.shapes)
    assert got.link_count == want.link_count
    # Equal reasons tuples are one object, and equal member sets.
    for part in (0, 1):
        objects = [shape[part] for shape in got.links.shapes]
        assert len({id(o) for o in objects}) == len(set(objects))
    assert got.ambiguous_domains == want.ambiguous_domains
    assert got.identities == want.identities
    return want
