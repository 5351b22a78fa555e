"""The KPIs of one record as of T (kpis.md section 5), from its links.

Decisions where kpis.md is silent:

- Counts, time spent, ratios, responses, last interaction and top contacts use the record's completed
  linked activities whose time is in [T - lookback_days, T]. The 60-day series uses completed
  activities by their tenant-local day, whatever the lookback.
- The sent/received ratios are over all kinds: (emails sent + meetings sent + calls made) against
  (emails received + meetings received + calls received); not rounded (the writer rounds to the
  column's precision). Empty (None) when the divisor is 0.
- Time spent is summed exactly and rounded half up to whole minutes, once at the end. Only attending
  people count for a meeting (the organizer always); an email's sender is never also one of its readers.
- "Internal party" of an interaction: the internal sender / organizer / calling user when it is ours,
  else the first internal recipient / attendee / called user; None when none is known.
- Next interaction: the earliest linked meeting or call that starts after T (no upper bound; the
  calendar sync window bounds it). Ties on time go to the smaller activity key.
- Top contacts count the completed activities a person took part in (sender, To/Cc, organizer,
  attending attendee, call party); a declined attendee did not take part. "Theirs" are the link's
  members (the record's external set); a contact's several addresses and calls are one person.
  Order: most activities, then most recent, then person key. Each carries the addresses seen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

from relinsights.analytics.activities import Activity, Direction, Kind, Participant, Role
from relinsights.analytics.health import Health, compute_health, round_half_up
from relinsights.analytics.matching import Link, MatchResult
from relinsights.analytics.records import RecordRef
from relinsights.analytics.responses import ResponseKpis, assign_threads, build_turns, summarise_turns
from relinsights.analytics.settings import Settings
from relinsights.analytics.timeutil import local_date, start_of_local_day

SERIES_DAYS = 60
TOP_CONTACTS = 3


@dataclass(frozen=True, slots=True)
class Counts:
    emails_sent: int = 0
    emails_received: int = 0
    meetings_sent: int = 0
    meetings_received: int = 0
    calls_made: int = 0
    calls_received: int = 0

    @property
    def sent(self) -> int:
        return self.emails_sent + self.meetings_sent + self.calls_made

    @property
    def received(self) -> int:
        return self.emails_received + self.meetings_received + self.calls_received

    @property
    def total(self) -> int:
        return (
            self.emails_sent
            + self.emails_received
            + self.meetings_sent
            + self.meetings_received
            + self.calls_made
            + self.calls_received
        )


_COUNT_FIELD = {
    (Kind.EMAIL, Direction.OUTGOING): "emails_sent",
    (Kind.EMAIL, Direction.INCOMING): "emails_received",
    (Kind.MEETING, Direction.OUTGOING): "meetings_sent",
    (Kind.MEETING, Direction.INCOMING): "meetings_received",
    (Kind.CALL, Direction.OUTGOING): "calls_made",
    (Kind.CALL, Direction.INCOMING): "calls_received",
}


NO_COUNTS = Counts()
_SLOT = {key: i for i, key in enumerate(_COUNT_FIELD)}


def count_activities(activities: Iterable[Activity]) -> Counts:
    tally = [0] * len(_SLOT)
    for a in activities:
        tally[_SLOT[(a.kind, a.direction)]] += 1
    return Counts(*tally)


@dataclass(frozen=True, slots=True)
class DailyCounts:
    day: date
    counts: Counts


class DailySeries(tuple[DailyCounts, ...]):
    """A record's series (SERIES_DAYS DailyCounts, oldest first; a tuple) that also holds its active days, those
    with a count, in order (`active`): most of a series' days are empty, and a payload writes only the others
    (compute/payload.py: looking at all 60 days of every record was its costliest line, 0.4 s at 20,000)."""

    active: tuple[DailyCounts, ...]

    def __new__(cls, days: Iterable[DailyCounts], active: Iterable[DailyCounts] | None = None) -> DailySeries:
        series = super().__new__(cls, days)
        if active is None:  # (most days share the one empty Counts: skipped by identity before adding up)
            active = (d for d in series if d.counts is not NO_COUNTS and d.counts.total)
        series.active = tuple(active)
        return series


@dataclass(frozen=True, slots=True)
class Interaction:
    time: datetime
    kind: Kind
    direction: Direction
    activity_key: str
    internal_party: str | None


@dataclass(frozen=True, slots=True)
class TopContact:
    person: str  # internal: primary address; external: "contact:<id>" or the address
    addresses: tuple[str, ...]
    emails: int
    meetings: int
    calls: int
    last_contacted: datetime

    @property
    def total(self) -> int:
        return self.emails + self.meetings + self.calls


@dataclass(frozen=True, slots=True)
class RecordKpis:
    record: RecordRef
    as_of: datetime
    counts: Counts
    time_spent_by_team_minutes: int
    time_spent_by_customer_minutes: int
    ratio_by_us: float | None  # sent / received
    ratio_by_them: float | None  # received / sent
    responses: ResponseKpis
    last_interaction: Interaction | None
    next_interaction: Interaction | None
    top_contacts_ours: tuple[TopContact, ...]
    top_contacts_theirs: tuple[TopContact, ...]
    daily: DailySeries  # SERIES_DAYS entries, oldest first
    health: Health | None = None
    reasons: Mapping[str, int] = field(default_factory=dict)  # link reasons over the counted activities


def compute_record_kpis(
    record: RecordRef,
    links: Sequence[Link],
    as_of: datetime,
    settings: Settings,
    *,
    threads: Mapping[str, str] | None = None,
    identities: Mapping[str, str] | None = None,
    with_health: bool = True,
) -> RecordKpis:
    """Every KPI of section 5 for one record. `threads` (from `assign_threads` over all activities)
    lets In-Reply-To chains run through emails not linked to this record; `identities` merges a
    contact's addresses in the top contacts."""
    identities = identities or {}
    start = as_of - timedelta(days=settings.lookback_days)
    counted = [lk for lk in links if lk.activity.completed(as_of) and lk.activity.time >= start]
    acts = [lk.activity for lk in counted]
    counts = count_activities(acts)
    team, customer = _time_spent(counted, settings)

    emails = [a for a in acts if a.kind is Kind.EMAIL]
    turns = build_turns(emails, as_of=as_of, kpi=settings.kpi, zone=settings.zone, threads=threads)
    health = None
    if with_health:
        health = compute_health([lk.activity for lk in links], as_of, settings, threads=threads, turns=turns)

    last = max(acts, key=lambda a: (a.time, a.key), default=None)
    upcoming = [lk.activity for lk in links if lk.activity.scheduled(as_of)]
    nxt = min(upcoming, key=lambda a: (a.time, a.key), default=None)
    return RecordKpis(
        record=record,
        as_of=as_of,
        counts=counts,
        time_spent_by_team_minutes=round_half_up(team),
        time_spent_by_customer_minutes=round_half_up(customer),
        ratio_by_us=counts.sent / counts.received if counts.received else None,
        ratio_by_them=counts.received / counts.sent if counts.sent else None,
        responses=summarise_turns(turns),
        last_interaction=interaction_of(last),
        next_interaction=interaction_of(nxt),
        top_contacts_ours=_top(counted, lambda lk, p: p.internal, lambda p: p.person),
        top_contacts_theirs=_top(
            counted, lambda lk, p: p.person in lk.members, lambda p: identities.get(p.person, p.person)
        ),
        daily=daily_series(links, as_of, settings),
        health=health,
        reasons=dict(sorted(Counter(r for lk in counted for r in lk.reasons).items())),
    )


