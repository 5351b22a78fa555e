"""Relationship health (kpis.md 5.3): four parts, a score, a state, a trend, and one reason.

Decisions where kpis.md is silent:

- The parts use the record's completed linked activities; a meeting's age and recency are measured
  from its start (its "time" in section 2).
- R is 0 when the record has no completed activity in the lookback window; P is 0 when the health
  window holds no activity (nothing was initiated by anyone).
- Q uses the turns of 5.1 (walked over the lookback window) whose opening falls in the health window,
  judged as of T; fewer than 3 judged turns of ours gives the neutral 0.5.
- The score is rounded half up. A record with "Not enough info" still carries its computed score and
  parts (the state says not to trust it).
- The trend recomputes everything as of T - 14 days (activities, turns and their judgement as they
  were then). Improving / Declining need a change of 5 points or more.
- The weakest part is the one losing the most points (weight x (1 - part)); ties go to E, R, P, Q in
  that order, so a measured part is named before the neutral default of Q.
- Kind weights are HealthConfig's (a tenant scales each within +/-50% of email 1, meeting 3, call 2).
- V is summed exactly (math.fsum), so it does not depend on the order the activities come in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from relinsights.analytics.activities import Activity, Direction, Kind
from relinsights.analytics.responses import Turn, build_turns, summarise_turns
from relinsights.analytics.settings import Settings

HALF_LIFE_DAYS = 14.0
TREND_DAYS = 14
TREND_POINTS = 5
MIN_ACTIVITIES = 3
MIN_JUDGED_TURNS = 3
NEUTRAL_RESPONSIVENESS = 0.5
PART_WEIGHTS = {"engagement": 0.35, "recency": 0.25, "reciprocity": 0.20, "responsiveness": 0.20}


class HealthState(StrEnum):
    GOOD = "Good"
    FAIR = "Fair"
    POOR = "Poor"
    NOT_ENOUGH_INFO = "Not enough info"


class Trend(StrEnum):
    IMPROVING = "Improving"
    STEADY = "Steady"
    DECLINING = "Declining"
    NOT_ENOUGH_INFO = "Not enough info"


@dataclass(frozen=True, slots=True)
class HealthParts:
    engagement: float  # E
    recency: float  # R
    reciprocity: float  # P
    responsiveness: float  # Q
    volume: float  # V
    expected_volume: float  # V_expected
    cadence_days: float  # g
    days_since_last: float | None  # d
    window_activities: int
    customer_initiated: int
    judged_our_turns: int
    answered_our_turns: int

    @property
    def responsiveness_measured(self) -> bool:
        return self.judged_our_turns >= MIN_JUDGED_TURNS


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    as_of: datetime
    score: int
    state: HealthState
    parts: HealthParts
    lookback_activities: int


@dataclass(frozen=True, slots=True)
class Health:
    score: int
    state: HealthState
    trend: Trend
    parts: HealthParts
    weakest: str  # engagement | recency | reciprocity | responsiveness
    reason: str
    previous: HealthSnapshot  # as of T - 14 days


def round_half_up(value: float) -> int:
    # A tiny epsilon absorbs float noise such as 100 * 0.8 = 80.00000000000001 or 79.99999999999999.
    return math.floor(value + 0.5 + 1e-9)


def health_snapshot(
    activities: Sequence[Activity],
    as_of: datetime,
    settings: Settings,
    *,
    threads: Mapping[str, str] | None = None,
    turns: Sequence[Turn] | None = None,
) -> HealthSnapshot:
    """Score, state and parts of one record as of `as_of`, from its linked activities.

    `turns` may be given when the caller already walked the lookback window as of `as_of`.
    """
    cfg = settings.kpi.health
    lookback_start = as_of - timedelta(days=settings.lookback_days)
    window_start = as_of - timedelta(days=cfg.window_days)
    done = [a for a in activities if a.completed(as_of)]
    lookback = [a for a in done if a.time >= lookback_start]
    window = [a for a in done if a.time >= window_start]
    if turns is None:
        emails = [a for a in lookback if a.kind is Kind.EMAIL]
        turns = build_turns(emails, as_of=as_of, kpi=settings.kpi, zone=settings.zone, threads=threads)
    theirs = summarise_turns(turns, opened_since=window_start).by_them
    return snapshot_from_measures(
        as_of,
        settings,
        decayed=[decayed_weight(a.kind, a.time, as_of, settings) for a in window],
        last=max((a.time for a in lookback), default=None),
        window_activities=len(window),
        customer_initiated=sum(1 for a in window if a.direction is Direction.INCOMING),
        lookback_activities=len(lookback),
        judged_our_turns=theirs.judged,
        answered_our_turns=theirs.answered,
    )


def decayed_weight(kind: Kind, time: datetime, as_of: datetime, settings: Settings) -> float:
    """One activity's share of the engagement volume V as of T: its kind's weight, halved every 14 days."""
    age = as_of - time
    return kind_weight(kind, settings) * decay((age.days * 86_400 + age.seconds) * 1_000_000 + age.microseconds)


def kind_weight(kind: Kind, settings: Settings) -> float:
    cfg = settings.kpi.health
    return cfg.weight_email if kind is Kind.EMAIL else cfg.weight_meeting if kind is Kind.MEETING else cfg.weight_call


def decay(age_us: int) -> float:
    """The factor an activity `age_us` microseconds old is weighted by: halved every 14 days. (The integer
    division is timedelta.total_seconds() exactly: column code passes integer ages and gets the same bits.)"""
    return 0.5 ** (age_us / 1_000_000 / 86400.0 / HALF_LIFE_DAYS)


def snapshot_from_measures(
    as_of: datetime,
    settings: Settings,
    *,
    decayed: Sequence[float],
    last: datetime | None,
    window_activities: int,
    customer_initiated: int,
    lookback_activities: int,
    judged_our_turns: int,
    answered_our_turns: int,
) -> HealthSnapshot:
    """Score, state and parts from a record's measures as of T (the per-record core and the column engine
    both measure, then call this). V is summed exactly (fsum), so it does not depend on the order."""
    cfg = settings.kpi.health
    day = 86400.0
    volume = math.fsum(decayed)
    g = 7.0 / cfg.expected_interactions_per_week
    expected = 1.0 / (1.0 - 0.5 ** (g / HALF_LIFE_DAYS))
    engagement = min(1.0, volume / expected)

    d = (as_of - last).total_seconds() / day if last is not None else None
    if d is None:
        recency = 0.0  # no completed interaction at all in the lookback window
    elif d <= g:
        recency = 1.0
    else:
        recency = math.exp(-(d - g) / (2 * g))

    reciprocity = min(1.0, 2 * customer_initiated / window_activities) if window_activities else 0.0
    if judged_our_turns >= MIN_JUDGED_TURNS:
        responsiveness = answered_our_turns / judged_our_turns
    else:
        responsiveness = NEUTRAL_RESPONSIVENESS

    parts = HealthParts(
        engagement=engagement,
        recency=recency,
        reciprocity=reciprocity,
        responsiveness=responsiveness,
        volume=volume,
        expected_volume=expected,
        cadence_days=g,
        days_since_last=d,
        window_activities=window_activities,
        customer_initiated=customer_initiated,
        judged_our_turns=judged_our_turns,
        answered_our_turns=answered_our_turns,
    )
    score = round_half_up(100 * sum(w * getattr(parts, name) for name, w in PART_WEIGHTS.items()))
    return HealthSnapshot(as_of, score, state_for(score, lookback_activities, settings), parts, lookback_activities)


def compute_health(
    activities: Sequence[Activity],
    as_of: datetime,
    settings: Settings,
    *,
    threads: Mapping[str, str] | None = None,
    turns: Sequence[Turn] | None = None,
) -> Health:
    """Health as of T with its trend against T - 14 days and the reason for its weakest part."""
    now = health_snapshot(activities, as_of, settings, threads=threads, turns=turns)
    before = health_snapshot(activities, as_of - timedelta(days=TREND_DAYS), settings, threads=threads)
    return health_of(now, before, settings)


def health_of(now: HealthSnapshot, before: HealthSnapshot, settings: Settings) -> Health:
    """Health as of T from its snapshots as of T and T - 14 days."""
    weakest = weakest_part(now.parts)
    return Health(
        score=now.score,
        state=now.state,
        trend=trend(now, before),
        parts=now.parts,
        weakest=weakest,
        reason=explain(weakest, now.parts, settings),
        previous=before,
    )


def trend(now: HealthSnapshot, before: HealthSnapshot) -> Trend:
    if HealthState.NOT_ENOUGH_INFO in (now.state, before.state):
        return Trend.NOT_ENOUGH_INFO
    change = now.score - before.score
    if change >= TREND_POINTS:
        return Trend.IMPROVING
    if change <= -TREND_POINTS:
        return Trend.DECLINING
    return Trend.STEADY


def state_for(score: int, lookback_activities: int, settings: Settings) -> HealthState:
    cfg = settings.kpi.health
    if lookback_activities < MIN_ACTIVITIES:
        return HealthState.NOT_ENOUGH_INFO
    if score >= cfg.good_min:
        return HealthState.GOOD
    if score >= cfg.fair_min:
        return HealthState.FAIR
    return HealthState.POOR


def weakest_part(parts: HealthParts) -> str:
    # max() keeps the first of equal shortfalls, so PART_WEIGHTS' order breaks ties.
    return max(PART_WEIGHTS, key=lambda name: round(PART_WEIGHTS[name] * (1.0 - getattr(parts, name)), 9))


def explain(part: str, parts: HealthParts, settings: Settings) -> str:
    """One plain-language sentence about `part`."""
    window = settings.kpi.health.window_days
    per_week = settings.kpi.health.expected_interactions_per_week
    if all(getattr(parts, name) >= 1.0 for name in PART_WEIGHTS):
        return "Frequent, recent, two-way interaction with a responsive customer."
    if part == "engagement":
        return (
            f"Low engagement: a weighted activity of {parts.volume:.1f} over the last {window} days, "
            f"against {parts.expected_volume:.1f} for {per_week:g} interaction(s) a week."
        )
    if part == "recency":
        if parts.days_since_last is None:
            return "No completed interaction in the lookback window."
        return (
            f"No interaction for {parts.days_since_last:.0f} days "
            f"(expected at least every {parts.cadence_days:.0f} days)."
        )
    if part == "reciprocity":
        if parts.window_activities == 0:
            return f"No interaction in the last {window} days."
        return (
            f"The customer initiated {parts.customer_initiated} of {parts.window_activities} "
            f"interactions in the last {window} days."
        )
    hours = settings.kpi.response_window_hours
    if not parts.responsiveness_measured:
        return (
            f"Too few of our emails can be judged yet ({parts.judged_our_turns} of {MIN_JUDGED_TURNS} needed) "
            "to say how the customer responds."
        )
    return (
        f"The customer answered {parts.answered_our_turns} of {parts.judged_our_turns} of our emails "
        f"within {hours:g} hours over the last {window} days."
    )
