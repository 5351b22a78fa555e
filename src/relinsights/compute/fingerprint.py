"""The incremental rule: when a record's stored KPIs as of an earlier T0 are still its KPIs as of T.

A record's KPIs as of T are a function of its inputs and of T alone (the core is deterministic). So a
snapshot computed as of T0 is reused as of T when

1. its **fingerprint** is unchanged: a hash of everything the core reads for the record (each linked
   activity's kind, direction, times, duration, participants with their side, role and attendance,
   pending flag and thread; the link's reasons and external members with their identities; whether
   the record gets a health score; the KPI settings; the payload format, the relinsights and polars
   versions), computed for every record at once as columns (`ActivityTable.fingerprints`);
2. and T lies before the snapshot's **stable_until**: the earliest moment after T0 at which time
   alone could change one of its values, with the same inputs.

`stable_until` is derived from the record's activities (each is a breakpoint where a value may step):

- an email, call or meeting becoming completed (its time; a meeting's end) or no longer scheduled
  (its start);
- an activity leaving the lookback window (time + lookback_days), the health window (time +
  window_days), or the 60-day series (the start of the local day 60 days after its own);
- an open email turn becoming judged (time + response_window_hours);
- for health, all of the above again 14 days later (the trend recomputes health as of T - 14 days).

Health also moves *continuously* (engagement decays with a 14-day half-life, recency with the days since
the last interaction): a record with any completed activity in its lookback window as of T or T - 14
days is stable only at T itself, so it is recomputed at every run. What is reused, then, are records
whose values only step: closed opportunities and closed leads (no health score), and records whose
activities all lie outside the windows or in the future.

Rounding: breakpoints are inclusive on the safe side (a value is considered to move *at* the
breakpoint), so a reused value is never one that the full computation would compute differently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from relinsights import __version__
from relinsights.analytics import Health, Kind, Settings
from relinsights.analytics.health import TREND_DAYS
from relinsights.analytics.kpis import SERIES_DAYS
from relinsights.analytics.timeutil import local_date, start_of_local_day
from relinsights.compute.payload import PAYLOAD_VERSION

Moments = tuple[Kind, datetime, datetime]  # an activity's kind, time and end: all its breakpoints depend on


def settings_key(settings: Settings) -> str:
    """A hash of every setting the KPI values depend on (a config change recomputes everything)."""
    text = "|".join(
        (
            __version__,
            str(PAYLOAD_VERSION),
            settings.kpi.model_dump_json(exclude={"compute_at"}),
            settings.zone.key,
            str(settings.lookback_days),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def stable_until(
    moments_of: Callable[[], Iterable[Moments]], as_of: datetime, settings: Settings, health: Health | None
) -> datetime | None:
    """The earliest moment after `as_of` at which time alone may change the record's values (None: never).

    Returns `as_of` itself when the values move continuously (see the module docstring); only then are the
    record's activities not needed (`moments_of` gives each linked one's kind, time and end, when asked).
    """
    if health is not None and _moves_continuously(health):
        return as_of
    lookback = timedelta(days=settings.lookback_days)
    window = timedelta(days=settings.kpi.health.window_days)
    response = timedelta(hours=settings.kpi.response_window_hours)
    trend = timedelta(days=TREND_DAYS)
    earliest: datetime | None = None
    for moments in moments_of():
        for t in _breakpoints(moments, lookback, window, response, settings, health is not None):
            for moment in (t, t + trend) if health is not None else (t,):
                if moment > as_of and (earliest is None or moment < earliest):
                    earliest = moment
    return earliest


def _moves_continuously(health: Health) -> bool:
    now, before = health.parts, health.previous.parts
    return any(p.days_since_last is not None or p.volume > 0 for p in (now, before))


def _breakpoints(
    moments: Moments,
    lookback: timedelta,
    window: timedelta,
    response: timedelta,
    settings: Settings,
    with_health: bool,
) -> list[datetime]:
    kind, time, end = moments
    day_out = start_of_local_day(local_date(time, settings.zone) + timedelta(days=SERIES_DAYS), settings.zone)
    points = [time, end, time + lookback, day_out]
    if kind is Kind.EMAIL:
        points.append(time + response)
    if with_health:
        points.append(time + window)
    return points
