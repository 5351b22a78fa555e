"""Synced rows -> activities: one per real-world email, meeting or phone call (kpis.md section 2).

Both tiers: *enhanced* takes emails and meetings from Graph (one copy per mailbox) plus the CRM's own
tracked emails, appointments and phone calls; *basic* takes only the CRM's. Copies of one email or
meeting are merged by internet message id / iCal uid, across mailboxes and across the two sources.
Activities do not depend on the as-of time: completed / scheduled is asked of them later.

Decisions where kpis.md is silent:

- The email's sender is its ``from`` address (the author), else ``sender`` (the delegate who sent it).
- Message ids compare without their angle brackets and case-insensitively; iCal uids and global
  object ids compare case-insensitively.
- When Graph and CRM copies of the same email or meeting exist, the Graph copies give participants and
  times (they are what Exchange saw); the CRM copies add their ``regarding`` record.
- With several copies, the earliest ``sentDateTime`` wins; To/Cc are the union of the copies; each
  person appears once per activity (sender before To before Cc), so nobody "reads" their own email.
- A meeting takes start, end and all-day from the organizer's copy when synced, else from the first
  copy by mailbox. Any copy marked cancelled makes the meeting not an activity (cancellation is sent
  to every attendee). Series masters are skipped (calendarView already yields each occurrence).
- An attendee's response: their own responseStatus when their mailbox is synced, else what the
  organizer's copy says, else any decided response (declined first, to avoid counting time for someone
  who may not have come).
- Room and equipment attendees (role ``resource``) are not people and not participants.
- A meeting whose organizer is missing or ignored is not an activity, as for an email's sender. A sent
  meeting needs an external attendee; a received one needs nothing more (kpis.md's literal rule), but
  it only links to a record when it also has an internal participant (section 3).
- A declined attendee is still a participant for linking and direction; it is not an attendee for time
  spent or top contacts.
- Calls: cancelled calls are not activities; an open call is *pending*: it never counts as completed
  (an overdue open call is neither completed nor scheduled). Any call whose time is after T is a
  scheduled call. A call's duration is ``actualdurationminutes`` (0 when missing; no guess from the
  times); a call needs no external party (``regarding`` may link it).
- A CRM email's direction follows the same address rule as a Graph email, not its ``directioncode``,
  so both copies of one email always agree. The enhanced tier reads CRM-tracked emails and
  appointments too (merged with their Graph copies), so an email tracked from an unsynced mailbox
  still counts.
- A system-user party always becomes the user's person key (``PartyRules.systemuser_person``): the
  loader should give every Dataverse system user to ``PartyRules`` (with ``systemuser_id``) so owner
  and team rules, calls and mail all name one person.
- A CRM party names a record (contact, lead, account, system user); a system user is internal and
  becomes its user's primary address; a party without an email address (a phone number) is the person
  ``<entity>:<id>`` and still links by its record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from relinsights.analytics.parties import PartyKind, PartyRules, canonical_address
from relinsights.analytics.records import Entity, RecordRef
from relinsights.analytics.sources import (
    CalendarEvent,
    CallState,
    CrmAppointment,
    CrmEmail,
    CrmParty,
    MailMessage,
    PhoneCall,
)
from relinsights.analytics.timeutil import as_utc


class Kind(StrEnum):
    EMAIL = "email"
    MEETING = "meeting"
    CALL = "call"


class Direction(StrEnum):
    OUTGOING = "outgoing"  # sent email or meeting, call made
    INCOMING = "incoming"  # received email or meeting, call received


class Role(StrEnum):
    FROM = "from"  # email sender, calling party
    TO = "to"
    CC = "cc"
    ORGANIZER = "organizer"
    REQUIRED = "required"
    OPTIONAL = "optional"


class Tier(StrEnum):
    ENHANCED = "enhanced"
    BASIC = "basic"


_T = TypeVar("_T")
_INITIATOR_ROLES = frozenset({Role.FROM, Role.ORGANIZER})
_RECIPIENT_ROLES = frozenset({Role.TO, Role.CC})
_PARTY_ENTITIES = {"contact": Entity.CONTACT, "lead": Entity.LEAD, "account": Entity.ACCOUNT}


@dataclass(frozen=True, slots=True)
class Participant:
    person: str  # identity: an internal user's primary address, else the address, else "<entity>:<id>"
    internal: bool
    role: Role
    address: str | None = None
    party: RecordRef | None = None  # the CRM record a Dataverse activity party names
    attended: bool = True  # meetings: False when declined


@dataclass(frozen=True, slots=True)
class Activity:
    key: str  # dedup identity, e.g. "email:<message id>", "meeting:<ical uid>", "call:<activityid>"
    kind: Kind
    direction: Direction
    time: datetime  # email: sent; meeting: start; call: actual end, else scheduled end (UTC)
    end: datetime  # meeting end; equal to time for emails and calls
    participants: tuple[Participant, ...]  # the initiator (if any) first, each person once
    duration_minutes: float = 0.0  # meetings (0 when all-day) and calls
    all_day: bool = False
    pending: bool = False  # an open CRM phone call: not done, only ever "scheduled"
    message_id: str | None = None
    conversations: tuple[str, ...] = ()  # namespaced conversation ids ("graph:...", "crm:...")
    reply_to: tuple[str, ...] = ()  # In-Reply-To and References message ids
    regarding: tuple[RecordRef, ...] = ()
    # "graph:<id>" / "crm:<activityid>" of every merged copy; empty when built with keep_sources=False (the
    # KPI job: no value it computes reads them, and a year of Graph ids is a large part of its memory).
    sources: tuple[str, ...] = ()

    @property
    def initiator(self) -> Participant | None:
        """The email's sender, the meeting's organizer, the call's calling party.

        The builder puts it first (this is asked millions of times per run, so no search)."""
        first = self.participants[0] if self.participants else None
        return first if first is not None and first.role in _INITIATOR_ROLES else None

    @property
    def recipients(self) -> tuple[Participant, ...]:
        return tuple(p for p in self.participants if p.role in _RECIPIENT_ROLES)

    def completed(self, as_of: datetime) -> bool:
        if self.kind is Kind.MEETING:
            return self.end <= as_of
        return not self.pending and self.time <= as_of

    def scheduled(self, as_of: datetime) -> bool:
        return self.kind is not Kind.EMAIL and self.time > as_of


@dataclass(frozen=True, slots=True)
class ActivitySet:
    activities: tuple[Activity, ...]
    # Rows or merged items dropped, by reason ("draft", "ignored-sender", "cancelled", "no-direction"...).
    skipped: Mapping[str, int] = field(default_factory=dict)


# Compared by identity (never by value: the builder compares persons): hashing one is then cheap.
@dataclass(frozen=True, slots=True, eq=False)
class Who:
    person: str
    kind: PartyKind
    address: str | None = None
    party: RecordRef | None = None

    @property
    def counts(self) -> bool:
        return self.kind is PartyKind.INTERNAL or self.kind is PartyKind.EXTERNAL


def resolve_address(rules: PartyRules, raw: str | None) -> Who | None:
    """Who a raw address is (None: not an address): an internal user's person key, else the address."""
    addr = canonical_address(raw)
    if addr is None:
        return None
    kind = rules.classify(addr)
    return Who(rules.person(addr) if kind is PartyKind.INTERNAL else addr, kind, addr)


