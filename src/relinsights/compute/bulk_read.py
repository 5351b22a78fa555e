"""Large reads straight into columns (polars frames).

A year of a tenant's mail is millions of rows; through SQLAlchemy every value becomes a Python object in a
Row first, and the rows then have to be turned into columns: more time than the database takes to
produce them. ADBC (Arrow Database Connectivity) drivers hand back Arrow columns, which polars takes
without a Python object per value:

- a large read (from PROCESS_READ_ROWS rows) runs its queries in READERS child processes with the
  database's ADBC driver (read_process.py says why not in this process), which hand the rows back as
  Parquet files. A query may come in parts (`id_ranges`); each child takes the next part no other has taken
  (the parts of every query in one list), so the children stay busy until the last part, and holds one
  part's rows at a time, not the whole year's (ADBC's Arrow buffers and polars' frame of them are both
  alive while a part is read: a year of mail of 2,000,000 activities in one query took its child to
  1.5 GiB). This process makes each part ready as soon as it is written, while the children read the
  next ones, and a caller can start another read before it takes the rows of the first;
- a small one, where starting a process would cost more than it saves: on PostgreSQL through ADBC's
  driver on a short-lived connection of its own, on SQLite through the engine's own driver (sqlite3), row
  tuples into frames a batch at a time.

Only literal values the code formats itself (integers, ISO timestamps) are ever put into the SQL.
"""

from __future__ import annotations

import os
import selectors
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple

import polars as pl
from sqlalchemy import URL, Connection

import relinsights
from relinsights.analytics.frames import CODED

Ready = Callable[[pl.DataFrame], pl.DataFrame]


def as_read(rows: pl.DataFrame) -> pl.DataFrame:
    return rows


class Query(NamedTuple):
    sql: str | Sequence[str]  # the query, or its parts in order
    names: list[str]  # the names of its columns
    # Applied to each part's rows (columns named) as it comes, before the parts are joined: a column that is
    # large as read and small made ready is never held whole as read.
    ready: Ready = as_read
    # Columns of few distinct values (among `names`) given as categoricals (CODED): a code a row, not a string
    # (made by the reader processes in a large read: read_process.py).
    categorical: tuple[str, ...] = ()

    def categorical_positions(self) -> str:
        """The categorical columns as read_process.py is told them: their positions, comma-separated."""
        return ",".join(str(self.names.index(c)) for c in self.categorical)


# Starts reading queries; what it returns gives their rows, a query's frame at a time, in order (a large read runs
# while its caller starts another or makes the rows of one before; a caller can make the first queries' rows
# before it takes the next).
Reader = Callable[[list[Query]], Callable[[], Iterator[pl.DataFrame]]]
_BATCH = 100_000
# Rows from which a read goes through child processes: starting one costs about 0.2 s; on SQLite the
# driver's columns save about 5 s per million rows, on PostgreSQL the file about 130 MiB per million.
PROCESS_READ_ROWS = 100_000
# The ids in one part of a query read by parts (`id_ranges`). A reader keeps the memory of its largest part
# (READER_MALLOC_CONF): with 250,000 the read's peak with its readers went from 853-889 to 965-995 MiB at
# 2,000,000 activities, with 125,000 it stays at 864-872.
RANGE_IDS = 125_000
# The child processes of a large read: two, on two cores, with this process making their parts ready (three
# were no faster at 2,000,000 activities), each holding a part's rows at a time.
READERS = 2
# polars' allocator in a reader (`_RJEM_MALLOC_CONF`, read when polars loads): it keeps what a part frees for the
# next, in one arena (whichever of polars' threads frees it). Inherited, the run's own setting returns freed
# memory at once (relinsights/__init__.py), and every part had its pages handed over again. At 2,000,000
# activities, SQLite: 0.82 million page faults, now 0.12; the readers' CPU 7.5-8.7 s, now 6.7-6.9; the read
# 5.0-6.0 s, now 4.7-4.9. PostgreSQL: 0.67 million, now 0.17-0.25; 5.0-6.0 s, now 4.2-4.5; 5.7-6.7 s, now 5.4-5.6.
# An admin's own setting for the service applies to the readers instead (`reader_env`).
READER_MALLOC_CONF = "narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:0"
# The reader runs as a file (-P: its own directory not on the path), not as a module of this package: that
# would import the package first (relinsights.compute and the whole KPI job: over a second a child).
_READER = str(Path(__file__).with_name("read_process.py"))


