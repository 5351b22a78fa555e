"""Benchmark of `relinsights report` with a thousand records: how long writing takes, how big the pages are,
and how fast Chromium opens them.

What it does, in one run (run it alone: other work on the machine slows it):
* a small sandbox organisation is synced, mirrored and computed into a fresh SQLite file, as `demo` does;
* its latest KPI snapshots are copied under new record ids until the tenant has `--records` of them
  (real payloads, so the pages are the size and shape real ones are);
* the report is written twice side by side: one process (`--sequential` records only, default 50) and one
  process per core (every record); the per-page and per-chart costs are printed for both;
* headless Chromium (Debian's `chromium`, when installed) opens the overview (every record ranked) and a
  record page from disk, and the load event's time is printed.

    .venv/bin/python scripts/bench_report.py                 # 1,000 records
    .venv/bin/python scripts/bench_report.py --records 200 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select


def pipeline(work: Path) -> tuple[Engine, Any, int]:
    from relinsights.compute import compute_tenant
    from relinsights.config import load_config
    from relinsights.crm.mirror import mirror_tenant
    from relinsights.db import make_engine, migrate
    from relinsights.db.tenants import ensure_tenant
    from relinsights.graph.sync import sync_tenant
    from relinsights.sandbox.server import SandboxServer

    with SandboxServer(size="small", seed=1, state_dir=work / "sandbox") as server:
        cfg = load_config(server.write_daemon_config(work))
        engine = make_engine(cfg.database_url)
        migrate(engine)
        tenant = cfg.tenants[0]
        asyncio.run(sync_tenant(engine, tenant, now=server.org.now))
        asyncio.run(mirror_tenant(engine, tenant))
        compute_tenant(engine, tenant, as_of=server.org.now(), full=True)
    return engine, tenant, ensure_tenant(engine, tenant).id or 0


def multiply(engine: Engine, tenant_pk: int, records: int) -> int:
    """Copy the latest snapshots under new ids until there are `records` of them; returns how many there are."""
    from relinsights.compute.store import latest_as_of, snapshot_t

    as_of = latest_as_of(engine, tenant_pk)
    c = snapshot_t.c
    with engine.begin() as conn:
        rows = [
            dict(r._mapping) for r in conn.execute(select(snapshot_t).where(c.tenant_pk == tenant_pk, c.as_of == as_of))
        ]
        copies = []
        for i in range(max(0, records - len(rows))):
            row = dict(rows[i % len(rows)])
            row.pop("id")
            row["record_id"] = str(uuid.UUID(int=i + 1))
            copies.append(row)
        if copies:
            conn.execute(insert(snapshot_t), copies)
    return len(rows) + len(copies)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the page workers): what load cannot inflate."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def sizes(directory: Path) -> dict[str, float]:
    pages = [p.stat().st_size for p in directory.glob("*.html") if p.name != "index.html"]
    return {
        "record_pages": len(pages),
        "record_page_median_kib": round(statistics.median(pages) / 1024, 1),
        "record_page_max_kib": round(max(pages) / 1024, 1),
        "overview_kib": round((directory / "index.html").stat().st_size / 1024, 1),
        "total_mib": round((sum(pages) + (directory / "index.html").stat().st_size) / 2**20, 1),
    }


def chromium_load_ms(paths: list[Path]) -> dict[str, float] | None:
    exe = shutil.which("chromium")
    if exe is None:
        return None
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        for label, path in zip(("overview", "record page"), paths, strict=True):
            times = []
            for _ in range(3):
                page = browser.new_page()
                page.goto(path.as_uri(), wait_until="load")
                times.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                page.close()
            out[label] = round(statistics.median(times), 1)
        browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=1000, help="records in the tenant (default 1000)")
    p.add_argument("--sequential", type=int, default=50, help="records for the one-process run (default 50)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()

    from relinsights.compute.views import RecordHit
    from relinsights.log import setup_logging
    from relinsights.report.build import _snapshot_hits, write_report, write_tenant

    setup_logging("warning", "console")
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        engine, tenant, pk = pipeline(work)
        n = multiply(engine, pk, args.records)
        setup_s = time.perf_counter() - t0
        hits: list[RecordHit] = _snapshot_hits(engine, pk, _latest(engine, pk))[: args.sequential]
        t1, c1 = time.perf_counter(), cpu_seconds()
        write_tenant(engine, tenant, pk, work / "seq", hits, jobs=1)
        seq_s, seq_cpu = time.perf_counter() - t1, cpu_seconds() - c1
        jobs = os.cpu_count() or 1
        c2 = cpu_seconds()
        result = write_report(engine, [(tenant, pk)], work / "par", jobs=jobs)
        par_cpu = cpu_seconds() - c2
        charts = _charts_per_page(work / "par" / tenant.name)
        directory = work / "par" / tenant.name
        some_page = next(p for p in sorted(directory.glob("opportunity-*.html")))
        res = {
            "records": n,
            "setup_seconds": round(setup_s, 1),
            "charts_per_page": charts,
            "one_process": {
                "pages": len(hits),
                "seconds": round(seq_s, 2),
                "ms_per_page": round(1000 * seq_s / len(hits), 1),
                "ms_per_chart": round(1000 * seq_s / len(hits) / charts, 1),
                "cpu_ms_per_page": round(1000 * seq_cpu / len(hits), 1),
            },
            f"{jobs}_processes": {
                "pages": result.pages,
                "seconds": round(result.seconds, 2),
                "ms_per_page": round(1000 * result.seconds / result.pages, 1),
                "pages_per_second": round(result.pages / result.seconds, 1),
                "cpu_ms_per_page": round(1000 * par_cpu / result.pages, 1),
            },
            "sizes": sizes(directory),
            "chromium_load_ms": chromium_load_ms([directory / "index.html", some_page]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
        return
    one, par = res["one_process"], res[f"{jobs}_processes"]
    print(f"records: {n} (setup: sandbox pipeline and copies, {res['setup_seconds']} s); {charts} charts per page")
    print(
        f"one process:   {one['pages']} pages in {one['seconds']} s = {one['ms_per_page']} ms/page, {one['ms_per_chart']} ms/chart; CPU {one['cpu_ms_per_page']} ms/page"
    )
    print(
        f"{jobs} processes:  {par['pages']} pages + overview in {par['seconds']} s = {par['ms_per_page']} ms/page ({par['pages_per_second']} pages/s); CPU {par['cpu_ms_per_page']} ms/page"
    )
    s = res["sizes"]
    print(
        f"sizes: overview {s['overview_kib']} KiB, record page median {s['record_page_median_kib']} KiB (max {s['record_page_max_kib']}), all {s['total_mib']} MiB"
    )
    load = res["chromium_load_ms"]
    print(f"chromium load event: {load}" if load else "chromium: not installed, load times skipped")


def _latest(engine: Engine, pk: int) -> Any:
    from relinsights.compute.store import latest_as_of

    return latest_as_of(engine, pk)


def _charts_per_page(directory: Path) -> float:
    pages = [p for p in directory.glob("*.html") if p.name != "index.html"][:50]
    return round(sum(p.read_text().count("<svg") for p in pages) / len(pages), 1)


if __name__ == "__main__":
    main()