class _Resolver:
    """Resolves the addresses and parties of one build, and shares its immutable values.

    Participants, participant tuples and conversation ids are immutable values, and a year of mail
    repeats the same few thousand people in the same roles, the same groups of people and the same
    threads: one object of each per build (not a global cache: nothing outlives the build) keeps millions
    of activities small. Shared objects compare equal to separately made ones: only memory changes.
    """

    def __init__(self, rules: PartyRules, keep_sources: bool = True) -> None:
        self.rules = rules
        self.keep_sources = keep_sources
        self._addresses: dict[str | None, Who | None] = {}
        self._participants: dict[Participant, Participant] = {}
        self._groups: dict[tuple[Participant, ...], tuple[Participant, ...]] = {}
        self._strings: dict[str, str] = {}
        self._string_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._whos: dict[tuple[Who, ...], tuple[Who, ...]] = {}

    def participant(self, who: Who, role: Role, attended: bool = True) -> Participant:
        p = Participant(who.person, who.kind is PartyKind.INTERNAL, role, who.address, who.party, attended)
        return self._participants.setdefault(p, p)

    def group(self, participants: Iterable[Participant]) -> tuple[Participant, ...]:
        t = tuple(participants)
        return self._groups.setdefault(t, t)

    def whos(self, resolved: Iterable[Who | None]) -> tuple[Who, ...]:
        """The resolved people of a To or Cc list (the same lists recur: one tuple each)."""
        t = tuple(w for w in resolved if w is not None)
        return self._whos.setdefault(t, t) if t else ()

    def sources(self, copies: Iterable[_MailCopy | _EventCopy]) -> tuple[str, ...]:
        return tuple(sorted(c.source for c in copies)) if self.keep_sources else ()

    def string(self, value: str) -> str:
        return self._strings.setdefault(value, value)

    def strings(self, values: Iterable[str | None]) -> tuple[str, ...]:
        t = _unique(values)
        return self._string_tuples.setdefault(t, t) if t else ()

    def address(self, raw: str | None) -> Who | None:
        # A year of mail names the same few thousand addresses over and over: resolve each once.
        try:
            return self._addresses[raw]
        except KeyError:
            who = self._addresses[raw] = self._address(raw)
            return who

    def _address(self, raw: str | None) -> Who | None:
        return resolve_address(self.rules, raw)

    def party(self, p: CrmParty) -> Who | None:
        entity = (p.entity or "").lower()
        addr = canonical_address(p.address)
        if entity == "systemuser" and p.id:
            user = self.rules.user_by_systemuser(p.id)
            ignored = (user is not None and user.opted_out) or (
                addr is not None and self.rules.classify(addr) is PartyKind.IGNORED
            )
            # The system user's key, not the address: owner and team rules name users by id.
            kind = PartyKind.IGNORED if ignored else PartyKind.INTERNAL
            return Who(self.rules.systemuser_person(p.id), kind, addr)
        ref = RecordRef(_PARTY_ENTITIES[entity], p.id) if entity in _PARTY_ENTITIES and p.id else None
        if addr is not None:
            kind = self.rules.classify(addr)
            return Who(self.rules.person(addr) if kind is PartyKind.INTERNAL else addr, kind, addr, ref)
        if ref is not None:
            return Who(str(ref), PartyKind.EXTERNAL, None, ref)
        return None

    def mailbox(self, raw: str) -> str:
        who = self.address(raw)
        return who.person if who is not None else raw


