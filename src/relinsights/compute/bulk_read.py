"""Large reads straight into columns (polars frames).

A year of a tenant's mail is millions of rows; through SQLAlchemy every value becomes a Python object in a
Row first, and the rows then have to be turned into columns: more time than the database takes to
produce them.

- PostgreSQL: the ADBC (Arrow Database Connectivity) driver reads the rows with COPY's binary format and
  hands back Arrow columns, which polars takes without a Python object per value. It gets its own
  short-lived connection from the engine's URL, and sees what is committed.
- SQLite: the engine's own driver (sqlite3), row tuples into frames a batch at a time. Not ADBC: its
  driver carries a second copy of the SQLite library, and two copies in one process break each other's
  file locks (https://www.sqlite.org/howtocorrupt.html, 2.2.1) while the daemon holds its connections.

Only literal values the code formats itself (integers, ISO timestamps) are ever put into the SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import polars as pl
from sqlalchemy import Engine

from relinsights.compute.dbcache import small_page_cache

Reader = Callable[[str, list[str]], pl.DataFrame]  # (sql, column names) -> frame
_BATCH = 100_000


@contextmanager
def bulk_reader(engine: Engine) -> Iterator[Reader]:
    """A function that runs a query and returns its rows as a frame, its columns named as given."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        import adbc_driver_postgresql.dbapi as postgresql

        with closing(
            postgresql.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        ) as conn:

            def read_arrow(sql: str, names: list[str]) -> pl.DataFrame:
                with closing(conn.cursor()) as cursor:
                    cursor.execute(sql)
                    frame = pl.DataFrame(cursor.fetch_arrow())
                frame.columns = names
                return frame

            yield read_arrow
        return
    with engine.connect() as sa_conn, small_page_cache(sa_conn):
        raw = sa_conn.connection.driver_connection
        assert raw is not None

        def read_rows(sql: str, names: list[str]) -> pl.DataFrame:
            chunks: list[pl.DataFrame] = []
            with closing(raw.cursor()) as cursor:
                cursor.execute(sql)
                while rows := cursor.fetchmany(_BATCH):
                    chunks.append(pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None))
            return pl.concat(chunks, how="vertical_relaxed") if chunks else pl.DataFrame(schema=names)

        yield read_rows


def utc_micros(col: pl.Series) -> pl.Series:
    """A timestamp column as read (SQLite's text, PostgreSQL's timestamptz) as UTC microseconds."""
    if col.dtype == pl.String:
        col = col.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
    if isinstance(col.dtype, pl.Datetime):
        return col.dt.epoch("us")
    return col.cast(pl.Int64)  # no rows: the driver could not tell the type


def timestamp_literal(dialect: str, at: datetime) -> str:
    """`at` as a SQL literal comparable with a stored UTC timestamp (SQLite's text, PostgreSQL's timestamptz)."""
    utc = at.astimezone(UTC)
    if dialect == "sqlite":
        return "'" + utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    return "TIMESTAMPTZ '" + utc.isoformat() + "'"
