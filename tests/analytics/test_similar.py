from __future__ import annotations

from datetime import date, timedelta

from relinsights.analytics import (
    Account,
    InternalUser,
    Opportunity,
    OpportunityProfile,
    OpportunityState,
    SimilarStats,
    similar_won,
)

from .factory import at

T = at("2026-03-10 12:00")


def won(
    i: int,
    value: float | None,
    *,
    industry: str = "retail",
    employees: int = 100,
    bu: str = "east",
    cycle_days: int = 60,
    closed_days_ago: int = 30,
) -> OpportunityProfile:
    closed = T - timedelta(days=closed_days_ago)
    return OpportunityProfile(
        id=f"w{i:03d}",
        created_on=closed - timedelta(days=cycle_days),
        value=value,
        industry=industry,
        employees=employees,
        business_unit=bu,
        closed_on=closed.date(),
    )


TARGET = OpportunityProfile(
    "open", created_on=T - timedelta(days=60), value=50_000, industry="Retail", employees=100, business_unit="east"
)


def test_fallback_by_value_when_fewer_than_30_won() -> None:
    pool = [won(1, 10_000), won(2, 52_000), won(3, 45_000), won(4, None), won(5, 1_000_000)]
    stats = {"w002": SimilarStats(12, 300, 120, 4.5, 1.0, 20.0, 0.5)}
    result = similar_won(TARGET, pool, T, count=4, stats=stats)
    assert result.fallback and result.eligible_won == 5
    assert [m.opportunity_id for m in result.matches] == ["w002", "w003", "w001", "w005"]
    assert result.matches[0].stats == stats["w002"]
    assert similar_won(TARGET, pool, T, count=5).matches[-1].distance is None  # no value: last


def test_only_won_in_the_last_two_years_are_eligible() -> None:
    pool = [
        won(1, 50_000, closed_days_ago=731),
        won(2, 10_000, closed_days_ago=729),
        won(3, 10_000, closed_days_ago=-1),
    ]
    result = similar_won(TARGET, pool, T)
    assert [m.opportunity_id for m in result.matches] == ["w002"]


def test_full_distance_with_30_won_or_more() -> None:
    # 30 deals worth the same as the target but in another industry, business unit and size...
    pool = [won(i, 50_000, industry="mining", employees=10_000, bu="west", cycle_days=400) for i in range(30)]
    # ... and one a bit cheaper that is otherwise just like it.
    pool.append(won(99, 40_000))
    result = similar_won(TARGET, pool, T, count=3)
    assert not result.fallback and result.eligible_won == 31
    assert result.matches[0].opportunity_id == "w099"
    # With value alone (fallback) the same-value deals would win instead.
    assert similar_won(TARGET, pool[25:], T, count=1).matches[0].opportunity_id != "w099"


def test_ties_go_to_the_more_recently_closed() -> None:
    pool = [won(i, 50_000, closed_days_ago=10 + i) for i in range(35)]
    result = similar_won(TARGET, pool, T, count=3)
    assert [m.opportunity_id for m in result.matches] == ["w000", "w001", "w002"]


def test_profile_from_records() -> None:
    o = Opportunity(
        "o", at("2026-01-01 00:00"), OpportunityState.WON, actual_close_date=date(2026, 2, 1), actual_value=7.0
    )
    p = OpportunityProfile.of(
        o, Account("a", industry="retail", employees=12), InternalUser("b@c.com", business_unit_id="bu")
    )
    assert (p.value, p.industry, p.employees, p.business_unit, p.closed_on) == (
        7.0,
        "retail",
        12,
        "bu",
        date(2026, 2, 1),
    )


def test_exactly_30_won_is_enough_for_the_full_distance() -> None:
    pool = [won(i, 50_000 + i) for i in range(30)]
    assert not similar_won(TARGET, pool, T).fallback
    assert similar_won(TARGET, pool[:29], T).fallback
