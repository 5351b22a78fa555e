"""The daemon's KPI computation in a process of its own, started for the run and gone when it ends.

A run holds a tenant's year of activities (about 0.91 GiB at 2,000,000: README, Sizing). In a child process

- that memory is the system's again when the run ends (a long-lived process keeps what its heap grew to);
- a run the kernel kills for memory fails alone: the daemon keeps syncing, and the lease retries the run;
- the run's Python never holds the daemon's interpreter lock: watchdog pings and the HTTP endpoint stay on time;
- stopping the daemon stops the run at once (a run is written in one transaction: whole or not at all).

The child is spawned (not forked from a process with threads and an event loop) and gets the database URL,
the tenant's, the service's and the logging settings over multiprocessing's pipe, never on its command line.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import Engine

from relinsights.compute.report import ComputeReport
from relinsights.config import LoggingConfig, ServiceConfig, TenantConfig


class ComputeFailed(RuntimeError):
    """The computation failed in its process, or the process died (its message says which; `exitcode` is the
    dead process's, negative for the signal that ended it)."""

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def _child(out: Connection, url: str, tenant: TenantConfig, service: ServiceConfig, logging: LoggingConfig) -> None:
    from relinsights.compute.job import compute_tenant
    from relinsights.db import make_engine
    from relinsights.log import setup_logging

    setup_logging(logging.level, logging.format)
    try:
        engine = make_engine(url)
        try:
            keep = service.compute_keep_freed_below_mib
            reply: tuple[str, Any] = ("ok", compute_tenant(engine, tenant, keep_freed_below_mib=keep))
        finally:
            engine.dispose()
    except BaseException as exc:  # (sent back whole: the daemon logs it and the lease backs off)
        reply = ("error", "".join(traceback.format_exception_only(exc)).strip())
    out.send(reply)
    out.close()


def _wait(answers: Connection, process: multiprocessing.process.BaseProcess) -> Any:
    try:
        kind, value = answers.recv()
    except EOFError:  # it died without answering
        process.join()
        raise ComputeFailed(
            f"{process.name} ended without a result: its process exited with code {process.exitcode} (-9 is"
            " usually the kernel out of memory: see Sizing in the README)",
            process.exitcode,
        ) from None
    finally:
        answers.close()
    process.join()
    if kind != "ok":
        raise ComputeFailed(f"{process.name} failed: {value}")
    return value


async def run_in_child(name: str, target: Callable[..., None], *args: Any) -> Any:
    """`target(out, *args)` in a new process named `name`; what it sends on `out`, ("ok", value) or
    ("error", text), is returned or raised as ComputeFailed. Cancelling kills the process."""
    spawn = multiprocessing.get_context("spawn")
    answers, out = spawn.Pipe(duplex=False)
    process = spawn.Process(target=target, args=(out, *args), name=name)
    process.start()
    out.close()  # the child's end: when the child is gone, reading ours ends instead of waiting
    try:
        return await asyncio.to_thread(_wait, answers, process)
    except asyncio.CancelledError:
        process.kill()  # the waiting thread then sees the pipe close, and reaps it
        raise


async def compute_in_child(
    engine: Engine, tenant: TenantConfig, service: ServiceConfig, logging: LoggingConfig
) -> ComputeReport:
    """`compute_tenant(engine, tenant)` (as of now, incremental) in a new process; cancelling stops it."""
    url = engine.url.render_as_string(hide_password=False)
    report = await run_in_child(f"KPI computation of {tenant.name}", _child, url, tenant, service, logging)
    assert isinstance(report, ComputeReport)
    return report
