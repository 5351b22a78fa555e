"""Similar won opportunities (kpis.md 5.4), refreshed every 7 days, with the won ones' own KPIs beside them.

Decisions:

- Refreshed when the tenant's latest result is 7 days old or more (or missing), whatever the KPI run's
  mode: `--full` recomputes KPIs, not this weekly list.
- A won opportunity's stats are its KPI snapshot as of the same T; one without linked activity shows
  zeros and empty response values.
- The owner's business unit comes from the Dataverse system user that owns the opportunity.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from relinsights.analytics import (
    CrmRecords,
    InternalUser,
    OpportunityProfile,
    OpportunityState,
    SimilarStats,
    SimilarWon,
    similar_won,
)

REFRESH = timedelta(days=7)
NO_ACTIVITY = SimilarStats(0, 0, 0, None, None, None, None)


def similar_due(last: datetime | None, as_of: datetime) -> bool:
    return last is None or as_of - last >= REFRESH or as_of < last


def stats_from_payload(p: Mapping[str, Any]) -> SimilarStats:
    return SimilarStats(
        activity_count=p["activities"],
        time_spent_by_team_minutes=p["time_spent_by_team_minutes"],
        time_spent_by_customer_minutes=p["time_spent_by_customer_minutes"],
        avg_first_response_hours_by_us=p["average_first_response_time_by_us_hours"],
        response_rate_by_us=p["response_rate_by_us"],
        avg_first_response_hours_by_them=p["average_first_response_time_by_them_hours"],
        response_rate_by_them=p["response_rate_by_them"],
    )


def compute_similar(
    records: CrmRecords,
    users: tuple[InternalUser, ...],
    won_payloads: Mapping[str, Mapping[str, Any]],
    as_of: datetime,
    count: int,
) -> list[SimilarWon]:
    """Similar won opportunities of every open opportunity; `won_payloads` by won opportunity id."""
    accounts = {a.id: a for a in records.accounts}
    owners = {u.systemuser_id: u for u in users if u.systemuser_id}

    def profile(o: Any) -> OpportunityProfile:
        account = accounts.get(o.account_id) if o.account_id else None
        owner = owners.get(o.owner_id) if o.owner_id else None
        return OpportunityProfile.of(o, account, owner)

    won = [profile(o) for o in records.opportunities if o.state is OpportunityState.WON]
    stats = {w.id: stats_from_payload(won_payloads[w.id]) if w.id in won_payloads else NO_ACTIVITY for w in won}
    return [
        similar_won(profile(o), won, as_of, count=count, stats=stats)
        for o in records.opportunities
        if o.state is OpportunityState.OPEN
    ]


def similar_json(result: SimilarWon) -> dict[str, Any]:
    return {
        "opportunity_id": result.opportunity_id,
        "fallback": result.fallback,
        "eligible_won": result.eligible_won,
        "matches": [
            {
                "opportunity_id": m.opportunity_id,
                "distance": m.distance,
                "activities": m.stats.activity_count if m.stats else None,
                "time_spent_by_team_minutes": m.stats.time_spent_by_team_minutes if m.stats else None,
                "time_spent_by_customer_minutes": m.stats.time_spent_by_customer_minutes if m.stats else None,
                "average_first_response_time_by_us_hours": m.stats.avg_first_response_hours_by_us if m.stats else None,
                "response_rate_by_us": m.stats.response_rate_by_us if m.stats else None,
                "average_first_response_time_by_them_hours": m.stats.avg_first_response_hours_by_them
                if m.stats
                else None,
                "response_rate_by_them": m.stats.response_rate_by_them if m.stats else None,
            }
            for m in result.matches
        ],
    }
