"""Benchmark of the sandbox's real-mail importer on the Enron sample (or any archive), and optionally of a
daemon sync of everything it imported.

What it measures, in this process (run it alone: other work on the machine slows it):
* import: `import_archive` streaming the .tar.gz (tarfile's stream mode, nothing unpacked to disk):
  wall time, CPU time, and the process's peak RSS (getrusage ru_maxrss: the high-water mark of the whole
  process, Python and imports included; about 60 MiB of it is there before the import starts);
* sync (with --sync): a relinsights sync of every imported mailbox against `SandboxServer(org=...)` over
  HTTPS with real MSAL into a fresh SQLite file, the sandbox's clock as the daemon's, and a lookback that
  covers the archive; then the database is compared with the sandbox's truth.

    .venv/bin/python scripts/bench_import.py                       # the Enron sample, import only
    .venv/bin/python scripts/bench_import.py --sync                # + a sync of all 129 mailboxes (a minute)
    .venv/bin/python scripts/bench_import.py --users fossum-d,dean-c --sync
    .venv/bin/python scripts/bench_import.py PATH --internal-domain example.com --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "enron-maildir-sample.tar.gz"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_import(path: Path, domains: list[str], users: list[str] | None) -> tuple[Any, dict[str, Any]]:
    from relinsights.sandbox.importer import import_archive

    before = peak_rss_mib()
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = import_archive(path, domains, users=users)
    r = result.report
    return result, {
        "archive": str(path),
        "archive_mib": round(path.stat().st_size / 2**20, 1) if path.is_file() else None,
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(cpu_seconds() - cpu, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_mib": round(before, 1),
        "files": r.files,
        "mailboxes_in_archive": r.mailboxes_in_archive,
        "mailboxes": len(r.mailboxes),
        "users": r.users,
        "emails": r.emails,
        "duplicate_files": r.duplicate_files,
        "items": r.items,
        "conversations": r.conversations,
        "bad_date_files": r.bad_date_files,
        "unparseable": len(r.unparseable),
        "calendar_items": len(r.calendar_files),
        "accounts": r.accounts,
        "contacts": r.contacts,
        "clock": r.clock,
    }


def bench_sync(result: Any) -> dict[str, Any]:
    from sqlalchemy import select

    from relinsights.config import load_config
    from relinsights.db import make_engine, migrate
    from relinsights.db.models import Mailbox, Message
    from relinsights.graph.sync import sync_tenant
    from relinsights.sandbox.server import SandboxServer

    org = result.org
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(org=org, state_dir=Path(tmp) / "sb") as sb:
        tenant = load_config(sb.write_daemon_config(Path(tmp) / "cfg")).tenants[0]
        oldest = min(m.content.sent for mb in org.mailboxes.values() for m in mb.messages.values() if m.content)
        days = min(1825 - tenant.sync.calendar_future_days, (org.now() - oldest).days + 2)
        tenant = tenant.model_copy(update={"sync": tenant.sync.model_copy(update={"lookback_days": days})})
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(engine)

        async def no_wait(_s: float) -> None:
            return None

        wall = time.perf_counter()
        report = asyncio.run(sync_tenant(engine, tenant, sleep=no_wait, now=org.now))
        seconds = time.perf_counter() - wall
        with engine.connect() as conn:
            users = dict(conn.execute(select(Mailbox.id, Mailbox.user_id)).all())
            got: dict[str, set[tuple[str, str]]] = {}
            for pk, gid, folder in conn.execute(select(Message.mailbox_pk, Message.graph_id, Message.folder_graph_id)):
                got.setdefault(users[pk], set()).add((gid, folder))
        truth = org.truth()["mailboxes"]
        equal = all(got.get(uid, set()) == {tuple(x) for x in t["messages"]} for uid, t in truth.items())
        engine.dispose()
    return {
        "status": report.status,
        "seconds": round(seconds, 2),
        "messages": report.messages_added,
        "messages_per_second": round(report.messages_added / seconds) if seconds else None,
        "equals_truth": equal,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, default=SAMPLE, help="the archive (default: the Enron sample)")
    ap.add_argument("--internal-domain", action="append", help="default: enron.com")
    ap.add_argument("--users", help="only these mailboxes (comma-separated)")
    ap.add_argument("--sync", action="store_true", help="also sync everything imported and compare with the truth")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"no archive at {args.path}", file=sys.stderr)
        return 2
    users = [u for u in (args.users or "").split(",") if u] or None
    result, out = bench_import(args.path, args.internal_domain or ["enron.com"], users)
    sync = bench_sync(result) if args.sync else None
    if args.json:
        print(json.dumps({"import": out, "sync": sync}, indent=2))
        return 0 if sync is None or sync["equals_truth"] else 1
    print(result.report.summary())
    print(
        f"\nimport: {out['seconds']} s wall, {out['cpu_seconds']} s CPU, peak RSS {out['peak_rss_mib']} MiB "
        f"({out['rss_before_mib']} MiB before); {out['files']} files -> {out['users']} users, "
        f"{out['emails']} emails, {out['items']} items"
    )
    if sync is not None:
        print(
            f"sync:   {sync['status']}, {sync['messages']} messages in {sync['seconds']} s "
            f"({sync['messages_per_second']}/s); database equals the sandbox's truth: {sync['equals_truth']}"
        )
        return 0 if sync["equals_truth"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
