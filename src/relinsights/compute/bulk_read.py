"""Large reads straight into columns (polars frames).

A year of a tenant's mail is millions of rows; through SQLAlchemy every value becomes a Python object in a
Row first, and the rows then have to be turned into columns: more time than the database takes to
produce them. ADBC (Arrow Database Connectivity) drivers hand back Arrow columns, which polars takes
without a Python object per value:

- a large read (from PROCESS_READ_ROWS rows) runs each query in a child process of its own with the
  database's ADBC driver (read_process.py says why not in this process), all at once, each handing its
  rows back as Parquet files; the child sees what is committed. A query may come in parts (`id_ranges`),
  which its child reads one after the other, each to a file of its own: the child then holds one part's
  rows at a time, not the whole year's (ADBC's Arrow buffers and polars' frame of them are both alive
  while a part is read: a year of mail of 2,000,000 activities took its child to 1.5 GiB);
- a small one, where starting a process would cost more than it saves: on PostgreSQL through ADBC's
  driver on a short-lived connection of its own, on SQLite through the engine's own driver (sqlite3), row
  tuples into frames a batch at a time.

Only literal values the code formats itself (integers, ISO timestamps) are ever put into the SQL.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple

import polars as pl
from sqlalchemy import Connection

Ready = Callable[[pl.DataFrame], pl.DataFrame]


def as_read(rows: pl.DataFrame) -> pl.DataFrame:
    return rows


class Query(NamedTuple):
    sql: str | Sequence[str]  # the query, or its parts in order
    names: list[str]  # the names of its columns
    # Applied to each part's rows (columns named) as it comes, before the parts are joined: a column that is
    # large as read and small made ready is never held whole as read.
    ready: Ready = as_read


Reader = Callable[[list[Query]], list[pl.DataFrame]]  # queries -> their rows, in order
_BATCH = 100_000
# Rows from which a read goes through child processes: starting one costs about 0.2 s; on SQLite the
# driver's columns save about 5 s per million rows, on PostgreSQL the file about 130 MiB per million.
PROCESS_READ_ROWS = 100_000
RANGE_IDS = 250_000  # the ids in one part of a query read by parts (`id_ranges`)
# The reader runs as a file (-P: its own directory not on the path), not as a module of this package: that
# would import the package first (relinsights.compute and the whole KPI job: over a second a child).
_READER = str(Path(__file__).with_name("read_process.py"))


@contextmanager
def bulk_reader(conn: Connection, rows_hint: int) -> Iterator[Reader]:
    """A function that runs queries and returns their rows as frames, columns named as given;
    `rows_hint` (about how many rows the reads return) chooses how they are read (see the module
    docstring)."""
    url = conn.engine.url
    postgres = url.get_backend_name() == "postgresql"
    if postgres:
        location = url.set(drivername="postgresql").render_as_string(hide_password=False)
        shown = url.render_as_string(hide_password=True)
    else:
        location = shown = url.database or ""
    if rows_hint >= PROCESS_READ_ROWS and (postgres or location not in ("", ":memory:")):
        yield partial(_read_in_processes, location, shown)
        return
    if postgres:
        import adbc_driver_postgresql.dbapi as postgresql

        with closing(postgresql.connect(location)) as adbc:

            def read_arrow(queries: list[Query]) -> list[pl.DataFrame]:
                def rows(sql: str | Sequence[str]) -> Iterator[pl.DataFrame]:
                    for part in parts(sql):
                        with closing(adbc.cursor()) as cursor:
                            cursor.execute(part)
                            yield pl.DataFrame(cursor.fetch_arrow())

                return [joined(rows(q.sql), q.names, q.ready) for q in queries]

            yield read_arrow
        return
    raw = conn.connection.driver_connection
    assert raw is not None

    def read_rows(queries: list[Query]) -> list[pl.DataFrame]:
        def rows(sql: str | Sequence[str], names: list[str]) -> Iterator[pl.DataFrame]:
            for part in parts(sql):
                with closing(raw.cursor()) as cursor:
                    cursor.execute(part)
                    while batch := cursor.fetchmany(_BATCH):
                        yield pl.DataFrame(batch, schema=names, orient="row", infer_schema_length=None)
            yield pl.DataFrame(schema=names)  # (what the read gives when no batch had a row)

        return [joined(rows(q.sql, q.names), q.names, q.ready) for q in queries]

    yield read_rows


def _read_in_processes(location: str, shown: str, queries: list[Query]) -> list[pl.DataFrame]:
    """The queries' rows, each read by a child process of its own (read_process.py), all at once.
    `location` (a SQLite file or a PostgreSQL URI, which may hold a password) goes to each child on its
    standard input; `shown` is what an error names."""
    with tempfile.TemporaryDirectory(prefix="relinsights-read-") as tmp:  # private (0700), removed after
        outputs = [Path(tmp) / str(i) for i in range(len(queries))]
        children = [
            subprocess.Popen(
                [sys.executable, "-P", _READER, str(out), *parts(q.sql)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for out, q in zip(outputs, queries, strict=True)
        ]
        for child in children:  # every child its location first: a child waits for it before it reads
            assert child.stdin is not None
            child.stdin.write(location.encode())
            child.stdin.close()
        errors = []
        for child in children:  # (stderr is the one pipe left: read to its end, nothing can deadlock)
            assert child.stderr is not None
            errors.append(child.stderr.read())
            child.wait()
        for child, error in zip(children, errors, strict=True):
            if child.returncode != 0:
                text = error.decode(errors="replace").replace(location, shown).strip()[-2000:]
                raise RuntimeError(f"reading {shown} failed: {text}")
        return [
            joined((pl.read_parquet(part_file(out, j)) for j in range(len(parts(q.sql)))), q.names, q.ready)
            for out, q in zip(outputs, queries, strict=True)
        ]


def part_file(output: Path, j: int) -> Path:
    """Where read_process.py writes the rows of a query's part j."""
    return output.with_name(f"{output.name}-{j}.parquet")