def compute_all(
    match: MatchResult,
    as_of: datetime,
    settings: Settings,
    *,
    health_for: Iterable[RecordRef] | None = None,
    threads: Mapping[str, str] | None = None,
) -> dict[RecordRef, RecordKpis]:
    """KPIs of every linked record. Health only for `health_for` (e.g. CrmRecords.health_refs()), or all."""
    if threads is None:
        seen = {lk.activity.key: lk.activity for links in match.links.values() for lk in links}
        threads = assign_threads(seen.values())
    wanted = set(health_for) if health_for is not None else None
    return {
        ref: compute_record_kpis(
            ref,
            links,
            as_of,
            settings,
            threads=threads,
            identities=match.identities,
            with_health=wanted is None or ref in wanted,
        )
        for ref, links in sorted(match.links.items())
    }


def daily_series(links: Sequence[Link], as_of: datetime, settings: Settings) -> DailySeries:
    """The six counts per tenant-local day, for the SERIES_DAYS days ending on T's local date."""
    last_day = local_date(as_of, settings.zone)
    first_day = last_day - timedelta(days=SERIES_DAYS - 1)
    since = start_of_local_day(first_day, settings.zone)
    per_day: dict[date, list[Activity]] = {}
    for lk in links:
        a = lk.activity
        if a.time >= since and a.completed(as_of):
            d = local_date(a.time, settings.zone)
            if first_day <= d <= last_day:
                per_day.setdefault(d, []).append(a)
    return DailySeries(
        DailyCounts(d, count_activities(per_day[d])) if d in per_day else empty_day(d) for d in series_dates(last_day)
    )


