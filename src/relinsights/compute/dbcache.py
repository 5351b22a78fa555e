"""A small SQLite page cache while the KPI job reads and writes.

The engine gives every SQLite connection a 64 MiB page cache (db/engine.py: it keeps a large first
sync's index inserts in memory). The KPI job reads the window's rows once, in order, and writes one
snapshot per record: a large cache does not save it any work, and filled by a year of mail it was about
a tenth of the job's peak memory. So the job's connections use a small cache while it holds them and
give the pooled connection its own size back afterwards (the smaller cache is emptied, not the file).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

JOB_CACHE_KIB = 2048


@contextmanager
def small_page_cache(conn: Connection, kib: int = JOB_CACHE_KIB) -> Iterator[Connection]:
    """`conn` with a page cache of at most `kib` KiB (SQLite only; other databases as they are)."""
    if conn.dialect.name != "sqlite":
        yield conn
        return
    before = int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield conn
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={before}")
