"""The payload's times (payload.py): written by orjson, exactly as `isoformat()` of the time in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from relinsights.analytics.timeutil import as_utc
from relinsights.compute.payload import utc_time

ZONES = st.sampled_from([None, UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/St_Johns"), ZoneInfo("Asia/Kolkata")])


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=ZONES))
def test_a_time_is_written_as_the_iso_8601_of_its_utc_time(value: datetime) -> None:
    # (naive: read as UTC, as the database stores it; microseconds only when there are)
    assert orjson.dumps({"t": utc_time(value)}) == orjson.dumps({"t": as_utc(value).isoformat()})


def test_no_time_is_null_and_a_utc_time_is_kept_as_it_is() -> None:
    assert orjson.dumps(utc_time(None)) == b"null"
    t = datetime(2026, 3, 1, 9, 0, 0, 120, tzinfo=UTC)
    assert utc_time(t) is t and orjson.dumps(utc_time(t)) == b'"2026-03-01T09:00:00.000120+00:00"'
