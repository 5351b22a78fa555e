"""Threads, turns, response times and response rates (kpis.md 5.1).

Decisions where kpis.md is silent:

- Threads are the connected groups of emails sharing a conversation id (Graph ``conversationId`` or
  the CRM's ``conversationtrackingid``, kept apart by namespace) or joined by In-Reply-To/References:
  an email is joined to every message id it refers to, even one we do not hold, so two replies to an
  unsynced parent share its thread.
- Emails of one thread are walked in (time, key) order, so equal times are ordered deterministically.
- "Within the window" is inclusive: a reply exactly ``response_window_hours`` after the opening counts
  as answered. An open turn is judged when strictly older than the window.
- The opener is a person: an internal opener answered at another of their aliases is still answered.
- In business-hours mode only the response *time* is measured in working time; answered or not is
  still judged on elapsed time (the window is a promise to the customer, not a working-time budget).
- Which emails take part is the caller's choice (kpis.py walks a record's linked emails in the
  lookback window); response times and medians are rounded to 2 decimals, rates are not rounded.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from relinsights.analytics.activities import Activity, Kind
from relinsights.analytics.timeutil import working_seconds
from relinsights.config import KpiConfig


class Side(StrEnum):
    OURS = "ours"  # opened by an internal sender, answered (or not) by the customer
    THEIRS = "theirs"  # opened by the customer, answered (or not) by us


@dataclass(frozen=True, slots=True)
class Turn:
    side: Side
    thread: str
    opener: str  # person who sent the opening email
    opening_key: str
    opened_at: datetime
    judged: bool
    answered: bool = False
    closing_key: str | None = None
    closed_at: datetime | None = None
    response_hours: float | None = None  # answered turns only; working hours in business-hours mode


@dataclass(frozen=True, slots=True)
class SideResponse:
    turns: int
    judged: int
    answered: int
    rate: float | None  # answered / judged; None (empty) when nothing is judged
    mean_hours: float | None  # None when no turn was answered
    median_hours: float | None


@dataclass(frozen=True, slots=True)
class ResponseKpis:
    by_us: SideResponse  # over the customer's turns
    by_them: SideResponse  # over our turns


def assign_threads(activities: Iterable[Activity]) -> dict[str, str]:
    """Email key -> thread id (the smallest email key of its thread, so it is stable).

    A union-find whose only nodes are the emails' own keys (no new object per email: over a year of mail
    namespaced nodes per conversation and message id were the KPI job's memory peak). A conversation or
    message id is represented by the first email that names it, and every later email naming it joins that
    email's group: the same connectivity. Groups are joined under their smaller key, so each root is its
    thread's name and the parent dictionary becomes the result in place."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    emails = [a for a in activities if a.kind is Kind.EMAIL]
    # An email's own message id only joins it to an email that refers to it, or to another email with
    # that id: the builder keys an email by its id ("email:<id>"), so all of those are one node already,
    # and the id needs no entry unless it is referred to or some email with it has another key.
    referenced = {ref for a in emails for ref in a.reply_to}
    conversations: dict[str, str] = {}
    message_ids: dict[str, str] = {}
    for act in emails:
        key = act.key
        if key not in parent:
            parent[key] = key
        for conv in act.conversations:
            union(key, conversations.setdefault(conv, key))
        mid = act.message_id
        if not mid:
            pass
        elif mid in referenced:
            union(key, message_ids.setdefault(mid, key))
        elif _keyed_by(key, mid):
            other = message_ids.get(mid)  # an email with this id and another key, seen before
            if other is not None:
                union(key, other)
        else:
            union(key, message_ids.setdefault(mid, key))
            own = "email:" + mid  # the email keyed by this id, if seen before
            if own in parent:
                union(key, own)
        for ref in act.reply_to:
            union(key, message_ids.setdefault(ref, key))
    del emails, referenced, conversations, message_ids
    for key in parent:  # every root is the smallest key of its group: the parent of all becomes the thread
        parent[key] = find(key)
    return parent


def _keyed_by(key: str, message_id: str) -> bool:
    """key == "email:" + message_id, without making that string."""
    return len(key) == len(message_id) + 6 and key.startswith("email:") and key.endswith(message_id)


def build_turns(
    emails: Iterable[Activity],
    *,
    as_of: datetime,
    kpi: KpiConfig,
    zone: tzinfo,
    threads: Mapping[str, str] | None = None,
) -> list[Turn]:
    """Walk each thread of these emails (those sent by `as_of`) and return its turns."""
    emails = [e for e in emails if e.kind is Kind.EMAIL and e.time <= as_of]
    if threads is None:
        threads = assign_threads(emails)
    by_thread: dict[str, list[Activity]] = defaultdict(list)
    for e in emails:
        by_thread[threads.get(e.key, e.key)].append(e)
    window = timedelta(hours=kpi.response_window_hours)
    turns: list[Turn] = []
    for thread, items in sorted(by_thread.items()):
        items.sort(key=lambda a: (a.time, a.key))
        opening: Activity | None = None
        for email in items:
            side = _side(email)
            if opening is None:
                opening = email
                continue
            if side is _side(opening):
                continue  # joins the open turn
            opener = _opener(opening)
            answered = email.time - opening.time <= window and opener in {p.person for p in email.recipients}
            hours = response_hours(opening.time, email.time, kpi, zone) if answered else None
            turns.append(
                Turn(
                    _side(opening),
                    thread,
                    opener,
                    opening.key,
                    opening.time,
                    True,
                    answered,
                    email.key,
                    email.time,
                    hours,
                )
            )
            opening = email
        if opening is not None:
            judged = as_of - opening.time > window
            turns.append(Turn(_side(opening), thread, _opener(opening), opening.key, opening.time, judged))
    return turns


def summarise_turns(turns: Sequence[Turn], *, opened_since: datetime | None = None) -> ResponseKpis:
    """Response KPIs of both sides, over the turns opened at or after `opened_since` (all when None)."""
    if opened_since is not None:
        turns = [t for t in turns if t.opened_at >= opened_since]
    return ResponseKpis(
        by_us=_side_stats([t for t in turns if t.side is Side.THEIRS]),
        by_them=_side_stats([t for t in turns if t.side is Side.OURS]),
    )


def _side_stats(turns: Sequence[Turn]) -> SideResponse:
    judged = [t for t in turns if t.judged]
    return side_response(
        turns=len(turns),
        judged=len(judged),
        answered=sum(1 for t in judged if t.answered),
        hours=[t.response_hours for t in judged if t.answered and t.response_hours is not None],
    )


def side_response(*, turns: int, judged: int, answered: int, hours: Sequence[float]) -> SideResponse:
    """One side's response KPIs from its turn counts and the response times of its answered turns."""
    return SideResponse(
        turns=turns,
        judged=judged,
        answered=answered,
        rate=answered / judged if judged else None,
        mean_hours=round(statistics.fmean(hours), 2) if hours else None,
        median_hours=round(statistics.median(hours), 2) if hours else None,
    )


def _side(email: Activity) -> Side:
    sender = email.initiator
    return Side.OURS if sender is not None and sender.internal else Side.THEIRS


def _opener(email: Activity) -> str:
    sender = email.initiator
    return sender.person if sender is not None else ""


def response_hours(start: datetime, end: datetime, kpi: KpiConfig, zone: tzinfo) -> float:
    if kpi.business_hours:
        seconds = working_seconds(
            start, end, zone=zone, day_start=kpi.workday_start, day_end=kpi.workday_end, workdays=kpi.workdays
        )
    else:
        seconds = (end - start).total_seconds()
    return seconds / 3600