@contextmanager
def bulk_reader(conn: Connection, rows_hint: int) -> Iterator[Reader]:
    """A Reader: starts reading queries, and gives their rows as frames, columns named as given, when asked;
    `rows_hint` (about how many rows the reads return) chooses how they are read (see the module
    docstring). Readers still running when the block ends are stopped."""
    url = conn.engine.url
    postgres = url.get_backend_name() == "postgresql"
    location, shown = reader_location(url)
    if rows_hint >= PROCESS_READ_ROWS and (postgres or location not in ("", ":memory:")):
        with ExitStack() as started:  # (its readers stopped and files removed, however the caller ends)
            yield partial(_start_in_processes, started, location, shown)
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

                return [joined(rows(q.sql), q) for q in queries]

            yield _at_once(read_arrow)
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

        return [joined(rows(q.sql, q.names), q) for q in queries]

    yield _at_once(read_rows)


def reader_location(url: URL) -> tuple[str, str]:
    """(the database as a reader process is told it: a SQLite file or a PostgreSQL URI, which may hold a
    password; what an error names instead)."""
    if url.get_backend_name() == "postgresql":
        location = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return location, url.render_as_string(hide_password=True)
    return url.database or "", url.database or ""


def _at_once(read: Callable[[list[Query]], list[pl.DataFrame]]) -> Reader:
    """A Reader that reads when it is started (in this process: there is nothing to run beside it)."""

    def start(queries: list[Query]) -> Callable[[], Iterator[pl.DataFrame]]:
        frames = read(queries)
        return lambda: iter(frames)

    return start


def _start_in_processes(
    started: ExitStack, location: str, shown: str, queries: list[Query]
) -> Callable[[], Iterator[pl.DataFrame]]:
    """Start reading the queries by READERS child processes (read_process.py), which share out the queries'
    parts; what it returns gives their rows, each part made ready here as soon as it is read. `location` (a
    SQLite file or a PostgreSQL URI, which may hold a password) goes to each child on its standard input;
    `shown` is what an error names. `started` stops the children and removes their files."""
    tmp = Path(started.enter_context(tempfile.TemporaryDirectory(prefix="relinsights-read-")))  # private (0700)
    outputs = [[part_file(tmp / str(i), j) for j in range(len(parts(q.sql)))] for i, q in enumerate(queries)]
    # The first part of every query, then the second of every query, and so on: a query of one part (the
    # longest) starts at once, and the parts of the first query, which this process takes first, come early.
    tasks = [
        (out[j], q.categorical_positions(), parts(q.sql)[j])
        for j in range(max(map(len, outputs)))
        for out, q in zip(outputs, queries, strict=True)
        if j < len(out)
    ]
    readers = started.enter_context(_Readers(location, shown, tasks, tmp))

    def rows() -> Iterator[pl.DataFrame]:
        for out, q in zip(outputs, queries, strict=True):
            yield joined(map(readers.rows, out), q)  # (the next query's parts wait in their files meanwhile)
        readers.finish()

    return rows


