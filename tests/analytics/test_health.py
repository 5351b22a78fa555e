from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relinsights.analytics import Activity, Direction, HealthState, Kind, Participant, Role, Settings, Trend
from relinsights.analytics.activity_table import decays
from relinsights.analytics.frames import us_delta
from relinsights.analytics.health import (
    HALF_LIFE_DAYS,
    HealthParts,
    HealthSnapshot,
    compute_health,
    decay,
    decayed_weight,
    explain,
    health_snapshot,
    state_for,
    trend,
    weakest_part,
)
from relinsights.config import HealthConfig, KpiConfig

from .factory import at

T = at("2026-03-10 12:00")
BOB = Participant("bob@contoso.com", True, Role.FROM)
ANN = Participant("ann@fabrikam.com", False, Role.TO)


def act(kind: Kind, when: datetime, direction: Direction = Direction.OUTGOING, n: int = 0) -> Activity:
    return Activity(
        key=f"{kind}:{when.isoformat()}:{n}",
        kind=kind,
        direction=direction,
        time=when,
        end=when + (timedelta(hours=1) if kind is Kind.MEETING else timedelta(0)),
        participants=(BOB, ANN)
        if direction is Direction.OUTGOING
        else (Participant(ANN.person, False, Role.FROM), Participant(BOB.person, True, Role.TO)),
        conversations=(f"c{when.isoformat()}{n}",),
    )


def settings(**health: float) -> Settings:
    return Settings(kpi=KpiConfig(health=HealthConfig(**health)))  # type: ignore[arg-type]


def snapshot(score: int, state: HealthState) -> HealthSnapshot:
    parts = HealthParts(1, 1, 1, 1, 0, 0, 7, 0, 0, 0, 0, 0)
    return HealthSnapshot(T, score, state, parts, 3)


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [(50, 55, Trend.IMPROVING), (50, 54, Trend.STEADY), (50, 46, Trend.STEADY), (50, 45, Trend.DECLINING)],
)
def test_trend_thresholds(before: int, now: int, expected: Trend) -> None:
    assert trend(snapshot(now, HealthState.FAIR), snapshot(before, HealthState.FAIR)) is expected


def test_trend_not_enough_info_on_either_side() -> None:
    assert trend(snapshot(90, HealthState.GOOD), snapshot(10, HealthState.NOT_ENOUGH_INFO)) is Trend.NOT_ENOUGH_INFO
    assert trend(snapshot(10, HealthState.NOT_ENOUGH_INFO), snapshot(90, HealthState.GOOD)) is Trend.NOT_ENOUGH_INFO


def _score_of(days_ago: float, cfg: Settings) -> HealthSnapshot:
    """Three emails `days_ago` days old, all ours, none judged: E small, R decays, P = 0, Q = 0.5."""
    when = T - timedelta(days=days_ago)
    acts = [act(Kind.EMAIL, when, n=i) for i in range(3)]
    return health_snapshot(acts, T, cfg)


def test_state_ranges_default_and_configured() -> None:
    recent = _score_of(0, settings())  # E = 3/3.41, R = 1, P = 0, Q = 0.5
    assert recent.score == round(100 * (0.35 * 3 / recent.parts.expected_volume + 0.25 + 0.1))
    assert recent.score == 66 and recent.state is HealthState.GOOD
    recent_acts = [act(Kind.EMAIL, T, n=i) for i in range(3)]
    assert health_snapshot(recent_acts, T, settings(good_min=67)).state is HealthState.FAIR
    assert health_snapshot(recent_acts, T, settings(good_min=67, fair_min=66)).state is HealthState.FAIR
    assert health_snapshot(recent_acts, T, settings(good_min=68, fair_min=67)).state is HealthState.POOR
    assert health_snapshot(recent_acts[:2], T, settings()).state is HealthState.NOT_ENOUGH_INFO


@pytest.mark.parametrize(
    ("good", "fair", "score", "state"),
    [
        (60, 40, 60, HealthState.GOOD),
        (60, 40, 59, HealthState.FAIR),
        (60, 40, 40, HealthState.FAIR),
        (60, 40, 39, HealthState.POOR),
    ],
)
def test_state_boundaries(good: int, fair: int, score: int, state: HealthState) -> None:
    assert state_for(score, 3, settings(good_min=good, fair_min=fair)) is state


def test_recency_decays_after_the_cadence() -> None:
    g = 7.0
    assert _score_of(g, settings()).parts.recency == 1.0
    assert _score_of(3 * g, settings()).parts.recency == pytest.approx(math.exp(-1))
    assert _score_of(2 * g, settings(expected_interactions_per_week=0.5)).parts.recency == 1.0


