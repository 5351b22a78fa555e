"""The compute job's memory-saving mechanisms keep every value (the analytics' own: tests/analytics/test_memory.py)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson

from relinsights.compute.job import compact_json


def test_compact_json_is_orjson_in_a_buffer_of_its_own_size() -> None:
    value = {"daily": [{"day": f"2026-01-{d:02d}", "emails_sent": d} for d in range(1, 29)], "name": "Ann ✓"}
    assert compact_json(value) == orjson.dumps(value) and type(compact_json(value)) is bytes

    def held(make: Any) -> int:  # bytes still allocated while the result is alive
        tracemalloc.start()
        try:
            kept = make(value)
            size = tracemalloc.get_traced_memory()[0]
            del kept
            return size
        finally:
            tracemalloc.stop()

    size = len(orjson.dumps(value))
    assert held(compact_json) < size + 100  # orjson.dumps alone holds ~8 KiB here (orjson 3.13)


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
