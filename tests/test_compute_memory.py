"""The compute job's memory-saving mechanisms keep every value (the analytics' own: tests/analytics/test_memory.py)."""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from typing import Any

import orjson
import pytest

from analytics.factory import at, rules
from relinsights.analytics import spillfile
from relinsights.analytics.activity_frames import build_activity_frames
from relinsights.analytics.mail_frames import mail_rows
from relinsights.analytics.meeting_frames import event_rows
from relinsights.analytics.sources import Attendee, CalendarEvent, MailMessage
from relinsights.analytics.spillfile import SpilledBytes
from relinsights.compute.store import SnapshotRow


@pytest.mark.parametrize("buffer", [1, 100, 1 << 20])  # each value written alone, several together, all at the end
def test_payloads_wait_in_a_file_and_come_back_byte_for_byte(buffer: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spillfile, "BUFFER", buffer)
    payloads = SpilledBytes()
    values = [
        orjson.dumps({"version": 1, "daily": {f"2026-01-{d:02d}": {"emails_sent": d * n} for d in range(1, 29)}})
        for n in range(1, 6)
    ] + [orjson.dumps({"name": "Zoë ✓", "top": []}), b"{}", b""]
    values.append(orjson.dumps({"ids": [f"<{n * 7919 % 100_003:x}@example.com>" for n in range(3000)]}))  # > a buffer
    rows = []
    for i, value in enumerate(values):
        place = payloads.append(value)
        rows.append(SnapshotRow("contact", f"c{i}", place, "fp", None, 3, None, None, None, None, payloads))
        if i == 3:  # read back while others are still to come (what is pending written first)
            assert rows[0].payload == values[0] and rows[3].payload == values[3]
    assert [row.payload for row in rows] == values
    assert orjson.loads(rows[2].payload)["daily"]["2026-01-02"] == {"emails_sent": 6}
    assert len(payloads) == sum(map(len, values))
    five = SpilledBytes()
    assert five.append(b"12345") == (0, 5) and five.read(0, 0) == b""
    # Bytes a writer writes to the file itself go after what is pending, and what is appended after goes after them.
    assert five.append_written(lambda file: file.write(b"abc")) == (5, 3) and five.append(b"!") == (8, 1)
    assert five.read(0, 9) == b"12345abc!"
    with pytest.raises(IndexError, match=r"bytes 6\.\.11 of 9"):
        five.read(6, 5)  # (never bytes past the end, nor a short read)
    payloads.close()
    five.close()


@pytest.mark.parametrize("buffer", [1, 1000])
def test_payloads_read_by_one_thread_while_another_appends_come_back_whole(
    buffer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KPI job's writer reads payloads while the job appends more (PostgreSQL: store.RunWriter)."""
    monkeypatch.setattr(spillfile, "BUFFER", buffer)
    payloads = SpilledBytes()
    values = [f"payload {n} ".encode() * (n % 37) for n in range(20_000)]
    places: queue.Queue[tuple[int, tuple[int, int]] | None] = queue.Queue()
    wrong: list[int] = []

    def read() -> None:
        while (item := places.get()) is not None:
            n, place = item
            if payloads.read(*place) != values[n]:
                wrong.append(n)

    reader = threading.Thread(target=read)
    reader.start()
    for n, value in enumerate(values):
        places.put((n, payloads.append(value)))
    places.put(None)
    reader.join()
    assert wrong == [] and len(payloads) == sum(map(len, values))
    payloads.close()


def test_the_job_reads_with_a_small_sqlite_page_cache_and_gives_the_pool_its_own_back(tmp_path: Any) -> None:
    from sqlalchemy import text

    from relinsights.compute.dbcache import small_page_cache
    from relinsights.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -65536  # the engine's own
        with small_page_cache(conn) as same:
            assert same is conn and conn.execute(text("PRAGMA cache_size")).scalar_one() == -2048
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -65536
    engine.dispose()


def test_the_builders_take_the_rows_out_of_their_holders_and_keep_none() -> None:
    """A year of mail and calendars is freed as the activities are built: nothing keeps the read frames."""
    users = rules()
    mail = mail_rows(
        [MailMessage("g1", "bob@contoso.com", at("2026-03-01 09:00"), "bob@contoso.com", to=("ann@fabrikam.com",))]
    )
    meetings = event_rows(
        [
            CalendarEvent(
                "e1",
                "bob@contoso.com",
                at("2026-03-02 09:00"),
                at("2026-03-02 10:00"),
                "bob@contoso.com",
                (Attendee("ann@fabrikam.com", "required", "accepted"),),
            )
        ]
    )
    read = [weakref.ref(f) for f in (mail.messages, mail.recipients, meetings.events, meetings.attendees)]
    frames, _ = build_activity_frames(rules=users, mail=mail, meetings=meetings)
    gc.collect()
    assert len(frames) == 2 and len(mail) == 0 and len(meetings) == 0
    assert [r() is None for r in read] == [True] * 4
