"""One record's KPIs as a JSON payload: every value under a stable key named after kpis.md.

The payload is what a snapshot stores and what `relinsights kpis show --json` prints. It holds only
values that depend on the record's inputs and on T, never T itself, so a payload computed as of one
day can be reused as of a later day when nothing it depends on moved (see `fingerprint.py`):

- the 60-day series (`relationship_activities`) is kept sparse, as the days that have activity; the
  window's first and last days follow from the snapshot's `as_of` (`series_days`);
- the health score as of T - 14 days keeps its score and state, not its date.

Times are ISO 8601 in UTC; ratios and rates are unrounded floats; response times are hours with 2
decimals (as the core rounds them); empty values are null.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import orjson

from relinsights.analytics import Counts, DailyCounts, Health, Interaction, RecordKpis, SideResponse, TopContact
from relinsights.analytics.kpis import SERIES_DAYS, DailySeries
from relinsights.analytics.timeutil import as_utc, local_date

PAYLOAD_VERSION = 1
COUNT_KEYS = ("emails_sent", "emails_received", "meetings_sent", "meetings_received", "calls_made", "calls_received")


def utc_time(value: datetime | None) -> datetime | None:
    """A time as the payload writes it: aware in UTC, for orjson, which writes it as isoformat() would (ISO
    8601, "+00:00", microseconds only when there are; tests/test_payload.py holds it to that) and 5x faster
    (a run writes a time for each of 20,000 records' top contacts)."""
    if value is None or value.tzinfo is UTC:
        return value
    return as_utc(value)


class _DayMembers(dict[int, tuple[DailyCounts, bytes]]):
    """Each active day of a series as its JSON member (`"day":{counts}`), written once per DailyCounts: the
    column engine makes one for each distinct (day, counts) of a batch, which its records share (at
    2,000,000 activities a run writes 502,752 days of 23,761 such objects; orjson writing each day's Counts
    again was 0.11 of 0.16 s of the payloads' JSON). Keyed by identity, with each entry holding its
    DailyCounts: no other object takes its id while it is here."""

    LIMIT = 20_000  # (a batch shares one or two thousand; the per-record engine makes a record's own)

    def member(self, d: DailyCounts) -> bytes:
        made = self.get(id(d))
        if made is None:
            if len(self) >= self.LIMIT:
                self.clear()
            made = self[id(d)] = (d, orjson.dumps({d.day.isoformat(): d.counts})[1:-1])
        return made[1]


_DAY_MEMBERS = _DayMembers()


def _series(daily: DailySeries) -> orjson.Fragment:
    """The days with activity (the series' `active`), as a JSON object of day -> counts."""
    # (looked up inline, made only when missing: a method call per day was 0.3 s of the interpreter lock for
    # the 502,752 days of a run at 2,000,000 activities)
    made, member = _DAY_MEMBERS.get, _DAY_MEMBERS.member
    members = [(made(id(d)) or (d, member(d)))[1] for d in daily.active]
    return orjson.Fragment(b"{" + b",".join(members) + b"}")


def _counts(c: Counts) -> dict[str, int]:
    return {k: getattr(c, k) for k in COUNT_KEYS}


def _interaction(i: Interaction | None) -> dict[str, Any] | None:
    if i is None:
        return None
    return {
        "time": utc_time(i.time),
        "kind": str(i.kind),
        "direction": str(i.direction),
        "activity_key": i.activity_key,
        "internal_party": i.internal_party,
    }


def _contact(t: TopContact) -> dict[str, Any]:
    return {
        "person": t.person,
        "addresses": list(t.addresses),
        "activities": t.total,
        "emails": t.emails,
        "meetings": t.meetings,
        "calls": t.calls,
        "last_contacted": utc_time(t.last_contacted),
    }


def _turns(s: SideResponse) -> dict[str, int]:
    return {"turns": s.turns, "judged": s.judged, "answered": s.answered}


def _health(h: Health | None) -> dict[str, Any] | None:
    if h is None:
        return None
    p = h.parts
    return {
        "score": h.score,
        "state": str(h.state),
        "trend": str(h.trend),
        "parts": {
            "engagement": p.engagement,
            "recency": p.recency,
            "reciprocity": p.reciprocity,
            "responsiveness": p.responsiveness,
        },
        "measures": {
            "volume": p.volume,
            "expected_volume": p.expected_volume,
            "cadence_days": p.cadence_days,
            "days_since_last": p.days_since_last,
            "window_activities": p.window_activities,
            "customer_initiated": p.customer_initiated,
            "judged_our_turns": p.judged_our_turns,
            "answered_our_turns": p.answered_our_turns,
        },
        "weakest_part": h.weakest,
        "reason": h.reason,
        "previous": {"score": h.previous.score, "state": str(h.previous.state)},
    }


def kpi_payload(k: RecordKpis) -> bytes:
    """The JSON payload of one record's KPIs (keys are the public names: keep them stable)."""
    return orjson.dumps(_payload(k))


def _payload(k: RecordKpis) -> dict[str, Any]:
    r = k.responses
    return {
        "version": PAYLOAD_VERSION,
        **_counts(k.counts),
        "activities": k.counts.total,
        "time_spent_by_team_minutes": k.time_spent_by_team_minutes,
        "time_spent_by_customer_minutes": k.time_spent_by_customer_minutes,
        "sent_received_ratio_by_us": k.ratio_by_us,
        "sent_received_ratio_by_them": k.ratio_by_them,
        "average_first_response_time_by_us_hours": r.by_us.mean_hours,
        "median_first_response_time_by_us_hours": r.by_us.median_hours,
        "response_rate_by_us": r.by_us.rate,
        "average_first_response_time_by_them_hours": r.by_them.mean_hours,
        "median_first_response_time_by_them_hours": r.by_them.median_hours,
        "response_rate_by_them": r.by_them.rate,
        "turns": {"customer": _turns(r.by_us), "ours": _turns(r.by_them)},
        "last_interaction": _interaction(k.last_interaction),
        "next_interaction": _interaction(k.next_interaction),
        "top_contacts_ours": [_contact(t) for t in k.top_contacts_ours],
        "top_contacts_theirs": [_contact(t) for t in k.top_contacts_theirs],
        "relationship_activities": _series(k.daily),
        "health": _health(k.health),
        "link_reasons": dict(k.reasons),
    }


def series_days(as_of: datetime, zone: tzinfo) -> list[date]:
    """The SERIES_DAYS tenant-local days of the series as of T, oldest first."""
    last = local_date(as_of, zone)
    return [last - timedelta(days=SERIES_DAYS - 1 - i) for i in range(SERIES_DAYS)]


def dense_series(payload: dict[str, Any], as_of: datetime, zone: tzinfo) -> list[dict[str, Any]]:
    """The 60-day series with every day, zeros included: for display."""
    sparse: dict[str, dict[str, int]] = payload.get("relationship_activities") or {}
    zero = dict.fromkeys(COUNT_KEYS, 0)
    return [{"day": d.isoformat(), **sparse.get(d.isoformat(), zero)} for d in series_days(as_of, zone)]
