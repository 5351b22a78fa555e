"""A child process that reads the parts of queries with ADBC and writes each part's rows as a Parquet file.

Run by bulk_read.py for large reads, several at once on the same parts: each takes the next part no other
has taken (a claim file made exclusively), and says on its standard output each part it has written.
Columns named by their positions are written as categoricals (of CATEGORIES): a column of few distinct
values (addresses, roles) is then read back as a code per row and its values once, not a string view per
row (16 bytes each: 0.17 GiB of a year of mail's rows at 2,000,000 activities), coded here, beside the run.

- SQLite: ADBC's SQLite driver hands back columns far faster than the sqlite3 module makes row tuples, but
  it carries its own copy of the SQLite library, and two copies in one process break each other's file
  locks (https://www.sqlite.org/howtocorrupt.html, 2.2.1). In a process of its own it is just another
  reader of the database, which SQLite's WAL mode is made for; it opens the file read-only.
- PostgreSQL: ADBC's driver (binary COPY) works as well in the parent, but the Arrow buffers it allocates
  outlive the frames made from them there: a year of mail read in-process left 1,040 MiB resident against
  760 MiB read through a file (scripts/bench_compute.py's 2,000,000-activity database).

The database location comes on standard input, never on the command line (a PostgreSQL URI can carry a
password, and any local user can read a process's arguments): a SQLite file path or a `postgresql://` URI.

    python -P read_process.py OUTPUT COLUMNS QUERY [OUTPUT COLUMNS QUERY ...] < LOCATION

(it imports nothing of relinsights) writes the rows of each QUERY it takes to its OUTPUT, the columns at the
comma-separated positions COLUMNS ("" for none) as categoricals, and then prints OUTPUT.
"""

from __future__ import annotations

import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

# The name and namespace of the categories of the coded columns, which the run reads them as
# (analytics.frames.CODED's: this process imports nothing of relinsights). Named, not polars' global mapping:
# the global one lives as long as the process (207,000 addresses, 23 MiB more to the end of the run at
# 2,000,000 activities), a named one goes with the last column using it.
CATEGORIES = ("read", "relinsights")


def connect(location: str) -> Any:
    if location.startswith(("postgresql://", "postgres://")):
        import adbc_driver_postgresql.dbapi as postgresql

        return postgresql.connect(location)
    import adbc_driver_sqlite.dbapi as sqlite

    return sqlite.connect(f"file:{Path(location).resolve()}?mode=ro")


def main() -> None:
    import polars as pl

    tasks = sys.argv[1:]
    location = sys.stdin.read().strip()
    with closing(connect(location)) as conn:
        for output, columns, sql in zip(tasks[0::3], tasks[1::3], tasks[2::3], strict=True):
            try:  # claimed by the first reader to get here: each reader takes the next part no one has
                os.close(os.open(f"{output}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                continue
            with closing(conn.cursor()) as cursor:
                cursor.execute(sql)
                frame = pl.DataFrame(cursor.fetch_arrow())
            if columns:
                coded = [frame.columns[int(i)] for i in columns.split(",")]
                frame = frame.with_columns(pl.col(coded).cast(pl.Categorical(pl.Categories(*CATEGORIES))))
            # A file, not the pipe: the parent reads it at memory speed. Parquet, not Arrow IPC: polars reads an
            # IPC file whole before making its columns (2,400,000 message rows: 1.1 GiB peak for a 0.3 GiB
            # frame), a Parquet file a row group at a time (0.5 GiB); LZ4 makes the file a fifth of the IPC one.
            frame.write_parquet(output, compression="lz4", statistics=False)
            del frame
            print(output, flush=True)  # (the parent reads each part as soon as it is told)


if __name__ == "__main__":
    main()
