"""A child process that reads one query of a SQLite file with ADBC and writes its rows as an Arrow file.

Run by bulk_read.py for large reads: ADBC's SQLite driver hands back columns far faster than the sqlite3
module makes row tuples, but it carries its own copy of the SQLite library, and two copies in one process
break each other's file locks (https://www.sqlite.org/howtocorrupt.html, 2.2.1). In a process of its own it
is just another reader of the database, which SQLite's WAL mode is made for; it opens the file read-only.

    python -P sqlite_reader.py DATABASE_FILE OUTPUT_FILE QUERY   (it imports nothing of relinsights)
"""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path


def main() -> None:
    import adbc_driver_sqlite.dbapi as sqlite
    import polars as pl

    database, output, sql = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3]
    with closing(sqlite.connect(f"file:{database}?mode=ro")) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(sql)
        frame = pl.DataFrame(cursor.fetch_arrow())
    frame.write_ipc(output)  # a file, not the pipe: the parent reads it at memory speed


if __name__ == "__main__":
    main()