def test_engagement_half_life_and_weights() -> None:
    one_email = health_snapshot([act(Kind.EMAIL, T - timedelta(days=14))], T, settings())
    assert one_email.parts.volume == pytest.approx(0.5)
    heavier = health_snapshot([act(Kind.MEETING, T - timedelta(days=14))], T, settings(weight_meeting=4.5))
    assert heavier.parts.volume == pytest.approx(2.25)
    twice_a_week = health_snapshot([], T, settings(expected_interactions_per_week=2))
    assert twice_a_week.parts.expected_volume == pytest.approx(1 / (1 - 0.5 ** (3.5 / 14)))
    assert twice_a_week.parts.engagement == 0.0 and twice_a_week.parts.recency == 0.0
    outside = health_snapshot([act(Kind.CALL, T - timedelta(days=91))], T, settings())
    assert outside.parts.volume == 0.0 and outside.parts.days_since_last == pytest.approx(91)


def test_reciprocity_counts_customer_initiated_activities() -> None:
    acts = [
        act(Kind.EMAIL, T - timedelta(days=1)),
        act(Kind.CALL, T - timedelta(days=2), Direction.INCOMING),
        act(Kind.MEETING, T - timedelta(days=3), Direction.INCOMING),
    ]
    assert health_snapshot(acts, T, settings()).parts.reciprocity == 1.0  # share 2/3, doubled, capped


def test_responsiveness_needs_three_judged_turns() -> None:
    # Four of our emails, each in its own thread, older than a week; the customer answers one.
    sent = [act(Kind.EMAIL, T - timedelta(days=20 + i), n=i) for i in range(4)]
    reply = Activity(
        key="reply",
        kind=Kind.EMAIL,
        direction=Direction.INCOMING,
        time=sent[0].time + timedelta(hours=3),
        end=sent[0].time + timedelta(hours=3),
        participants=(Participant(ANN.person, False, Role.FROM), Participant(BOB.person, True, Role.TO)),
        conversations=sent[0].conversations,
    )
    snap = health_snapshot([*sent, reply], T, settings())
    assert (snap.parts.judged_our_turns, snap.parts.answered_our_turns) == (4, 1)
    assert snap.parts.responsiveness == 0.25
    assert health_snapshot(sent[:2], T, settings()).parts.responsiveness == 0.5


def test_weakest_part_and_reason() -> None:
    cfg = settings()
    stale = compute_health([act(Kind.EMAIL, T - timedelta(days=60), n=i) for i in range(3)], T, cfg)
    assert stale.weakest == "engagement"
    assert stale.reason.startswith("Low engagement")
    parts = HealthParts(1, 0.2, 1, 1, 5, 3.4, 7, 30, 5, 3, 4, 4)
    assert weakest_part(parts) == "recency"
    assert explain("recency", parts, cfg) == "No interaction for 30 days (expected at least every 7 days)."
    perfect = HealthParts(1, 1, 1, 1, 5, 3.4, 7, 1, 5, 3, 4, 4)
    assert explain(weakest_part(perfect), perfect, cfg).startswith("Frequent, recent")


def test_trend_compares_with_fourteen_days_earlier() -> None:
    # Busy a month ago, silent since: the score falls.
    acts = [act(Kind.MEETING, T - timedelta(days=20 + i), n=i) for i in range(6)]
    h = compute_health(acts, T, settings())
    assert h.previous.as_of == T - timedelta(days=14)
    assert h.previous.score - h.score >= 5
    assert h.trend is Trend.DECLINING


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=4000)),
)
def test_decay_of_integer_microseconds_is_the_decay_of_the_time_difference(t: datetime, age: timedelta) -> None:
    """The column engine passes ages as integer microseconds; the object engine, datetimes: the same bits."""
    assert decay(us_delta(age)) == 0.5 ** (age.total_seconds() / 86400.0 / HALF_LIFE_DAYS)
    assert decayed_weight(Kind.MEETING, t, t + age, Settings()) == 3.0 * decay(us_delta(age))


def test_decays_of_many_ages_are_decay_of_each_bit_for_bit() -> None:
    """The activity table's weights: the same bits as the core's own function, ages before and after T alike
    (a year of microseconds, spread so that numpy's own power, where it is vectorised, differs for some)."""
    ages = np.random.default_rng(7).integers(-20 * 86_400_000_000, 400 * 86_400_000_000, 50_000)
    ages[:3] = (0, 1, 14 * 86_400_000_000)
    assert decays(ages).tolist() == [decay(age) for age in ages.tolist()]
    assert decays(ages[:0]).tolist() == []
