"""Benchmark of the KPI computation (issue #4): full and incremental runs over a synthetic tenant.

What it builds, into the product's migrated schema (fresh SQLite file and/or PostgreSQL schema), with bulk
inserts straight into the tables the sync and the CRM mirror fill:

* --mailboxes users (`u<i>@contoso.com`) and --records CRM records: a fifth accounts (`cust<j>.com`), the
  rest contacts (`p<k>@cust<j>.com`, parent account j), as the mirror stores them (Dataverse JSON);
* N activities (-n) over the 365 days before T: 95% emails, 5% meetings (some upcoming). An email is
  sent by a user to one of their contacts or the other way round, sometimes with a second contact of the
  account and/or a colleague on Cc; the colleague's mailbox holds a copy too (same internetMessageId: the
  builder deduplicates it), so there are about 1.2 message rows per email. One email in ten goes to an
  address no CRM record has. Meetings have an organizer, a contact and sometimes a colleague.
* ids as long as Exchange Online's (item, conversation, internetMessageId, iCalUId: they are most of a
  message's bytes); `--short-ids` gives the short made-up ids of the rounds before 2026-11-27 15:30 UTC.

Each load is followed by what a database in service has had done since its rows came (`settle`): on
PostgreSQL VACUUM ANALYZE, as autovacuum does, and a CHECKPOINT; then the system's sync, on both.

What it times (each run in its own fresh process, one after the other, its database's files read into the
operating system's cache first: `warm`; each --runs times, default 3, the database put back between them,
`forget`: the median run is reported, with every run's time and the highest peak):

* full: `compute_tenant(full=True)` as of T (load, build, match, KPIs, snapshots written);
* incremental: one simulated day later (N/365 more activities dated in (T, T + 1 day]) `compute_tenant`
  as of T + 1 day, reusing the unchanged records' snapshots;
* floor: a plain SQL GROUP BY over the same activities (participant rows joined to their messages in the
  window, counted per address and role): what the database alone does per activity here.

seconds is wall time of the measured call, cpu s the worker's own CPU time (the database server's, for
PostgreSQL, not included); act/s is activities in the window per wall second, act/cpu s per CPU second
(steadier when the machine is shared); peak MiB is the
worker process's peak RSS (VmHWM: imports and the engine included), "with readers" the peak of its RSS plus
that of the processes that read its mail and calendars (sampled every 100 ms), on which the memory target
is judged: under 1 GB read as 10^9 bytes (953.7 MiB), the stricter reading (1 GiB until 2026-12-07). load is
the 1-minute load average
before each run (2 cores: anything above ~0.5 means someone else was busy and the numbers are noisy), and
stolen (after each run's times) the CPU seconds the hypervisor gave other machines while this one's threads
waited, over each run: some of this machine's slow stretches, not all.

    .venv/bin/python scripts/bench_compute.py                    # 2,000,000 activities, SQLite
    .venv/bin/python scripts/bench_compute.py -n 200000 --db both
    .venv/bin/python scripts/bench_compute.py -n 200000 --profile  # pyinstrument of the full run, if installed
    .venv/bin/python scripts/bench_compute.py --keep-freed-below-mib 0  # freed memory returned at once

The runs keep the memory they free while under service.compute_keep_freed_below_mib (compute/freed_memory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, insert, make_url, text
from sqlalchemy.exc import DBAPIError

from relinsights.config import ServiceConfig, TenantConfig, parse_config
from relinsights.db import make_engine, migrate
from relinsights.db.models import (
    CrmRecord,
    Event,
    EventAttendee,
    KpiRun,
    KpiSnapshot,
    Mailbox,
    Message,
    MessageParticipant,
    SimilarWonSnapshot,
    Tenant,
    table_of,
)

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CHUNK = 20_000
# Ids as long as Exchange Online's (a Graph item id 152 characters, a conversation id about 80, an
# internetMessageId about 80, an iCalUId 112): polars keeps a string of up to 12 bytes inside its 16-byte
# view and longer ones out of line, so short ids would understate a real tenant's memory.
GRAPH_ID, CONVERSATION_ID = 152, 80
MEMORY_TARGET_MIB = 10**9 / 2**20  # the "peak memory under 1 GB", read as 10^9 bytes
ICAL_PREFIX = "040000008200E00074C5B7101A82E008"
TENANT = "bench"


def tenant_config() -> TenantConfig:
    return parse_config(
        {
            "tenant": [
                {
                    "name": TENANT,
                    "tenant_id": "11111111-2222-3333-4444-555555555555",
                    "client_id": "66666666-7777-8888-9999-000000000000",
                    "credential": {"secret_env": "RELINSIGHTS_BENCH_SECRET"},
                    "internal_domains": ["contoso.com"],
                }
            ]
        }
    ).tenants[0]


def guid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{kind}:{n}"))


# ---------------------------------------------------------------- building the database


class Builder:
    """Generates rows deterministically and bulk-inserts them in chunks."""

    def __init__(self, engine: Engine, mailboxes: int, records: int, seed: int, short_ids: bool = False) -> None:
        self.engine, self.rng, self.short_ids = engine, random.Random(seed), short_ids
        self.users = [f"u{i}@contoso.com" for i in range(mailboxes)]
        self.accounts = max(1, records // 5)
        self.contacts = [f"p{k}@cust{k % self.accounts}.com" for k in range(records - self.accounts)]
        # Each user looks after the contacts k with k % users == i.
        self.book = [self.contacts[i :: len(self.users)] or self.contacts for i in range(len(self.users))]
        self.next_msg = self.next_part = self.next_event = self.next_att = 1
        self.activity = 0

    def base(self) -> int:
        with self.engine.begin() as conn:
            tpk = conn.execute(
                insert(table_of(Tenant)).values(name=TENANT, directory_id="bench", created_at=T).returning(text("id"))
            ).scalar_one()
            conn.execute(
                insert(table_of(Mailbox)),
                [
                    {"id": i + 1, "tenant_pk": tpk, "user_id": guid("user", i), "address": a, "status": "ok"}
                    for i, a in enumerate(self.users)
                ],
            )
            rows: list[dict[str, Any]] = []
            for j in range(self.accounts):
                data = {"accountid": guid("account", j), "name": f"Customer {j}", "websiteurl": f"https://cust{j}.com"}
                rows.append(self._crm(tpk, "accounts", data["accountid"], data))
            for k, addr in enumerate(self.contacts):
                data = {
                    "contactid": guid("contact", k),
                    "fullname": f"Person {k}",
                    "emailaddress1": addr,
                    "_parentcustomerid_value": guid("account", k % self.accounts),
                }
                rows.append(self._crm(tpk, "contacts", data["contactid"], data))
            for i in range(0, len(rows), CHUNK):
                conn.execute(insert(table_of(CrmRecord)), rows[i : i + CHUNK])
        return int(tpk)

    @staticmethod
    def _crm(tpk: int, entity_set: str, rid: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"tenant_pk": tpk, "entity_set": entity_set, "record_id": rid, "data": json.dumps(data), "synced_at": T}

    def add(self, n: int, start: datetime, end: datetime) -> None:
        """n activities dated uniformly in [start, end) (a few meetings later: upcoming)."""
        span = (end - start).total_seconds()
        msgs: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        atts: list[dict[str, Any]] = []
        for _ in range(n):
            when = start + timedelta(seconds=self.rng.random() * span)
            if self.rng.random() < 0.05:
                self._meeting(when, events, atts)
            else:
                self._email(when, msgs, parts)
            if len(msgs) >= CHUNK:
                self._flush(msgs, parts, events, atts)
        self._flush(msgs, parts, events, atts)

    def _email(self, when: datetime, msgs: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
        r = self.rng
        self.activity += 1
        ui = r.randrange(len(self.users))
        user = self.users[ui]
        contact = r.choice(self.book[ui]) if r.random() < 0.9 else f"x{r.randrange(50_000)}@other{r.randrange(500)}.com"
        to, cc = ([contact], []) if r.random() < 0.5 else ([user], [])
        sender = user if to == [contact] else contact
        if r.random() < 0.3:
            cc.append(r.choice(self.book[ui]))
        colleague = None
        if r.random() < 0.2:
            colleague = r.randrange(len(self.users))
            cc.append(self.users[colleague])
        week = int(when.timestamp()) // (7 * 86400)
        if self.short_ids:
            imid, conv = f"<m{self.activity}@bench.invalid>", f"conv-{ui}-{contact}-{week}"
        else:
            imid = f"<{self.activity:0>40}@BENCH01MB0001.namprd11.prod.outlook.com>"
            conv = f"AAQkAG{ui:06d}-{week}-{contact}".ljust(CONVERSATION_ID, "A")
        for box in {ui, colleague} - {None}:
            assert box is not None
            mid = self.next_msg
            self.next_msg += 1
            msgs.append(
                {
                    "id": mid,
                    "mailbox_pk": box + 1,
                    "graph_id": self._graph_id("g", box, mid),
                    "internet_message_id": imid,
                    "conversation_id": conv,
                    "from_address": sender,
                    "sender_address": sender,
                    "sent_at": when,
                    "received_at": when,
                    "is_draft": False,
                }
            )
            for role, addrs in (("to", to), ("cc", cc)):  # from and sender are message columns
                for a in addrs:
                    parts.append({"id": self.next_part, "message_id": mid, "role": role, "address": a})
                    self.next_part += 1

    def _meeting(self, when: datetime, events: list[dict[str, Any]], atts: list[dict[str, Any]]) -> None:
        r = self.rng
        self.activity += 1
        ui = r.randrange(len(self.users))
        if r.random() < 0.1:
            when = when + timedelta(days=r.randrange(1, 30))  # upcoming: next interaction
        eid = self.next_event
        self.next_event += 1
        events.append(
            {
                "id": eid,
                "mailbox_pk": ui + 1,
                "graph_id": self._graph_id("e", ui, eid),
                "ical_uid": f"uid{self.activity}" if self.short_ids else f"{ICAL_PREFIX}{self.activity:0>80}",
                "event_type": "singleInstance",
                "start": when,
                "end": when + timedelta(minutes=r.choice((30, 60))),
                "organizer_address": self.users[ui],
            }
        )
        people = [(self.users[ui], "organizer"), (r.choice(self.book[ui]), "required")]
        if r.random() < 0.3:
            people.append((self.users[r.randrange(len(self.users))], "optional"))
        for a, role in people:
            atts.append({"id": self.next_att, "event_id": eid, "role": role, "address": a, "response": "accepted"})
            self.next_att += 1

    def _graph_id(self, short: str, box: int, n: int) -> str:
        return f"{short}{n}" if self.short_ids else f"AAMkAG{box:06d}{n:0>{GRAPH_ID - 12}}"

    def _flush(self, *batches: list[dict[str, Any]]) -> None:
        tables = [table_of(Message), table_of(MessageParticipant), table_of(Event), table_of(EventAttendee)]
        with self.engine.begin() as conn:
            for table, rows in zip(tables, batches, strict=True):
                if rows:
                    conn.execute(insert(table), rows)
                    rows.clear()


def fresh_engine(db: str, work: Path, pg_url: str) -> Engine:
    if db == "sqlite":
        return make_engine(f"sqlite:///{work / 'bench.db'}")
    with autocommit(pg_url) as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    return make_engine(pg_url)


@contextmanager
def autocommit(url: str) -> Iterator[Connection]:
    """A connection of its own outside any transaction (what DROP SCHEMA, VACUUM and CREATE EXTENSION need)."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def settle(db: str, url: str) -> None:
    """What a database in service has had done to freshly loaded rows before a run: on PostgreSQL, autovacuum's
    VACUUM ANALYZE (statistics for the planner; visibility and hint bits, which the first read of a bulk load
    would otherwise write back to every page: a 2,000,000-activity run took 95 s instead of 55); then, on both,
    its writes on disk, as hours after a load (PostgreSQL's CHECKPOINT, then the system's sync). The VACUUM of
    a fresh load leaves 1.4 GB of dirty pages, which the kernel wrote out in the middle of the full run
    (2026-12-07: 1.36 GB 21 s in; that run 25.24 s, the night's other full runs 19.9-23.4 s)."""
    if db == "postgres":
        with autocommit(url) as conn:
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text("CHECKPOINT"))
    os.sync()


