"""Spilled columns (spilled.py) and frames whose activity keys are kept in a file (ActivityFrames.combine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relinsights.analytics import spilled
from relinsights.analytics.activities import Activity, Direction, Kind, Participant, Role
from relinsights.analytics.frames import KEY_SEED, ActivityFrames, FrameActivities, frames_of, gathered
from relinsights.analytics.spilled import SpilledStrings

T = datetime(2026, 3, 2, 12, tzinfo=UTC)


@given(st.lists(st.text(), max_size=40), st.booleans(), st.data())
def test_every_value_reads_back_as_it_was_whatever_the_order(
    values: list[str], wide: bool, data: st.DataObject
) -> None:
    order = data.draw(st.none() | st.permutations(range(len(values))))
    wanted = values if order is None else [values[i] for i in order]
    with pytest.MonkeyPatch.context() as mp:
        if wide:  # (places in 64 bits, as a file of 4 GiB or more has them)
            mp.setattr(spilled, "WIDE_FROM", 0)
        column = pl.Series("k", values, dtype=pl.String)
        kept = SpilledStrings(column, None if order is None else pl.Series(order, dtype=pl.UInt32))
    assert len(kept) == len(values)
    assert [kept[i] for i in range(len(values))] == wanted  # (non-ASCII, empty strings and all)
    assert kept.to_series("k").equals(pl.Series("k", wanted, dtype=pl.String))
    if values:
        assert kept[-1] == wanted[-1]
    kept.close()


def test_a_row_out_of_range_or_a_column_with_nulls_is_refused() -> None:
    kept = SpilledStrings(pl.Series(["a", "b"]))
    with pytest.raises(IndexError, match="value 2 of 2"):
        kept[2]
    with pytest.raises(ValueError, match="'k' has 1 nulls"):
        SpilledStrings(pl.Series("k", ["a", None]))


def _activity(key: str, hours: int) -> Activity:
    return Activity(
        key=key,
        kind=Kind.EMAIL,
        direction=Direction.OUTGOING,
        time=T - timedelta(hours=hours),
        end=T - timedelta(hours=hours),
        participants=(
            Participant("bob@contoso.com", True, Role.FROM, "bob@contoso.com"),
            Participant("ann@fabrikam.com", False, Role.TO, "ann@fabrikam.com"),
        ),
        message_id=key.removeprefix("email:"),
    )


@pytest.mark.parametrize("in_order", [True, False])
def test_each_activity_has_its_key_hash_and_its_place_in_time_then_key_order(in_order: bool) -> None:
    # In (time, key) order; the last two at the same time, their keys break the tie. Out of order (reversed),
    # each one's place comes from the keys themselves.
    acts = [_activity("email:<b@x>", 3), _activity("email:<a@x>", 2), _activity("email:<é@x>", 2)]
    if not in_order:
        acts.reverse()
    order = frames_of(acts).key_order()
    assert order.get_column("krank").to_list() == ([0, 1, 2] if in_order else [2, 1, 0])
    assert order.get_column("key_h").equals(pl.Series([a.key for a in acts]).hash(KEY_SEED), check_names=False)


def test_combining_with_the_keys_spilled_gives_the_frames_combined_in_memory() -> None:
    # Two pieces whose activities interleave in (time, key) order: the keys go to their file in that order.
    def pieces() -> list[ActivityFrames]:
        return [
            frames_of([_activity("email:<c@x>", 4), _activity("email:<é@x>", 2)]),
            frames_of([_activity("email:<b@x>", 2), _activity("email:<d@x>", 1)]),
        ]

    whole = ActivityFrames.combine(pieces())
    kept = ActivityFrames.combine(pieces(), spill_keys=True)
    assert "key" not in kept.acts.columns and kept.keys is not None
    assert kept.key_column().to_list() == ["email:<c@x>", "email:<b@x>", "email:<é@x>", "email:<d@x>"]
    assert kept.key_column().equals(whole.acts.get_column("key"))
    assert [kept.key_of(a) for a in range(4)] == whole.acts.get_column("key").to_list()
    assert kept.key_order().equals(whole.key_order())
    assert kept.acts.drop("key_h", "krank").equals(whole.acts.drop("key"))
    assert kept.parts.equals(whole.parts)
    assert list(FrameActivities(kept)) == list(FrameActivities(whole))
    assert kept.compacted().keys is kept.keys


def test_a_frame_gathered_a_column_at_a_time_is_the_frame_gathered_and_lets_the_columns_go() -> None:
    frame = pl.DataFrame({"t": [3, 1, 2], "key": ["c", "a", "b"], "ids": [["z"], [], ["x", "y"]]})
    rows = pl.Series([1, 2, 0], dtype=pl.UInt32)
    expected = frame.select(pl.all().gather(rows))
    assert gathered(frame, rows).equals(expected)
    assert frame.width == 0  # (the caller's frame gave up every column)


def test_combining_no_activities_with_the_keys_spilled() -> None:
    kept = ActivityFrames.combine([ActivityFrames.empty()], spill_keys=True)
    assert len(kept) == 0 and kept.key_column().len() == 0 and kept.key_order().height == 0