def normalise_message_id(raw: str | None) -> str | None:
    if not raw:
        return None
    value = raw.strip().strip("<>").strip().lower()
    return f"<{value}>" if value else None


# ---------------------------------------------------------------- emails


def crm_email_key(e: CrmEmail) -> str:
    """The activity key of a CRM email: its message id's, as a Graph copy of it has, else its own."""
    mid = normalise_message_id(e.message_id)
    return f"email:{mid}" if mid else f"email:crm:{e.activity_id}"


def crm_meeting_key(a: CrmAppointment) -> str:
    """The activity key of a CRM appointment: its global object id's, as a Graph copy of it has, else its own."""
    uid = (a.global_object_id or "").strip().lower()
    return f"meeting:{uid}" if uid else f"meeting:crm:{a.activity_id}"


@dataclass(slots=True)
class _MailCopy:
    key: str
    source: str
    mailbox: str
    sent_at: datetime
    sender: Who | None
    to: tuple[Who, ...]
    cc: tuple[Who, ...]
    message_id: str | None
    conversation: str | None
    reply_to: tuple[str, ...]
    regarding: RecordRef | None


def _graph_mail(m: MailMessage, res: _Resolver, skipped: Counter[str]) -> _MailCopy | None:
    if m.is_draft:
        skipped["draft"] += 1
        return None
    if m.sent_at is None:
        skipped["no-time"] += 1
        return None
    mid = normalise_message_id(m.internet_message_id)
    replies = tuple(x for x in (normalise_message_id(r) for r in (m.in_reply_to, *m.references)) if x)
    return _MailCopy(
        key=f"email:{mid}" if mid else f"email:graph:{m.graph_id}",
        source=f"graph:{m.graph_id}",
        mailbox=res.mailbox(m.mailbox),
        sent_at=as_utc(m.sent_at),
        sender=res.address(m.from_address) or res.address(m.sender_address),
        to=res.whos(map(res.address, m.to)),
        cc=res.whos(map(res.address, m.cc)),  # Bcc is never read: never a participant
        message_id=mid,
        conversation=res.string(f"graph:{m.conversation_id}") if m.conversation_id else None,
        reply_to=replies,
        regarding=None,
    )


