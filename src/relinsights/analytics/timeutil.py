"""Time helpers: UTC coercion, tenant-local days, and working time for the business-hours mode."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta, tzinfo


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is read as UTC (the database stores UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local_date(value: datetime, zone: tzinfo) -> date:
    return as_utc(value).astimezone(zone).date()


def start_of_local_day(day: date, zone: tzinfo) -> datetime:
    """The instant (UTC) the tenant-local day starts; zoneinfo resolves a DST gap or fold for us."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def working_seconds(
    start: datetime,
    end: datetime,
    *,
    zone: tzinfo,
    day_start: time,
    day_end: time,
    workdays: Collection[int],
) -> float:
    """Seconds of [start, end) that fall inside working hours (ISO weekdays `workdays`, local wall time).

    Walks the local days the interval touches (a response window is about a week, so a handful), and
    intersects each day's working span as real instants, so a DST change inside a day is counted right.
    """
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return 0.0
    total = 0.0
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    while day <= last:
        if day.isoweekday() in workdays:
            open_at = datetime.combine(day, day_start, tzinfo=zone).astimezone(UTC)
            close_at = datetime.combine(day, day_end, tzinfo=zone).astimezone(UTC)
            lo, hi = max(start, open_at), min(end, close_at)
            if hi > lo:
                total += (hi - lo).total_seconds()
        day += timedelta(days=1)
    return total