class _Readers:
    """Reader processes working through a list of parts, each taking the next one no other has taken, and
    telling on its standard output each part it has written."""

    def __init__(self, location: str, shown: str, tasks: list[tuple[Path, str, str]], tmp: Path) -> None:
        self.location, self.shown, self.tasks, self.tmp = location, shown, tasks, tmp
        self.done = set[str]()
        self.selector = selectors.DefaultSelector()
        self.children: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.pending: dict[int, bytes] = {}  # a child's output after its last newline, not yet a whole line

    def __enter__(self) -> _Readers:
        try:
            self._start()
        except BaseException:
            self.__exit__()  # (the children started so far stopped)
            raise
        return self

    def _start(self) -> None:
        args = [arg for path, columns, sql in self.tasks for arg in (str(path), columns, sql)]
        for i in range(min(READERS, len(self.tasks))):
            errors = self.tmp / f"errors-{i}"
            with errors.open("wb") as err:  # (a file, not a pipe: a child never waits for this process to read)
                child = subprocess.Popen(
                    [sys.executable, "-P", _READER, *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=reader_env(),
                )
            self.children.append((child, errors))
        for child, _errors in self.children:  # every child its location first: a child waits for it to read
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(self.location.encode())
            child.stdin.close()
            self.selector.register(child.stdout, selectors.EVENT_READ, child)
            self.pending[child.stdout.fileno()] = b""

    def __exit__(self, *_: object) -> None:
        for child, _errors in self.children:  # (after a failure: the others are not waited for)
            if child.poll() is None:
                child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
        self.selector.close()

    def rows(self, path: Path) -> pl.DataFrame:
        """The rows of a part, once a child has written them (the file goes as soon as it is read)."""
        while str(path) not in self.done:
            if not self.selector.get_map():
                self._failed()
                raise RuntimeError(f"reading {self.shown} failed: no reader read {path.name}")
            self._hear()
        rows = pl.read_parquet(path)
        path.unlink()
        return rows

    def finish(self) -> None:
        """Wait for every child to end; an error if one failed."""
        while self.selector.get_map():
            self._hear()

    def _hear(self) -> None:
        """Take what the children have said: the parts they wrote; an error if one ended in failure."""
        for key, _ in self.selector.select():
            self._heard(key.fileobj, key.data)  # type: ignore[arg-type]

    def _heard(self, stdout: IO[bytes], child: subprocess.Popen[bytes]) -> None:
        fd = stdout.fileno()
        data = os.read(fd, 65536)
        if data:
            *lines, self.pending[fd] = (self.pending[fd] + data).split(b"\n")
            self.done.update(line.decode() for line in lines)
            return
        self.selector.unregister(stdout)
        if child.wait() != 0:
            self._failed()

    def _failed(self) -> None:
        for child, errors in self.children:
            if child.poll() not in (None, 0):
                text = errors.read_bytes().decode(errors="replace").replace(self.location, self.shown).strip()
                raise RuntimeError(
                    f"reading {self.shown} failed: {text[-2000:] or f'a reader ended with {child.returncode}'}"
                )


def reader_env() -> dict[str, str]:
    """A reader process's environment: this one's, with the readers' allocator setting (READER_MALLOC_CONF) or
    the one the service's environment gave (relinsights.ADMIN_MALLOC_CONF)."""
    return {**os.environ, "_RJEM_MALLOC_CONF": relinsights.ADMIN_MALLOC_CONF or READER_MALLOC_CONF}


def part_file(output: Path, j: int) -> Path:
    """Where read_process.py writes the rows of a query's part j."""
    return output.with_name(f"{output.name}-{j}.parquet")


def parts(sql: str | Sequence[str]) -> list[str]:
    """A query's SQL as the list of its parts."""
    return [sql] if isinstance(sql, str) else list(sql)


def joined(frames: Iterable[pl.DataFrame], query: Query) -> pl.DataFrame:
    """A query's parts (read one after the other) as one frame, columns named as the query says, its
    categorical ones as categoricals (CODED), each part made `ready` as it comes. A part without rows is left
    out: a driver may type its columns otherwise (it cannot tell a type from no values)."""
    kept: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    coded = pl.col(query.categorical).cast(CODED)  # (a reader process's parts come coded already)
    for frame in frames:
        frame.columns = query.names
        frame = frame.with_columns(coded) if query.categorical else frame
        first = frame if first is None else first
        if frame.height:
            kept.append(query.ready(frame))
    if not kept:
        assert first is not None, "a query has at least one part"
        kept = [query.ready(first)]
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
