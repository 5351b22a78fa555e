"""Work leases on SQLite and PostgreSQL: one holder at a time, takeover after expiry, failure backoff."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from relinsights.scheduling.leases import Leases


def test_one_holder_at_a_time_and_takeover_after_expiry(engine: Engine) -> None:
    a, b = Leases(engine, "a"), Leases(engine, "b")
    assert a.claim("sync:t:m1", timedelta(minutes=5))
    assert not b.claim("sync:t:m1", timedelta(minutes=5))
    assert a.claim("sync:t:m1", timedelta(minutes=5))  # the holder may extend its own claim
    assert b.claim("sync:t:m2", timedelta(minutes=5))
    assert a.holders() == {"sync:t:m1": "a", "sync:t:m2": "b"}
    # a dies: after its lease runs out, b takes the unit over.
    later = datetime.now(UTC) + timedelta(minutes=6)
    assert b.claim("sync:t:m1", timedelta(minutes=5), now=later)
    assert not a.renew("sync:t:m1", timedelta(minutes=5))
    a.release("sync:t:m1")  # not ours any more: no effect
    assert not a.claim("sync:t:m1", timedelta(minutes=5), now=later)


def test_failures_back_off_and_success_resets(engine: Engine) -> None:
    a = Leases(engine, "a")
    assert a.claim("compute:t", timedelta(minutes=5))
    a.release("compute:t", error="boom")
    assert not a.claim("compute:t", timedelta(minutes=5))  # backing off for a minute
    soon = datetime.now(UTC) + timedelta(seconds=61)
    assert a.claim("compute:t", timedelta(minutes=5), now=soon)
    a.release("compute:t", error="boom again", now=soon)
    assert not a.claim("compute:t", timedelta(minutes=5), now=soon + timedelta(seconds=90))  # now 2 minutes
    assert a.claim("compute:t", timedelta(minutes=5), now=soon + timedelta(seconds=130))
    a.release("compute:t")
    assert a.claim("compute:t", timedelta(minutes=5))


def test_concurrent_claims_have_exactly_one_winner(engine: Engine) -> None:
    owners = [Leases(engine, f"o{i}") for i in range(6)]
    for unit in range(10):
        wins: list[str] = []
        barrier = threading.Barrier(len(owners))

        def go(lease: Leases, u: int = unit, wins: list[str] = wins, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            if lease.claim(f"u{u}", timedelta(minutes=5)):
                wins.append(lease.owner)

        threads = [threading.Thread(target=go, args=(o,)) for o in owners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, (unit, wins)