def _crm_mail(e: CrmEmail, res: _Resolver, skipped: Counter[str]) -> _MailCopy | None:
    if e.is_draft:
        skipped["draft"] += 1
        return None
    if e.sent_at is None:
        skipped["no-time"] += 1
        return None
    mid = normalise_message_id(e.message_id)
    reply = normalise_message_id(e.in_reply_to)
    return _MailCopy(
        key=crm_email_key(e),
        source=f"crm:{e.activity_id}",
        mailbox="",
        sent_at=as_utc(e.sent_at),
        sender=res.party(e.sender) if e.sender else None,
        to=res.whos(map(res.party, e.to)),
        cc=res.whos(map(res.party, e.cc)),
        message_id=mid,
        conversation=res.string(f"crm:{e.conversation_id}") if e.conversation_id else None,
        reply_to=(reply,) if reply else (),
        regarding=e.regarding,
    )


def _merge_mail(key: str, copies: list[_MailCopy], res: _Resolver, skipped: Counter[str]) -> Activity | None:
    copies = sorted(copies, key=lambda c: c.source)  # the result must not depend on arrival order
    primary = sorted((c for c in copies if c.source.startswith("graph:")), key=lambda c: (c.mailbox, c.source))
    primary = primary or sorted(copies, key=lambda c: c.source)
    sender = next((c.sender for c in primary if c.sender is not None), None)
    if sender is None:
        skipped["no-sender"] += 1
        return None
    if not sender.counts:
        skipped["ignored-sender"] += 1
        return None
    parts: dict[str, Participant] = {sender.person: res.participant(sender, Role.FROM)}
    for copy in primary:
        for whos, role in ((copy.to, Role.TO), (copy.cc, Role.CC)):
            for who in whos:
                if who.counts and who.person not in parts:
                    parts[who.person] = res.participant(who, role)
    recips = [p for p in parts.values() if p.role is not Role.FROM]
    if sender.kind is PartyKind.INTERNAL and any(not p.internal for p in recips):
        direction = Direction.OUTGOING
    elif sender.kind is PartyKind.EXTERNAL and any(p.internal for p in recips):
        direction = Direction.INCOMING
    else:
        skipped["no-direction"] += 1
        return None
    sent = min(c.sent_at for c in primary)
    return Activity(
        key=key,
        kind=Kind.EMAIL,
        direction=direction,
        time=sent,
        end=sent,
        participants=res.group(parts.values()),
        message_id=primary[0].message_id,
        conversations=res.strings(c.conversation for c in copies),
        reply_to=_unique(r for c in copies for r in c.reply_to),
        regarding=_unique(c.regarding for c in copies),
        sources=res.sources(copies),
    )


# ---------------------------------------------------------------- meetings


# Among answers no copy vouches for (neither the attendee's own nor the organizer's): declined first, then 9.
DECIDED = {"declined": 0, "accepted": 1, "tentativelyaccepted": 2}


@dataclass(slots=True)
class _EventCopy:
    key: str
    source: str
    mailbox: str
    start: datetime | None
    end: datetime | None
    all_day: bool
    cancelled: bool
    organizer: Who | None
    attendees: list[tuple[Who, Role, str]]  # response lower-cased, "" when unknown
    own_response: str
    regarding: RecordRef | None


