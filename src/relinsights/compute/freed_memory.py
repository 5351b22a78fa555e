"""A KPI run keeps the memory it frees for its next columns, as long as its resident size stays under a limit.

The run's process returns freed memory at once by default (`_RJEM_MALLOC_CONF` in `relinsights/__init__.py`),
which keeps its peak at what it holds, but the kernel then hands the same memory over again page by page:
at 2,000,000 activities, 5 million page faults, a third of the run's CPU (docs/benchmark-history.md, round 20).
Keeping it instead, everywhere, made runs 15-24% faster and their peak 14-21% higher.

So it is kept under a limit: while the process's resident size is below `limit_mib`, polars' allocator keeps
what it frees (and reuses it); once above, it returns it at once again, as by default, until the resident size
is back under the limit less a margin. A sampler thread reads the resident size every 2 ms. The steps whose
own data stay well under the limit run faster; the run's peak is still its largest step's data (or the limit,
if higher, give or take what a few milliseconds allocate).

Where polars' allocator cannot be reached (`jemalloc.polars_jemalloc`), this does nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import TracebackType

import structlog

from relinsights.compute.jemalloc import Jemalloc, polars_jemalloc

log = structlog.get_logger(__name__)

SAMPLE_SECONDS = 0.002
MARGIN_MIB = 32  # kept again once this far under the limit: not switched back and forth at every sample
KEEP, RETURN = -1, 0  # jemalloc's dirty_decay_ms: kept until purged; returned at once

_lock = threading.Lock()
_limits: list[int] = []  # of the holds in force in this process (the lowest applies)
_sampler: _Sampler | None = None


class _Sampler(threading.Thread):
    def __init__(self, jemalloc: Jemalloc) -> None:
        super().__init__(name="freed-memory", daemon=True)
        self.jemalloc, self.stopped, self.returns = jemalloc, threading.Event(), 0
        # Restored at the end (ours, or an admin's _RJEM_MALLOC_CONF). Meanwhile freed pages are returned with
        # no muzzy stage: pages the system may take back when it likes still count as resident until it does.
        self.before = jemalloc.decay_ms(), jemalloc.decay_ms(kind="muzzy")
        jemalloc.set_decay_ms(0, kind="muzzy")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        try:
            self._sample()
        except Exception:  # (never left keeping everything: the settings from before are restored below)
            log.exception("compute.freed_memory_failed", fix="set service.compute_keep_freed_below_mib = 0")
        finally:
            self.jemalloc.purge()
            dirty, muzzy = self.before
            self.jemalloc.set_decay_ms(dirty)
            self.jemalloc.set_decay_ms(muzzy, kind="muzzy")

    def _sample(self) -> None:
        keeping = False
        with open("/proc/self/statm", "rb") as statm:
            while not self.stopped.wait(SAMPLE_SECONDS):
                statm.seek(0)
                resident, limit = int(statm.read().split()[1]) * self._page, _limit_bytes()
                if keeping and resident > limit:
                    self.jemalloc.set_decay_ms(RETURN)
                    self.jemalloc.purge()
                    keeping, self.returns = False, self.returns + 1
                elif not keeping and resident < limit - MARGIN_MIB * 2**20:
                    self.jemalloc.set_decay_ms(KEEP)
                    keeping = True


def _limit_bytes() -> int:
    return min(_limits, default=0) * 2**20


class FreedMemory:
    """`with FreedMemory(limit_mib) as freed:` ... `freed.keep()` from where the run should keep what it frees.

    Holds nest and may overlap across threads (the lowest limit applies); when the last one ends, what was kept
    goes back to the system and the allocator's setting from before applies again. limit_mib 0: nothing kept."""

    def __init__(self, limit_mib: int) -> None:
        self.limit_mib, self._keeping = limit_mib, False

    def __enter__(self) -> FreedMemory:
        return self

    def keep(self) -> None:
        global _sampler
        if self._keeping or self.limit_mib <= 0 or (jemalloc := polars_jemalloc()) is None:
            return
        with _lock:
            _limits.append(self.limit_mib)
            self._keeping = True
            if _sampler is None:
                _sampler = _Sampler(jemalloc)
                _sampler.start()

    def keep_after(self, step: str) -> Callable[[str], None]:
        """A step callback (as `job.prepare` takes) that starts keeping once `step` has ended."""
        return lambda ended: self.keep() if ended == step else None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _sampler
        if not self._keeping:
            return
        with _lock:
            _limits.remove(self.limit_mib)
            self._keeping = False
            if _limits or _sampler is None:
                return
            sampler, _sampler = _sampler, None
            sampler.stopped.set()
            sampler.join()  # (under the lock: a hold starting now waits for the pages to be returned first)
        log.debug("compute.freed_memory", limit_mib=self.limit_mib, returned=sampler.returns)
