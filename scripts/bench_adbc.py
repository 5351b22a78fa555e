"""The large read's driver cost: the KPI job's queries through the ADBC drivers installed and through another
release's, side by side.

The mail and calendar queries of a full run (`load.mail_read`, `load.event_read`) over a database of
`bench_compute.py`, every part read as a reader process reads it (`read_process.connect`, its rows into a polars
frame, its allocator set as theirs), by the project's drivers and by those installed in --other, alternating,
each time in a fresh process, the database's files read into the operating system's cache first
(`bench_compute.warm`). Per run: the process's CPU seconds (decoding the rows; on SQLite the database engine
too, which the driver carries), its wall seconds, and the drivers' version; then the median of each side and
their ratio.

    .venv/bin/pip install --target /tmp/adbc-1.13 adbc-driver-postgresql==1.13.0 adbc-driver-sqlite==1.13.0
    .venv/bin/python scripts/bench_adbc.py --url sqlite:////tmp/bench.db --other /tmp/adbc-1.13
    .venv/bin/python scripts/bench_adbc.py --url postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        --other /tmp/adbc-1.13

The database location goes to each worker on its standard input, as to a reader process (a PostgreSQL URL
may hold a password).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from bench_compute import T, tenant_config, warm
from relinsights.compute import read_process
from relinsights.compute.bulk_read import parts, reader_env, reader_location
from relinsights.compute.load import event_read, mail_read, read_since
from relinsights.db import make_engine
from relinsights.db.tenants import ensure_tenant


def queries(url: str) -> tuple[list[str], str]:
    """(every part of the full run's mail and calendar queries as of bench_compute.py's T, the location a
    reader process is given)."""
    engine = make_engine(url)
    tenant = tenant_config()
    tenant_pk = ensure_tenant(engine, tenant).id
    assert tenant_pk is not None
    since = read_since(tenant, T)
    with engine.connect() as conn:
        # (every mailbox of bench_compute.py's tenant is in scope)
        mail, events = mail_read(conn, tenant_pk, since, every=True), event_read(conn, tenant_pk, since, every=True)
    read = [*mail.queries, *events.queries]
    return [sql for q in read for sql in parts(q.sql)], reader_location(engine.url)[0]


def worker(sqls_file: str) -> None:
    """Read every part (this process's drivers: PYTHONPATH chooses) and print what it cost, as JSON."""
    from importlib.metadata import version

    import polars as pl

    location = sys.stdin.read().strip()
    sqls = json.loads(Path(sqls_file).read_text())
    driver = "adbc-driver-postgresql" if location.startswith("postgresql://") else "adbc-driver-sqlite"
    started, cpu, rows = time.perf_counter(), time.process_time(), 0
    with closing(read_process.connect(location)) as conn:
        for sql in sqls:
            with closing(conn.cursor()) as cursor:
                cursor.execute(sql)
                rows += pl.DataFrame(cursor.fetch_arrow()).height
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"version": version(driver), "cpu": cpu, "seconds": seconds, "rows": rows}))


def run(sqls_file: str, location: str, other: str | None) -> dict[str, float | str]:
    env = reader_env()  # (a reader process's allocator setting)
    if other:
        env["PYTHONPATH"] = os.pathsep.join([other, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, __file__, "--worker", sqls_file],
        input=location,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a database holding bench_compute.py's tenant")
    p.add_argument("--other", help="a directory holding other releases of the ADBC drivers (pip install --target)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating (default 3)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if not args.url or not args.other:
        p.error("--url and --other are needed")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    sqls, location = queries(args.url)
    with tempfile.TemporaryDirectory() as work:
        sqls_file = str(Path(work) / "queries.json")
        Path(sqls_file).write_text(json.dumps(sqls))
        sides: dict[str, list[dict[str, float | str]]] = {"installed": [], "other": []}
        for _ in range(args.rounds):
            for side, other in (("installed", None), ("other", args.other)):
                warm(args.url)
                r = run(sqls_file, location, other)
                sides[side].append(r)
                print(
                    f"{side:9} {r['version']:>8}  cpu {r['cpu']:6.2f} s  wall {r['seconds']:6.2f} s"
                    f"  {r['rows']:,} rows in {len(sqls)} parts",
                    flush=True,
                )
    cpu = {side: statistics.median(float(r["cpu"]) for r in runs) for side, runs in sides.items()}
    wall = {side: statistics.median(float(r["seconds"]) for r in runs) for side, runs in sides.items()}
    print(
        f"median cpu: installed {cpu['installed']:.2f} s, other {cpu['other']:.2f} s"
        f" (other / installed {cpu['other'] / cpu['installed']:.2f});"
        f" wall: {wall['installed']:.2f} s, {wall['other']:.2f} s"
    )


if __name__ == "__main__":
    main()