def _graph_event(e: CalendarEvent, res: _Resolver, skipped: Counter[str]) -> _EventCopy | None:
    if (e.event_type or "").lower() == "seriesmaster":
        skipped["series-master"] += 1
        return None
    attendees: list[tuple[Who, Role, str]] = []
    for a in e.attendees:
        role = (a.role or "").lower()
        if role == "resource":
            continue
        who = res.address(a.address)
        if who is not None:
            r = Role.ORGANIZER if role == "organizer" else Role.OPTIONAL if role == "optional" else Role.REQUIRED
            attendees.append((who, r, (a.response or "").lower()))
    uid = (e.ical_uid or "").strip().lower()
    return _EventCopy(
        key=f"meeting:{uid}" if uid else f"meeting:graph:{e.graph_id}",
        source=f"graph:{e.graph_id}",
        mailbox=res.mailbox(e.mailbox),
        start=as_utc(e.start) if e.start else None,
        end=as_utc(e.end) if e.end else None,
        all_day=e.is_all_day,
        cancelled=e.is_cancelled,
        organizer=res.address(e.organizer),
        attendees=attendees,
        own_response=(e.own_response or "").lower(),
        regarding=None,
    )


def _crm_event(a: CrmAppointment, res: _Resolver) -> _EventCopy:
    attendees: list[tuple[Who, Role, str]] = []
    for parties, role in ((a.required, Role.REQUIRED), (a.optional, Role.OPTIONAL)):
        attendees += [(w, role, "") for w in map(res.party, parties) if w is not None]
    return _EventCopy(
        key=crm_meeting_key(a),
        source=f"crm:{a.activity_id}",
        mailbox="",
        start=as_utc(a.start) if a.start else None,
        end=as_utc(a.end) if a.end else None,
        all_day=a.is_all_day,
        cancelled=a.is_cancelled,
        organizer=res.party(a.organizer) if a.organizer else None,
        attendees=attendees,
        own_response="",
        regarding=a.regarding,
    )


def _merge_event(key: str, copies: list[_EventCopy], res: _Resolver, skipped: Counter[str]) -> Activity | None:
    copies = sorted(copies, key=lambda c: c.source)
    if any(c.cancelled for c in copies):
        skipped["cancelled"] += 1
        return None
    primary = sorted((c for c in copies if c.source.startswith("graph:")), key=lambda c: (c.mailbox, c.source))
    primary = primary or sorted(copies, key=lambda c: c.source)
    organizer = next((c.organizer for c in primary if c.organizer is not None), None)
    if organizer is None:
        skipped["no-organizer"] += 1
        return None
    if not organizer.counts:
        skipped["ignored-organizer"] += 1
        return None
    base = next((c for c in primary if c.mailbox == organizer.person), primary[0])
    if base.start is None or base.end is None:
        skipped["no-time"] += 1
        return None
    start, end = base.start, max(base.start, base.end)

    # Best-known response per person: (priority, rank, response); lower wins.
    best: dict[str, tuple[int, int, str]] = {}
    roles: dict[str, tuple[Who, Role]] = {}
    for copy in primary:
        for who, role, response in copy.attendees:
            if who.person == organizer.person or not who.counts:
                continue
            if copy.mailbox == who.person and copy.own_response:
                cand = (0, 0, copy.own_response)
            elif copy.mailbox == organizer.person and response:
                cand = (1, 0, response)
            else:
                cand = (2, DECIDED.get(response, 9), response)
            best[who.person] = min(best.get(who.person, cand), cand)
            if who.person not in roles or (role is Role.REQUIRED and roles[who.person][1] is not Role.REQUIRED):
                roles[who.person] = (who, role)
    parts = [res.participant(organizer, Role.ORGANIZER)]
    for person in sorted(roles, key=lambda p: (roles[p][1] is not Role.REQUIRED, p)):
        who, role = roles[person]
        # Organizer-role rows in an attendee list are the organizer themself, already there.
        role = Role.REQUIRED if role is Role.ORGANIZER else role
        parts.append(res.participant(who, role, attended=best[person][2] != "declined"))

    if organizer.kind is PartyKind.INTERNAL:
        if not any(not p.internal for p in parts):
            skipped["no-external"] += 1
            return None
        direction = Direction.OUTGOING
    else:
        direction = Direction.INCOMING
    duration = 0.0 if base.all_day else (end - start).total_seconds() / 60
    return Activity(
        key=key,
        kind=Kind.MEETING,
        direction=direction,
        time=start,
        end=end,
        participants=res.group(parts),
        duration_minutes=duration,
        all_day=base.all_day,
        regarding=_unique(c.regarding for c in copies),
        sources=res.sources(copies),
    )


# ---------------------------------------------------------------- calls


