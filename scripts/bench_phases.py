"""Where a KPI computation's time and memory go: each step of one full run timed, with its own peak.

The steps of `compute_tenant` one after the other, in one fresh process, over a tenant of
`bench_compute.py` (a new SQLite one of -n activities, or an existing database with --url): the read
(`load_inputs`), the activity build, the thread settling, matching, the activity table, the record
fingerprints and the KPIs with their payloads (not written). Per step: wall seconds, CPU seconds (of them
in the kernel, and the page faults it served: memory handed back and over again, docs/benchmark-history.md,
round 20), resident memory after it, and its peak (the process's peak is reset before each step,
/proc/self/clear_refs), MiB; with readers: the peak of its memory plus that of the processes reading mail and
calendars, when higher. Freed memory is kept from the end of the read on, as compute_tenant keeps it
(--keep-freed-below-mib, default service.compute_keep_freed_below_mib's; 0: returned at once).

    .venv/bin/python scripts/bench_phases.py -n 200000
    .venv/bin/python scripts/bench_phases.py --url sqlite:////tmp/bench.db    # a database built before
    .venv/bin/python scripts/bench_phases.py --url sqlite:////tmp/bench.db --where

--where also samples the process's resident memory every few milliseconds with the line of relinsights the
run is at (and the two calls above it), and prints the lines where it was highest: where a peak is made.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench_compute import T, TreePeak, build_tenant, status_mib, tenant_config
from relinsights.collector import collector_paused
from relinsights.compute.freed_memory import FreedMemory
from relinsights.compute.job import KEEP_FREED_BELOW_MIB, prepare
from relinsights.db import make_engine


class Steps:
    def __init__(self) -> None:
        self._reset()
        self.wall, self.cpu, self.faults = time.perf_counter(), os.times(), _faults()

    def _reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from the current resident size
        self.tree = TreePeak()

    def done(self, step: str) -> None:
        now, cpu, faults, mem, tree = time.perf_counter(), os.times(), _faults(), status_mib(), self.tree.stop()
        user, kernel = cpu.user - self.cpu.user, cpu.system - self.cpu.system
        print(
            f"{step:12} {now - self.wall:7.2f} s  cpu {user + kernel:7.2f} s"
            f" (kernel {kernel:5.2f} s, {(faults - self.faults) / 1e6:4.2f} M page faults)"
            f"  resident {mem['VmRSS']:6,.0f} MiB  peak {mem['VmHWM']:6,.0f} MiB"
            + (f"  with readers {tree:6,.0f} MiB" if tree > mem["VmHWM"] else ""),
            flush=True,
        )
        self._reset()
        self.wall, self.cpu, self.faults = time.perf_counter(), os.times(), _faults()


def _faults() -> int:
    """This process's page faults so far that needed no disk read (memory handed over by the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Where:
    """The process's resident memory sampled with the line of relinsights the main thread is at: the highest
    sample of each place (that line and the two relinsights calls above it), the highest first."""

    def __init__(self) -> None:
        self.main, self.top = threading.get_ident(), dict[str, int]()
        self._page, self._stop = os.sysconf("SC_PAGE_SIZE"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _place(self) -> str:
        frame, lines = sys._current_frames().get(self.main), []
        while frame is not None and len(lines) < 3:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("relinsights."):
                lines.append(f"{module.removeprefix('relinsights.')}:{frame.f_lineno}")
            frame = frame.f_back
        return " < ".join(lines)

    def _run(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self._stop.wait(0.003):
                statm.seek(0)
                resident, place = int(statm.read().split()[1]) * self._page, self._place()
                if resident > self.top.get(place, 0):
                    self.top[place] = resident

    def report(self, lines: int = 20) -> None:
        self._stop.set()
        self._thread.join()
        print("highest resident memory by place (line < its callers):")
        for place, resident in sorted(self.top.items(), key=lambda kv: -kv[1])[:lines]:
            print(f"  {resident / 2**20:6,.0f} MiB  {place or '(outside relinsights)'}")


@collector_paused()
def measure(url: str, where: bool = False, keep_freed_below_mib: int = KEEP_FREED_BELOW_MIB) -> None:
    with FreedMemory(keep_freed_below_mib) as freed:  # as compute_tenant keeps freed memory
        _measure(url, where, freed.keep_after("read"))


def _measure(url: str, where: bool, keep: Callable[[str], None]) -> None:
    sampler = Where() if where else None
    steps = Steps()

    def step(name: str) -> None:
        steps.done(name)
        keep(name)

    p = prepare(make_engine(url), tenant_config(), T, keep_rows=False, step=step)
    activities = len(p.frames)
    p.release_frames()  # the table built, the frames let go: as compute_tenant does
    steps.done("table")
    wanted = p.fingerprints()
    steps.done("fingerprints")
    records = sum(1 for _ in p.snapshots(wanted))
    steps.done("kpis")
    print(f"{activities:,} activities, {records:,} records (steps from the start of the run's own work)")
    if sampler is not None:
        sampler.report()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--activities", type=int, default=200_000)
    p.add_argument("--mailboxes", type=int, default=1_000)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--short-ids", action="store_true", help="bench_compute.py's short made-up ids")
    p.add_argument("--url", help="an existing database holding bench_compute.py's tenant")
    p.add_argument("--where", action="store_true", help="also the lines of the run where its memory was highest")
    p.add_argument(
        "--keep-freed-below-mib",
        type=int,
        default=KEEP_FREED_BELOW_MIB,
        help=f"service.compute_keep_freed_below_mib (default {KEEP_FREED_BELOW_MIB}; 0: freed memory returned at once)",
    )
    args = p.parse_args()
    if args.url:
        measure(args.url, args.where, args.keep_freed_below_mib)
        return
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'bench.db'}"
        build_tenant(make_engine(url), args)  # the same tenant as bench_compute.py's, sizes and all
        # Measured in a process of its own: the build's rows are not in its memory.
        where = ["--where"] if args.where else []
        keep = ["--keep-freed-below-mib", str(args.keep_freed_below_mib)]
        subprocess.run([sys.executable, __file__, "--url", url, *where, *keep], check=True)


if __name__ == "__main__":
    main()
