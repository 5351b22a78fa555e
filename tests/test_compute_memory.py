"""The compute job's memory-saving mechanisms keep every value (the analytics' own: tests/analytics/test_memory.py)."""

from __future__ import annotations

from typing import Any

import orjson

from relinsights.compute.store import PayloadPacker, SnapshotRow


def test_payloads_wait_packed_and_come_back_byte_for_byte() -> None:
    packer = PayloadPacker()
    payloads = [
        orjson.dumps({"version": 1, "daily": {f"2026-01-{d:02d}": {"emails_sent": d * n} for d in range(1, 29)}})
        for n in range(1, 6)
    ] + [orjson.dumps({"name": "Zoë ✓", "top": []}), b"{}"]
    packed = [packer.pack(p) for p in payloads]
    assert [packer.unpack(z) for z in packed] == payloads
    assert sum(map(len, packed[1:5])) * 4 < sum(map(len, payloads[1:5]))  # the first one is the dictionary
    row = SnapshotRow("contact", "c1", packed[2], "fp", None, 3, None, None, None, None, packer)
    assert row.payload == payloads[2] and orjson.loads(row.payload)["daily"]["2026-01-02"] == {"emails_sent": 6}


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