def _call(c: PhoneCall, res: _Resolver, skipped: Counter[str]) -> Activity | None:
    if c.state is CallState.CANCELLED:
        skipped["cancelled"] += 1
        return None
    when = c.actual_end or c.scheduled_end
    if when is None:
        skipped["no-time"] += 1
        return None
    parts: dict[str, Participant] = {}
    for parties, role in ((c.from_parties, Role.FROM), (c.to_parties, Role.TO)):
        for who in map(res.party, parties):
            if who is not None and who.counts and who.person not in parts:
                parts[who.person] = res.participant(who, role)
    t = as_utc(when)
    return Activity(
        key=f"call:{c.activity_id.lower()}",
        kind=Kind.CALL,
        direction=Direction.OUTGOING if c.outgoing else Direction.INCOMING,
        time=t,
        end=t,
        participants=res.group(parts.values()),
        duration_minutes=max(0.0, float(c.duration_minutes or 0.0)),
        pending=c.state is CallState.OPEN,
        regarding=(c.regarding,) if c.regarding else (),
        sources=(f"crm:{c.activity_id}",) if res.keep_sources else (),
    )


# ---------------------------------------------------------------- all


def build_activities(
    *,
    rules: PartyRules,
    tier: Tier = Tier.ENHANCED,
    messages: Iterable[MailMessage] = (),
    events: Iterable[CalendarEvent] = (),
    crm_emails: Iterable[CrmEmail] = (),
    crm_appointments: Iterable[CrmAppointment] = (),
    phone_calls: Iterable[PhoneCall] = (),
    keep_sources: bool = True,
) -> ActivitySet:
    """Normalise and deduplicate every source into activities, sorted by (time, key).

    In the basic tier the Graph rows are not read (the tenant has enhanced insights off).
    The result does not depend on the order the rows arrive in. keep_sources=False leaves every
    activity's `sources` empty (nothing else changes: copies are still merged and ordered by them).
    """
    res = _Resolver(rules, keep_sources)
    skipped: Counter[str] = Counter()
    # Most emails have one copy: it is kept alone, a list only for the others (millions of small lists).
    mails: dict[str, _MailCopy | list[_MailCopy]] = {}
    meetings: dict[str, list[_EventCopy]] = defaultdict(list)
    if tier is Tier.ENHANCED:
        for m in messages:
            if (mc := _graph_mail(m, res, skipped)) is not None:
                _add_copy(mails, mc)
        for e in events:
            if (ec := _graph_event(e, res, skipped)) is not None:
                meetings[ec.key].append(ec)
    for ce in crm_emails:
        if (mc := _crm_mail(ce, res, skipped)) is not None:
            _add_copy(mails, mc)
    for ca in crm_appointments:
        ec = _crm_event(ca, res)
        meetings[ec.key].append(ec)

    out: list[Activity] = []
    # Popped as merged, so each email's copies are freed while the rest are built (the peak of a big run).
    while mails:
        key, mail_copies = mails.popitem()
        if not isinstance(mail_copies, list):
            mail_copies = [mail_copies]
        if (act := _merge_mail(key, mail_copies, res, skipped)) is not None:
            out.append(act)
    while meetings:
        key, event_copies = meetings.popitem()
        if (act := _merge_event(key, event_copies, res, skipped)) is not None:
            out.append(act)
    seen_calls: set[str] = set()
    for call in sorted(phone_calls, key=lambda c: c.activity_id):
        if call.activity_id.lower() in seen_calls:
            continue
        seen_calls.add(call.activity_id.lower())
        if (act := _call(call, res, skipped)) is not None:
            out.append(act)
    out.sort(key=lambda a: (a.time, a.key))
    return ActivitySet(tuple(out), dict(sorted(skipped.items())))


def _add_copy(mails: dict[str, _MailCopy | list[_MailCopy]], copy: _MailCopy) -> None:
    have = mails.get(copy.key)
    if have is None:
        mails[copy.key] = copy
    elif isinstance(have, list):
        have.append(copy)
    else:
        mails[copy.key] = [have, copy]


def _unique(values: Iterable[_T | None]) -> tuple[_T, ...]:
    seen: dict[_T, None] = {}
    for v in values:
        if v is not None:
            seen.setdefault(v, None)
    return tuple(seen)
