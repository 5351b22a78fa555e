"""`relinsights run`: the long-running service.

Lifecycle: load config, migrate, (SQLite) take the single-daemon lock, schedule one tick per tenant and
job with APScheduler 3 (in-memory store: every replica runs the same timers; each tick claims its units
from the lease table), tell systemd READY, ping its watchdog from the event loop, reload the config on
SIGHUP, and on SIGTERM/SIGINT stop taking work, let running work commit its current page, and exit 0.
The KPI computation runs in a process of its own (compute/child.py), stopped with the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from relinsights.compute.child import ComputeFailed, compute_in_child
from relinsights.compute.schedule import compute_due
from relinsights.config import Config, ConfigError, TenantConfig, load_config
from relinsights.crm.client import DataverseError
from relinsights.crm.mirror import mirror_tenant
from relinsights.crm.writeback import writeback_due, writeback_tenant
from relinsights.db import make_engine, migrate
from relinsights.db.tenants import ensure_tenant
from relinsights.graph.sync import sync_tenant
from relinsights.observability import Metrics, http_app
from relinsights.retention import prune
from relinsights.scheduling.leases import Leases

log = structlog.get_logger(__name__)
STOP_GRACE_S = 25.0  # systemd's TimeoutStopSec is 30 s
COMPUTE_CHECK_MINUTES = 10
COMPUTE_LEASE = timedelta(hours=2)


class DaemonError(Exception):
    pass


def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram (READY=1, STATUS=..., WATCHDOG=1); a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never block the event loop on a notify socket nobody reads (the watchdog pings come from it).
        sock.setblocking(False)
        try:
            sock.connect(addr)
            sock.send(message.encode())
        except OSError as exc:
            log.debug("daemon.sd_notify_failed", error=str(exc))
            return False
    return True


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2_000_000 if usec and usec.isdigit() else None


def single_daemon_lock(cfg: Config) -> IO[str] | None:
    """On SQLite only one daemon may run: hold an exclusive lock next to the database file."""
    url = make_url(cfg.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database + ".daemon.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise DaemonError(
            f"another relinsights daemon ({holder}) already uses {url.database}; SQLite allows one daemon. "
            "Stop it, or move to PostgreSQL (database.url) to run several replicas."
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    return fh


@dataclass
class Daemon:
    config_path: Path | None
    cfg: Config = field(init=False)
    engine: Engine = field(init=False)
    leases: Leases = field(init=False)
    stopping: asyncio.Event = field(init=False)
    running: set[asyncio.Task[Any]] = field(default_factory=set)
    _side_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _computing: set[str] = field(default_factory=set)  # tenants whose computation this daemon is running
    # One computation at a time: each holds a tenant's year of activities (README, Sizing).
    _compute_slot: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    ticks: int = 0
    last_beat: float = field(default_factory=time.monotonic)
    _lock: IO[str] | None = None

    def __post_init__(self) -> None:
        self.cfg = load_config(self.config_path)
        self._lock = single_daemon_lock(self.cfg)
        self.engine = make_engine(self.cfg.database_url, self.cfg.database.pool_size)
        migrate(self.engine)
        self.leases = Leases(self.engine)
        self.metrics = Metrics(self.engine)

    # ---- jobs -----------------------------------------------------------------------------------

    def _schedule(self, scheduler: AsyncIOScheduler) -> None:
        for job in scheduler.get_jobs():
            job.remove()
        # Disabled tenants keep their timer: each tick reads the admin's enable/disable from the database,
        # so `relinsights tenants enable` takes effect at the next tick without a reload.
        for tenant in self.cfg.tenants:
            interval = tenant.sync.interval_minutes
            # (job, tick, period in minutes, jitter s, first run after s): jitter spreads tenants and replicas
            # so they do not all hit Graph at once; compute is a cheap check (one query) when nothing is due.
            jobs: list[tuple[str, Callable[[TenantConfig], Awaitable[None]], float, int, tuple[float, float]]] = [
                ("sync", self._sync_tick, interval, int(min(60, interval * 10)), (0, 5)),
                ("crm", self._crm_tick, 15, 60, (0, 10)),
                ("compute", self._compute_tick, COMPUTE_CHECK_MINUTES, 60, (30, 60)),
                # Write-back follows each computation; this timer retries one that failed or was partial.
                ("writeback", self._writeback_tick, 15, 60, (60, 120)),
                ("retention", self._retention_tick, 24 * 60, 600, (60, 600)),
            ]
            for name, tick, minutes, jitter, first in jobs:
                scheduler.add_job(
                    tick,
                    IntervalTrigger(minutes=minutes, jitter=jitter),
                    args=[tenant],
                    id=f"{name}:{tenant.name}",
                    name=f"{name} {tenant.name}",
                    next_run_time=datetime.now(UTC) + timedelta(seconds=random.uniform(*first)),
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=int(min(minutes, 60) * 60),
                )

    async def _leased(self, job: str, tenant: TenantConfig, ttl: timedelta, work: Callable[[], Awaitable[Any]]) -> None:
        """Run `work` if this daemon claims the tenant's unit for `job`; failures back off through the lease."""
        unit = f"{job}:{tenant.name}"
        if self.stopping.is_set() or not await asyncio.to_thread(self.leases.claim, unit, ttl):
            return
        started = time.monotonic()
        try:
            await work()
            await asyncio.to_thread(self.leases.release, unit)
        except Exception as exc:  # retried with backoff through the lease, reported in the log and metrics
            self.metrics.job_failures.labels(job, tenant.name).inc()
            log.exception(f"daemon.{job}_failed", tenant=tenant.name)
            await asyncio.to_thread(self.leases.release, unit, repr(exc))
        finally:
            self.metrics.job_seconds.labels(job, tenant.name).observe(time.monotonic() - started)

    async def _crm_tick(self, tenant: TenantConfig) -> None:
        if tenant.dataverse_url:
            await self._leased("crm", tenant, timedelta(hours=1), lambda: mirror_tenant(self.engine, tenant))
            self._spawn_compute(tenant)  # the first computation starts as soon as its data is there

    def _spawn_compute(self, tenant: TenantConfig) -> None:
        """Check (and maybe run) the computation in a task of its own: a sync tick never waits for it."""
        task = asyncio.get_running_loop().create_task(self._compute_tick(tenant))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _compute_due(self, tenant: TenantConfig) -> bool:
        return compute_due(self.engine, tenant, ensure_tenant(self.engine, tenant), datetime.now(UTC))

    async def _compute_tick(self, tenant: TenantConfig) -> None:
        """The daily KPI computation (incremental), once per day and tenant across every replica."""
        # Leases stop other replicas; this stops the timer, the sync and the CRM ticks of this one racing.
        if self.stopping.is_set() or tenant.name in self._computing:
            return
        self._computing.add(tenant.name)
        try:
            if not await asyncio.to_thread(self._compute_due, tenant):
                return

            async def work() -> None:
                # Checked again under the lease: another replica may have computed since the check above.
                if await asyncio.to_thread(self._compute_due, tenant):
                    try:
                        report = await compute_in_child(self.engine, tenant, self.cfg.service, self.cfg.logging)
                    except ComputeFailed as exc:
                        # Stopped with the daemon (systemd's SIGTERM reaches both, in either order): no failure.
                        if self.stopping.is_set() or exc.exitcode == -signal.SIGTERM:
                            log.info("daemon.compute_stopped", tenant=tenant.name)
                            return
                        raise
                    log.info("daemon.compute", tenant=tenant.name, records=report.records, computed=report.computed)

            async with self._compute_slot:  # (a tenant waiting here has not claimed its lease yet)
                await self._leased("compute", tenant, COMPUTE_LEASE, work)
        finally:
            self._computing.discard(tenant.name)
        await self._writeback_tick(tenant)

    def _writeback_due(self, tenant: TenantConfig) -> bool:
        return writeback_due(self.engine, tenant, ensure_tenant(self.engine, tenant).id or 0)

    async def _writeback_tick(self, tenant: TenantConfig) -> None:
        """Write the latest KPIs to Dataverse when they are newer than the last write-back (or it failed)."""
        if self.stopping.is_set() or not await asyncio.to_thread(self._writeback_due, tenant):
            return

        async def work() -> None:
            if not await asyncio.to_thread(self._writeback_due, tenant):
                return  # another replica wrote them meanwhile
            sd_notify(f"STATUS=writing KPIs of {tenant.name} to Dataverse")
            report = await writeback_tenant(self.engine, tenant)
            self.metrics.requests.labels("dataverse", tenant.name).inc(report.requests)
            self.metrics.throttled.labels("dataverse", tenant.name).inc(report.throttled)
            for table, rows in report.written.items():
                self.metrics.rows_written.labels(tenant.name, table).inc(rows)
            # writeback_tenant logs its summary; a failed run backs off through the lease, the timer retries it.
            if report.status == "failed":
                raise DataverseError(report.error or "write-back failed")

        await self._leased("writeback", tenant, timedelta(hours=1), work)

    async def _retention_tick(self, tenant: TenantConfig) -> None:
        async def work() -> None:
            pruned = await asyncio.to_thread(prune, self.engine, tenant, datetime.now(UTC))
            log.info(
                "daemon.retention",
                tenant=tenant.name,
                messages=pruned.messages,
                events=pruned.events,
                snapshots=pruned.snapshots,
            )

        await self._leased("retention", tenant, timedelta(hours=1), work)

    async def _sync_tick(self, tenant: TenantConfig) -> None:
        if self.stopping.is_set():
            return
        task = asyncio.current_task()
        if task:
            self.running.add(task)
        started = time.monotonic()
        sd_notify(f"STATUS=syncing {tenant.name}")
        try:
            report = await sync_tenant(
                self.engine,
                tenant,
                should_stop=self.stopping.is_set,
                leases=self.leases,
                lease_ttl=timedelta(seconds=tenant.sync.lease_seconds),
            )
            self.ticks += 1
            if report.status == "ok":
                self._spawn_compute(tenant)  # right after the first full sync, when that was it
            self.metrics.requests.labels("graph", tenant.name).inc(report.requests)
            self.metrics.throttled.labels("graph", tenant.name).inc(report.throttled)
            self.metrics.job_seconds.labels("sync", tenant.name).observe(time.monotonic() - started)
            log.info(
                "daemon.sync_tick",
                tenant=tenant.name,
                status=report.status,
                mailboxes=len(report.mailboxes),
                added=report.messages_added,
                seconds=round(time.monotonic() - started, 2),
            )
        except Exception:  # a job that fails is logged and retried at its next tick, never a crash
            self.metrics.job_failures.labels("sync", tenant.name).inc()
            log.exception("daemon.sync_tick_failed", tenant=tenant.name)
        finally:
            if task:
                self.running.discard(task)
            sd_notify(f"STATUS=idle; {self.ticks} sync ticks done")

    # ---- lifecycle ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            self.last_beat = time.monotonic()
            await asyncio.sleep(1)

    async def _start_http(self) -> uvicorn.Server | None:
        """/healthz and /metrics on service.http_listen (loopback by default); off when empty."""
        listen = self.cfg.service.http_listen
        if not listen:
            return None
        host, port = listen.rsplit(":", 1)
        app = http_app(self.engine, self.metrics, lambda: self.last_beat, max_silence=30)
        server = uvicorn.Server(
            uvicorn.Config(
                app, host=host.strip("[]"), port=int(port), log_level="warning", access_log=False, lifespan="off"
            )
        )

        async def serve() -> None:
            with contextlib.suppress(SystemExit):  # uvicorn exits the process when it cannot bind
                await server.serve()

        task = asyncio.create_task(serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if task.done():
            log.error("daemon.http_failed", listen=listen, fix='choose a free port in service.http_listen, or ""')
            return None
        log.info("daemon.http", listen=listen)
        return server

    def reload(self, scheduler: AsyncIOScheduler) -> None:
        try:
            cfg = load_config(self.config_path)
        except ConfigError as exc:
            log.error("daemon.reload_refused", problems=exc.problems, action="keeping the running configuration")
            return
        if cfg.database_url != self.cfg.database_url:
            log.error("daemon.reload_refused", problem="database.url changed; restart the service to change it")
            return
        self.cfg = cfg
        self._schedule(scheduler)
        log.info("daemon.reloaded", tenants=[t.name for t in cfg.tenants])
        sd_notify("STATUS=configuration reloaded")

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload, scheduler)
        self._schedule(scheduler)
        scheduler.start()
        # The SDK and SQLAlchemy leave ~100k long-lived objects; without freezing them every full GC sweep
        # (about one per delta page) walks them all again.
        gc.freeze()
        http = await self._start_http()
        beat = asyncio.create_task(self._heartbeat())
        log.info("daemon.started", owner=self.leases.owner, tenants=[t.name for t in self.cfg.tenants])
        sd_notify("READY=1")
        sd_notify("STATUS=started")
        dog = watchdog_interval()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=dog or 3600)
            if dog:
                sd_notify("WATCHDOG=1")  # from the event loop: a blocked loop stops the pings
        sd_notify("STOPPING=1")
        log.info("daemon.stopping", running=len(self.running))
        scheduler.shutdown(wait=False)
        beat.cancel()
        if http is not None:
            http.should_exit = True
        if self.running:
            # Running ticks see `stopping` between pages, commit the page in hand, and return.
            _done, pending = await asyncio.wait(list(self.running), timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
        self.engine.dispose()
        log.info("daemon.stopped")
        return 0


def run_daemon(config_path: Path | None) -> int:
    daemon = Daemon(config_path)
    return asyncio.run(daemon.main())
