"""Benchmark of the Dataverse write-back against the sandbox: batched UpsertMultiple vs one PATCH per row.

What it measures (one run, one machine, against the sandbox's Dataverse over HTTPS with real MSAL and the
sandbox's default service-protection limits, which are Dataverse's own):

* setup, not timed: a generated organisation (`--org`, default medium) synced, mirrored and computed into
  a fresh SQLite file;
* ours, first: `writeback_tenant` writing every KPI, daily-series and top-contacts row from empty;
* ours, rerun: the same again with nothing changed (every row skipped by its hash);
* per-row PATCH: the first `--per-row` rows (default 1,000) written again one `PATCH set(id)` each (upserts
  of the same values), with the same parallelism: the way a write-back without batching would send them.
  Only a sample, because at one request a row the real service-protection limit (6,000 requests per
  5 minutes) would stop it for minutes on a medium organisation; rows per second are compared.

    .venv/bin/python scripts/bench_writeback.py              # medium organisation
    .venv/bin/python scripts/bench_writeback.py --org small --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def per_row(tenant: Any, rows: list[Any], parallel: int) -> tuple[float, int]:
    from relinsights.auth import TokenSource
    from relinsights.crm.client import DataverseClient

    assert tenant.dataverse_token_scope
    async with DataverseClient(tenant, TokenSource(tenant, tenant.dataverse_token_scope), max_parallel=parallel) as dv:
        gate = asyncio.Semaphore(parallel)

        async def one(r: Any) -> None:
            async with gate:
                await dv.upsert(r.table.entity_set, r.row_id, {**r.body, **r.stamps})

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in rows))
        return time.perf_counter() - started, dv.requests_sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--org", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-row", type=int, default=1000, help="rows for the one-PATCH-per-row comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from relinsights.compute import compute_tenant
    from relinsights.config import load_config
    from relinsights.crm.mirror import mirror_tenant
    from relinsights.crm.writeback import CrmContext, latest_snapshots, plan, writeback_tenant
    from relinsights.db import make_engine, migrate
    from relinsights.db.tenants import ensure_tenant
    from relinsights.graph.sync import sync_tenant
    from relinsights.log import setup_logging
    from relinsights.sandbox.server import SandboxServer

    setup_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(size=args.org, seed=args.seed, state_dir=Path(tmp)) as sb:
        tenant = load_config(sb.write_daemon_config(Path(tmp) / "cfg")).tenants[0]
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        migrate(engine)
        print(f"setting up a {args.org} organisation (sync, mirror, compute; not timed)...", file=sys.stderr)
        asyncio.run(sync_tenant(engine, tenant, now=sb.org.now))
        asyncio.run(mirror_tenant(engine, tenant))
        computed = compute_tenant(engine, tenant, as_of=sb.org.now(), full=True)

        print("writing back...", file=sys.stderr)
        first = asyncio.run(writeback_tenant(engine, tenant))
        rerun = asyncio.run(writeback_tenant(engine, tenant))
        # The same rows once more, one PATCH each (same values: the rows end as they were).
        snapshots = latest_snapshots(engine, ensure_tenant(engine, tenant).id or 0)
        rows = plan(tenant, snapshots, {}, {}, CrmContext()).rows[: args.per_row]
        naive_s, naive_requests = asyncio.run(per_row(tenant, rows, tenant.writeback.max_parallel))

    rows_written = sum(first.written.values())
    result = {
        "org": args.org,
        "records": computed.records,
        "rows": rows_written,
        "ours_first": {"seconds": round(first.seconds, 2), "requests": first.requests, "throttled": first.throttled},
        "ours_rerun": {"seconds": round(rerun.seconds, 2), "requests": rerun.requests, "skipped": rerun.skipped},
        "per_row_patch": {"seconds": round(naive_s, 2), "requests": naive_requests, "rows": len(rows)},
    }
    ours_rate, naive_rate = rows_written / max(first.seconds, 1e-9), len(rows) / max(naive_s, 1e-9)
    result["speedup_vs_per_row"] = round(ours_rate / naive_rate, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.org} organisation: {computed.records} records -> {rows_written} rows in 10 tables")
    print(f"{'path':<40}{'rows':>8}{'seconds':>9}{'requests':>10}{'rows/s':>10}")
    for label, n, seconds, requests in (
        ("ours, first write (UpsertMultiple)", rows_written, first.seconds, first.requests),
        ("ours, rerun (all unchanged, skipped)", rerun.skipped, rerun.seconds, rerun.requests),
        ("one PATCH per row (sample)", len(rows), naive_s, naive_requests),
    ):
        rate = f"{n / seconds:,.0f}" if "rerun" not in label else "-"
        print(f"{label:<40}{n:>8,}{seconds:>9.2f}{requests:>10,}{rate:>10}")
    per_row_requests = naive_requests / max(len(rows), 1)
    print(
        f"batched writes {result['speedup_vs_per_row']}x the rows per second of one PATCH per row, with "
        f"{per_row_requests * rows_written / max(first.requests, 1):.0f}x fewer requests for the same rows"
    )


if __name__ == "__main__":
    main()