def db_url(db: str, work: Path, pg_url: str) -> str:
    return f"sqlite:///{work / 'bench.db'}" if db == "sqlite" else pg_url


# ---------------------------------------------------------------- measuring (in a child process)


def status_mib() -> dict[str, float]:
    """This process's resident memory (VmRSS) and its peak (VmHWM), MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def stolen_seconds() -> float:
    """CPU time the hypervisor gave other guests while this machine's runnable threads waited (`steal` in
    /proc/stat, all cores, since boot; 0 where the kernel does not count it): some of this machine's slow
    stretches (docs/benchmark-history.md, round 31)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class TreePeak:
    """The peak of this process's resident memory plus its children's (the reader processes of
    compute/bulk_read.py, all at once), sampled every 100 ms by a thread of its own. A sample lists the children
    from each of this process's threads (`/proc/<pid>/task/<tid>/children`: about 0.03 ms), not by reading every
    process's parent (2 ms a sample with 86 processes: 2% of a core and the interpreter lock, taken from the run
    it measures), which stays the way where the kernel lists no children (built without CONFIG_PROC_CHILDREN)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._listed = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _resident(self, pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * self._page
        except (FileNotFoundError, ProcessLookupError):
            return 0  # it ended

    def _children(self, me: int) -> Iterator[str]:
        if self._listed:
            for tid in os.listdir(f"/proc/{me}/task"):
                try:
                    with open(f"/proc/{me}/task/{tid}/children") as f:
                        yield from f.read().split()
                except (FileNotFoundError, ProcessLookupError):
                    continue  # (the thread ended)
            return
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if int(f.read().rpartition(")")[2].split()[1]) == me:  # (the name may hold spaces)
                            yield pid
                except (FileNotFoundError, ProcessLookupError):
                    continue

    @staticmethod
    def _command(pid: int | str) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read()
        except (FileNotFoundError, ProcessLookupError):
            return b""

    def _run(self) -> None:
        me = os.getpid()
        mine = self._command(me)
        while not self._stop.wait(0.1):
            # A child not yet running its own program (between fork and exec: its command line is still this
            # process's) shares this process's pages: counted, it doubled this process's memory in a sample.
            children = [self._resident(c) for c in self._children(me) if self._command(c) != mine]
            if children:
                self.peak = max(self.peak, self._resident(me) + sum(children))

    def stop(self) -> float:
        """The peak so far while a child ran (0 if none did), MiB; sampling ends."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def worker(args: argparse.Namespace) -> None:
    engine = make_engine(args.url)
    as_of = datetime.fromisoformat(args.as_of)
    tree = TreePeak()
    started, cpu, steal = time.perf_counter(), time.process_time(), stolen_seconds()
    out: dict[str, Any] = {}
    if args.worker == "floor":
        since = as_of - timedelta(days=365)
        query = text(
            "SELECT p.address, p.role, count(*) FROM message_participant p JOIN message m ON m.id = p.message_id"
            " JOIN mailbox b ON b.id = m.mailbox_pk WHERE b.tenant_pk = 1 AND m.sent_at >= :since"
            " AND m.is_draft = :f GROUP BY p.address, p.role"
        )
        with engine.connect() as conn:
            out["groups"] = len(conn.execute(query, {"since": since, "f": False}).all())
    else:
        from relinsights.compute import compute_tenant

        run = lambda: compute_tenant(  # noqa: E731
            engine, tenant_config(), as_of=as_of, full=args.worker == "full", keep_freed_below_mib=args.keep_freed
        )
        if args.profile:
            from pyinstrument import Profiler

            with Profiler() as prof:
                report = run()
            Path(args.profile).write_text(prof.output_text(unicode=False, color=False, show_all=False))
        else:
            report = run()
        keys = ("activities", "records", "computed", "reused", "recomputed", "source_rows")
        out = {k: report.to_json()[k] for k in keys}
    out["seconds"] = time.perf_counter() - started
    out["cpu"] = time.process_time() - cpu
    out["steal"] = stolen_seconds() - steal
    out["peak_mib"] = status_mib()["VmHWM"]
    out["tree_mib"] = max(tree.stop(), out["peak_mib"])
    print(json.dumps(out))