def parts(sql: str | Sequence[str]) -> list[str]:
    """A query's SQL as the list of its parts."""
    return [sql] if isinstance(sql, str) else list(sql)


def joined(frames: Iterable[pl.DataFrame], names: list[str], ready: Ready = as_read) -> pl.DataFrame:
    """A query's parts (read one after the other) as one frame, columns named as given, each part made
    `ready` as it comes. A part without rows is left out: a driver may type its columns otherwise (it cannot
    tell a type from no values)."""
    kept: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    for frame in frames:
        frame.columns = names
        first = frame if first is None else first
        if frame.height:
            kept.append(ready(frame))
    if not kept:
        assert first is not None, "a query has at least one part"
        kept = [ready(first)]
    return kept[0] if len(kept) == 1 else pl.concat(kept, how="vertical_relaxed")


def id_ranges(last_id: int, *columns: str) -> list[str]:
    """SQL conditions that split a table's rows into parts by an integer key that only grows, up to
    `last_id` RANGE_IDS ids each; the last part is open-ended (rows added since are read too). Each part
    bounds every one of `columns` alike: both sides of a join on the key (PostgreSQL carries no range
    across a join: bounded on one side, it scanned the other table whole for every part)."""
    bounds = list(range(RANGE_IDS, last_id, RANGE_IDS))
    if not bounds:
        return ["1 = 1"]
    ranges: list[tuple[str, ...]] = [(f"> {lo}", f"<= {hi}") for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True)]
    ranges.append((f"> {bounds[-1]}",))
    return [" AND ".join(f"{c} {bound}" for c in columns for bound in r) for r in ranges]


def epoch_micros(dialect: str, column: str) -> str:
    """SQL: a stored UTC timestamp column that is never NULL, read as microseconds since the epoch where the
    database makes that cheaply: SQLite keeps text, which this process parsed at 0.3 µs a value (0.7 s of
    the read's own time at 2,000,000 activities, against 0.3-0.5 s more in the reader: `utc_micros` takes both).
    The whole seconds by SQLite's date functions (unixepoch from 3.38 on, which ADBC's own copy always is)
    from the text without its fraction (they keep milliseconds: .9995 and up would round up to the next second),
    the fraction as written, padded to six digits (SQLAlchemy writes six)."""
    if dialect != "sqlite":
        return column
    whole = f"substr({column}, 1, 19)"
    seconds = (
        f"unixepoch({whole})"
        if sqlite3.sqlite_version_info >= (3, 38, 0)
        else f"CAST(strftime('%s', {whole}) AS INTEGER)"
    )
    return f"({seconds} * 1000000 + CAST(substr(substr({column}, 21) || '000000', 1, 6) AS INTEGER))"


def utc_micros(col: pl.Series) -> pl.Series:
    """A timestamp column as read (SQLite's text or `epoch_micros`, PostgreSQL's timestamptz) as UTC
    microseconds."""
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
