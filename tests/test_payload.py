"""The payload (payload.py): its times written by orjson exactly as `isoformat()` of the time in UTC; its
60-day series written from each day's JSON made once, exactly as orjson writes the series as a dict."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from relinsights.analytics import Counts, DailyCounts
from relinsights.analytics.kpis import NO_COUNTS, DailySeries
from relinsights.analytics.timeutil import as_utc
from relinsights.compute.payload import _DAY_MEMBERS, _series, utc_time

ZONES = st.sampled_from([None, UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/St_Johns"), ZoneInfo("Asia/Kolkata")])


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=ZONES))
def test_a_time_is_written_as_the_iso_8601_of_its_utc_time(value: datetime) -> None:
    # (naive: read as UTC, as the database stores it; microseconds only when there are)
    assert orjson.dumps({"t": utc_time(value)}) == orjson.dumps({"t": as_utc(value).isoformat()})


def test_no_time_is_null_and_a_utc_time_is_kept_as_it_is() -> None:
    assert orjson.dumps(utc_time(None)) == b"null"
    t = datetime(2026, 3, 1, 9, 0, 0, 120, tzinfo=UTC)
    assert utc_time(t) is t and orjson.dumps(utc_time(t)) == b'"2026-03-01T09:00:00.000120+00:00"'


COUNTS = st.builds(Counts, *[st.integers(0, 3)] * 6)


@given(st.lists(st.one_of(st.just(NO_COUNTS), COUNTS), max_size=60), st.lists(st.booleans(), max_size=60))
def test_the_series_is_written_as_the_dict_of_its_active_days(counts: list[Counts], shared: list[bool]) -> None:
    """Days with no activity (the shared empty Counts, or all zeros) are left out; a record's days that are
    another's DailyCounts objects (as a batch's records share them) are written from their JSON made once."""
    first = date(2026, 1, 1)
    one = [DailyCounts(first + timedelta(days=i), c) for i, c in enumerate(counts)]
    other = [d if share else DailyCounts(d.day, d.counts) for d, share in zip(one, shared, strict=False)]
    for daily in (one, other):
        plain = {d.day.isoformat(): d.counts for d in daily if d.counts.total}
        # a series holds its active days: written from those alone
        series = DailySeries(daily)
        assert series == tuple(daily) and series.active == tuple(d for d in daily if d.counts.total)
        assert orjson.dumps({"s": _series(series)}) == orjson.dumps({"s": plain})
        # the column engine's, its active days given: the same
        given = DailySeries(daily, [d for d in daily if d.counts.total])
        assert orjson.dumps({"s": _series(given)}) == orjson.dumps({"s": plain})
        copied = pickle.loads(pickle.dumps(series))
        assert copied == series and copied.active == series.active


def test_the_days_json_is_made_once_per_object_and_the_store_stays_small() -> None:
    day = DailyCounts(date(2026, 1, 1), Counts(emails_sent=1))
    assert _DAY_MEMBERS.member(day) is _DAY_MEMBERS.member(day)
    for i in range(3 * _DAY_MEMBERS.LIMIT):  # a daemon's runs, one after the other
        d = DailyCounts(date(2026, 1, 1) + timedelta(days=i % 400), Counts(calls_made=i))
        assert _DAY_MEMBERS.member(d) == orjson.dumps({d.day.isoformat(): d.counts})[1:-1]
        assert len(_DAY_MEMBERS) <= _DAY_MEMBERS.LIMIT