def warm(url: str) -> None:
    """The database's files read into the operating system's cache before a timed run. This machine pages out
    file pages no one has touched for a minute (its kernel's DAMON reclaim), so the full run, right after a
    build of minutes, read much of its database from disk (SQLite, 2026-12-07: a full run from an evicted file
    34.10 s, warmed 24.59 s) while the GROUP BY floor and the incremental run after it found it cached. SQLite: the
    file (and its WAL) read through; PostgreSQL: every table and index of the schema read by pg_prewarm, a
    contrib extension (skipped, with a note, where it cannot be created)."""
    started, parsed = time.perf_counter(), make_url(url)
    if parsed.get_backend_name() == "sqlite":
        size, chunk = 0, bytearray(16 << 20)
        for path in (Path(parsed.database or ""), Path(f"{parsed.database}-wal")):
            if path.is_file():
                with path.open("rb", buffering=0) as f:
                    while n := f.readinto(chunk):
                        size += n
        print(f"  warmed {size / 2**30:.2f} GiB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return
    try:
        with autocommit(url) as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
            size = conn.execute(
                text(
                    "SELECT COALESCE(sum(pg_prewarm(c.oid::regclass, 'read')), 0) * current_setting('block_size')::int"
                    " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')"
                )
            ).scalar_one()
        print(f"  warmed {size / 2**30:.2f} GiB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    except DBAPIError as e:
        print(f"  not warmed (pg_prewarm: {str(e.orig).strip()})", file=sys.stderr)


def measure(kind: str, url: str, as_of: datetime, keep_freed: int, profile: str | None = None) -> dict[str, Any]:
    warm(url)
    load = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", kind, "--url", url, "--as-of", as_of.isoformat()]
    cmd += ["--keep-freed-below-mib", str(keep_freed)]
    if profile:
        cmd += ["--profile-out", profile]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def measured(
    db: str, kind: str, url: str, as_of: datetime, args: argparse.Namespace, profile: str | None = None
) -> dict[str, Any]:
    """`kind` measured `args.runs` times, each from the same stored state (`forget`, then `settle`, between
    them; `profile`: of the first): the run of the median time, with every run's time (`runs`) and the highest
    peak of them. This machine's speed swings by a fifth within minutes (2026-12-07: the same full run took
    20.92 s, and 24.42 s a minute later), which one run reports as it falls."""
    results: list[dict[str, Any]] = []
    for i in range(args.runs):
        if i and kind != "floor":  # (the floor stores nothing; the full run's snapshots stay for the incremental)
            forget(url, as_of)
            settle(db, url)
        results.append(measure(kind, url, as_of, args.keep_freed, None if i else profile))
    median = dict(sorted(results, key=lambda m: m["seconds"])[len(results) // 2])
    median["runs"] = [m["seconds"] for m in results]
    median["steals"] = [m["steal"] for m in results]
    median["peak_mib"] = max(m["peak_mib"] for m in results)
    median["tree_mib"] = max(m["tree_mib"] for m in results)
    return median


def forget(url: str, as_of: datetime) -> None:
    """What the runs as of `as_of` stored, deleted (snapshots, similar won deals, run rows), so that a run
    again finds the database as the first did: a run replaces its as-of's snapshots (a delete the first did
    not have), and works out the similar won deals only a week after the last time."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for model in (KpiSnapshot, SimilarWonSnapshot, KpiRun):
            t = table_of(model)
            conn.execute(t.delete().where(t.c.as_of == as_of))
    engine.dispose()


# ---------------------------------------------------------------- one database


def build_tenant(engine: Engine, args: argparse.Namespace) -> Builder:
    """The synthetic tenant (-n activities over the year before T) in a migrated, empty database."""
    migrate(engine)
    b = Builder(engine, args.mailboxes, args.records, args.seed, short_ids=args.short_ids)
    b.base()
    b.add(args.activities, T - timedelta(days=365) + timedelta(seconds=1), T)
    engine.dispose()
    return b


def bench(db: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    engine = fresh_engine(db, work, args.pg_url)
    url = db_url(db, work, args.pg_url)
    started = time.perf_counter()
    b = build_tenant(engine, args)
    built = time.perf_counter() - started
    settle(db, url)
    print(f"[{db}] built {args.activities:,} activities in {built:.1f} s", file=sys.stderr)
    full = measured(db, "full", url, T, args, str(work / f"profile-{db}.txt") if args.profile else None)
    floor = measured(db, "floor", url, T, args)
    engine = make_engine(url)
    b.engine = engine
    b.add(max(1, args.activities // 365), T + timedelta(seconds=1), T + DAY)
    engine.dispose()
    settle(db, url)
    incr = measured(db, "incremental", url, T + DAY, args)
    if args.profile:
        print((work / f"profile-{db}.txt").read_text(), file=sys.stderr)
    return {"db": db, "built_s": built, "full": full, "incremental": incr, "floor": floor}


def rows(results: list[dict[str, Any]], n: int) -> Iterator[str]:
    yield (
        f"{'db':8} {'run':12} {'seconds':>8} {'cpu s':>7} {'act/s':>10} {'act/cpu s':>10} {'peak MiB':>9}"
        f" {'with readers':>12} {'load':>5}  details"
    )
    for r in results:
        full, incr, floor = r["full"], r["incremental"], r["floor"]
        for name, m in (("full", full), ("incremental", incr), ("GROUP BY", floor)):
            acts = incr["activities"] if name == "incremental" else full["activities"]
            rate, cpu_rate = acts / m["seconds"], acts / max(m["cpu"], 1e-9)
            extra = (
                f"{m['activities']:,} activities, {m['records']:,} records, computed {m['computed']:,}"
                f" ({', '.join(f'{why} {n:,}' for why, n in m['recomputed'].items())}), reused {m['reused']:,}"
                if "records" in m
                else f"{m['groups']:,} groups"
            )
            extra += f"; runs {', '.join(f'{s:.2f}' for s in m['runs'])} s" if len(m["runs"]) > 1 else ""
            extra += f"; stolen {', '.join(f'{s:.2f}' for s in m['steals'])} s"
            yield (
                f"{r['db']:8} {name:12} {m['seconds']:8.2f} {m['cpu']:7.2f} {rate:10,.0f} {cpu_rate:10,.0f}"
                f" {m['peak_mib']:9.0f} {m['tree_mib']:12.0f} {m['load']:5.2f}  {extra}"
            )
        full_rate = full["activities"] / full["seconds"]
        speedup, cpu_speedup = full["seconds"] / incr["seconds"], full["cpu"] / max(incr["cpu"], 1e-9)
        floor_rate = full["activities"] / floor["seconds"]
        peak = max(full["tree_mib"], incr["tree_mib"])
        yield (
            f"{r['db']:8} full {full_rate:,.0f} act/s (target 100,000: {'PASS' if full_rate >= 100_000 else 'FAIL'}),"
            f" {full_rate / floor_rate:.3f} of the GROUP BY floor ({floor_rate:,.0f} act/s);"
            f" incremental {speedup:.1f}x faster by wall time, {cpu_speedup:.1f}x by CPU"
            f" (target 10x: {'PASS' if min(speedup, cpu_speedup) >= 10 else 'FAIL'});"
            f" peak {peak:.0f} MiB (target < 1 GB, {MEMORY_TARGET_MIB:.0f} MiB: {'PASS' if peak < MEMORY_TARGET_MIB else 'FAIL'})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--activities", type=int, default=2_000_000)
    p.add_argument("--mailboxes", type=int, default=1_000)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("RELINSIGHTS_BENCH_PG") or os.environ.get("RELINSIGHTS_TEST_PG"),
        help="PostgreSQL database to use (its public schema is dropped!); default $RELINSIGHTS_BENCH_PG",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--short-ids",
        action="store_true",
        help="short made-up ids (the earlier rounds') instead of ids as long as Exchange's",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="times each run is measured; the median one is reported (default 3)",
    )
    p.add_argument("--profile", action="store_true", help="pyinstrument the (first) full run and print its profile")
    p.add_argument(
        "--keep-freed-below-mib",
        dest="keep_freed",
        type=int,
        default=ServiceConfig().compute_keep_freed_below_mib,
        help="service.compute_keep_freed_below_mib of the runs (0: freed memory returned at once)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--as-of", help=argparse.SUPPRESS)
    p.add_argument("--profile-out", dest="profile_out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.profile = args.profile_out
        worker(args)
        return
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in dbs and not args.pg_url:
        p.error("--db postgres needs --pg-url or $RELINSIGHTS_BENCH_PG")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-compute-") as tmp:
        for db in dbs:
            results.append(bench(db, args, Path(tmp)))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"bench_compute: {args.activities:,} activities, {args.mailboxes:,} mailboxes, {args.records:,} CRM records;"
        f" {os.cpu_count()} cores"
    )
    for line in rows(results, args.activities):
        print(line)


if __name__ == "__main__":
    main()
