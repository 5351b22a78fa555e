"""Similar won opportunities (kpis.md 5.4): for an open opportunity, the nearest won ones.

Decisions where kpis.md is silent:

- Distance: Gower's distance (the usual one for mixed numeric and categorical features): the mean,
  over the features both sides have, of |a - b| / range for numbers (range over the eligible won
  opportunities and the target, capped at 1) and 0 / 1 for categories (case-insensitive). Numbers are
  log1p-transformed first: estimated value, the account's employees, and the cycle length in days.
  A feature missing on either side is left out; with nothing comparable the distance is 1.
- Cycle length: for the open opportunity, T - createdon ("so far"); for a won one, actualclosedate -
  createdon. A won opportunity's value is its estimated value, else its actual value.
- Eligible won: closed in the 730 days up to T. "Fewer than 30 won" counts those eligible ones.
- Fallback (fewer than 30): distance = |log1p(value) difference| only; won ones without a value, or a
  target without one, rank last (distance None). The result is marked ``fallback``.
- Ties: smaller distance, then the more recently closed, then the smaller id.
- The stats shown beside each match are the won opportunity's own KPIs as the caller computed them
  (activity count, time spent by team and customer, response times and rates of both sides).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

from relinsights.analytics.kpis import RecordKpis
from relinsights.analytics.parties import InternalUser
from relinsights.analytics.records import Account, Opportunity
from relinsights.analytics.timeutil import as_utc

MIN_WON = 30
WON_WINDOW_DAYS = 730


@dataclass(frozen=True, slots=True)
class OpportunityProfile:
    id: str
    created_on: datetime
    value: float | None = None
    industry: str | None = None
    employees: int | None = None
    business_unit: str | None = None
    closed_on: date | datetime | None = None  # won ones: actualclosedate

    @classmethod
    def of(
        cls, opp: Opportunity, account: Account | None = None, owner: InternalUser | None = None
    ) -> OpportunityProfile:
        value = opp.estimated_value if opp.estimated_value is not None else opp.actual_value
        return cls(
            id=opp.id,
            created_on=opp.created_on,
            value=value,
            industry=account.industry if account else None,
            employees=account.employees if account else None,
            business_unit=owner.business_unit_id if owner else None,
            closed_on=opp.actual_close_date,
        )


@dataclass(frozen=True, slots=True)
class SimilarStats:
    activity_count: int
    time_spent_by_team_minutes: int
    time_spent_by_customer_minutes: int
    avg_first_response_hours_by_us: float | None
    response_rate_by_us: float | None
    avg_first_response_hours_by_them: float | None
    response_rate_by_them: float | None

    @classmethod
    def of(cls, kpis: RecordKpis) -> SimilarStats:
        return cls(
            activity_count=kpis.counts.total,
            time_spent_by_team_minutes=kpis.time_spent_by_team_minutes,
            time_spent_by_customer_minutes=kpis.time_spent_by_customer_minutes,
            avg_first_response_hours_by_us=kpis.responses.by_us.mean_hours,
            response_rate_by_us=kpis.responses.by_us.rate,
            avg_first_response_hours_by_them=kpis.responses.by_them.mean_hours,
            response_rate_by_them=kpis.responses.by_them.rate,
        )


@dataclass(frozen=True, slots=True)
class SimilarMatch:
    opportunity_id: str
    distance: float | None  # None: not comparable (fallback without a value)
    stats: SimilarStats | None = None


@dataclass(frozen=True, slots=True)
class SimilarWon:
    opportunity_id: str
    fallback: bool  # fewer than MIN_WON eligible won: nearest by value alone
    eligible_won: int
    matches: tuple[SimilarMatch, ...]


def eligible_won(won: Iterable[OpportunityProfile], as_of: datetime) -> list[OpportunityProfile]:
    start = as_of - timedelta(days=WON_WINDOW_DAYS)
    return [w for w in won if w.closed_on is not None and start <= _instant(w.closed_on) <= as_of]


def similar_won(
    target: OpportunityProfile,
    won: Sequence[OpportunityProfile],
    as_of: datetime,
    *,
    count: int = 5,
    stats: Mapping[str, SimilarStats] | None = None,
) -> SimilarWon:
    """The `count` (kpi.similar_won_count) won opportunities nearest to the open `target`."""
    pool = [w for w in eligible_won(won, as_of) if w.id != target.id]
    fallback = len(pool) < MIN_WON
    # Too few won deals for five features to mean much: compare by value alone.
    distance: Callable[[OpportunityProfile], float | None] = (
        partial(_value_distance, target) if fallback else _Features(target, pool, as_of).distance
    )
    scored = [(distance(w), w) for w in pool]
    scored.sort(key=lambda dw: (dw[0] is None, dw[0] or 0.0, -_instant(dw[1].closed_on).timestamp(), dw[1].id))
    stats = stats or {}
    matches = tuple(SimilarMatch(w.id, d, stats.get(w.id)) for d, w in scored[:count])
    return SimilarWon(target.id, fallback, len(pool), matches)


def _value_distance(a: OpportunityProfile, b: OpportunityProfile) -> float | None:
    if a.value is None or b.value is None:
        return None
    return abs(_log(a.value) - _log(b.value))


class _Features:
    """Gower distance over the five features, with ranges taken from the pool and the target."""

    def __init__(self, target: OpportunityProfile, pool: Sequence[OpportunityProfile], as_of: datetime) -> None:
        self.as_of = as_of
        self.target = self._numbers(target)
        self.target_cats = self._categories(target)
        rows = [self.target, *(self._numbers(w) for w in pool)]
        self.ranges: list[float] = []
        for i in range(len(self.target)):
            values = [v for r in rows if (v := r[i]) is not None]
            self.ranges.append(max(values) - min(values) if values else 0.0)

    def _numbers(self, o: OpportunityProfile) -> tuple[float | None, ...]:
        end = _instant(o.closed_on) if o.closed_on is not None else self.as_of
        cycle = max(0.0, (end - as_utc(o.created_on)).total_seconds() / 86400)
        return (
            _log(o.value) if o.value is not None else None,
            _log(o.employees) if o.employees is not None else None,
            _log(cycle),
        )

    @staticmethod
    def _categories(o: OpportunityProfile) -> tuple[str | None, ...]:
        return tuple(v.casefold() if v else None for v in (o.industry, o.business_unit))

    def distance(self, other: OpportunityProfile) -> float:
        parts: list[float] = []
        for a, b, rng in zip(self.target, self._numbers(other), self.ranges, strict=True):
            if a is not None and b is not None:
                parts.append(min(1.0, abs(a - b) / rng) if rng > 0 else 0.0)
        for ca, cb in zip(self.target_cats, self._categories(other), strict=True):
            if ca is not None and cb is not None:
                parts.append(0.0 if ca == cb else 1.0)
        return sum(parts) / len(parts) if parts else 1.0


def _log(value: float) -> float:
    return math.log1p(max(0.0, float(value)))


def _instant(value: date | datetime | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    if isinstance(value, datetime):
        return as_utc(value)
    return datetime.combine(value, time(0), tzinfo=UTC)