# Every record's series names the same 60 days, mostly empty: make those once per run, not once per record.
@lru_cache(maxsize=4)
def series_dates(last_day: date) -> tuple[date, ...]:
    return tuple(last_day - timedelta(days=SERIES_DAYS - 1 - i) for i in range(SERIES_DAYS))


@lru_cache(maxsize=4 * SERIES_DAYS)
def empty_day(day: date) -> DailyCounts:
    return DailyCounts(day, NO_COUNTS)


def _time_spent(links: Iterable[Link], settings: Settings) -> tuple[float, float]:
    team: list[float] = []  # meeting and call minutes, one term per activity
    customer: list[float] = []
    team_write = team_read = customer_write = customer_read = 0  # email participants by role
    for lk in links:
        a = lk.activity
        if a.kind is Kind.MEETING:
            if not a.all_day:
                team.append(a.duration_minutes * sum(1 for p in a.participants if p.internal and p.attended))
                customer.append(
                    a.duration_minutes * sum(1 for p in a.participants if p.person in lk.members and p.attended)
                )
        elif a.kind is Kind.CALL:
            team.append(a.duration_minutes)
            customer.append(a.duration_minutes)
        else:
            for p in a.participants:
                writes = p.role is Role.FROM
                if p.internal:
                    team_write += writes
                    team_read += not writes
                if p.person in lk.members:
                    customer_write += writes
                    customer_read += not writes
    return (
        minutes_spent(team_write, team_read, team, settings),
        minutes_spent(customer_write, customer_read, customer, settings),
    )


def minutes_spent(writes: int, reads: int, terms: Iterable[float], settings: Settings) -> float:
    """Emails written and read at the configured minutes, plus meeting and call minutes; summed exactly
    (fsum), so the total does not depend on the order of the activities."""
    kpi = settings.kpi
    return math.fsum([kpi.email_write_minutes * writes, kpi.email_read_minutes * reads, *terms])


def interaction_of(a: Activity | None) -> Interaction | None:
    if a is None:
        return None
    init = a.initiator
    party = init if init is not None and init.internal else next((p for p in a.participants if p.internal), None)
    return Interaction(a.time, a.kind, a.direction, a.key, party.person if party else None)


def _top(
    links: Sequence[Link],
    include: Callable[[Link, Participant], bool],
    identity: Callable[[Participant], str],
) -> tuple[TopContact, ...]:
    kinds: dict[str, Counter[Kind]] = {}
    last: dict[str, datetime] = {}
    addresses: dict[str, set[str]] = {}
    for lk in links:
        a = lk.activity
        people: set[str] = set()
        for p in a.participants:
            if not p.attended or not include(lk, p):
                continue
            who = identity(p)
            if p.address:
                addresses.setdefault(who, set()).add(p.address)
            people.add(who)
        for who in people:  # one activity counts once per person, whatever their roles in it
            kinds.setdefault(who, Counter())[a.kind] += 1
            if who not in last or a.time > last[who]:
                last[who] = a.time
    ranked = sorted(kinds, key=lambda w: (-sum(kinds[w].values()), -last[w].timestamp(), w))
    return tuple(
        TopContact(
            person=w,
            addresses=tuple(sorted(addresses.get(w, ()))),
            emails=kinds[w][Kind.EMAIL],
            meetings=kinds[w][Kind.MEETING],
            calls=kinds[w][Kind.CALL],
            last_contacted=last[w],
        )
        for w in ranked[:TOP_CONTACTS]
    )
