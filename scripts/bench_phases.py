"""Where a KPI computation's time and memory go: each step of one full run timed, with its own peak.

The steps of `compute_tenant` one after the other, in one fresh process, over a tenant of
`bench_compute.py` (a new SQLite one of -n activities, or an existing database with --url): the read
(`load_inputs`), the activity build, the thread settling, matching, the activity table, the record
fingerprints and the KPIs with their payloads (not written). Per step: wall seconds, CPU seconds, resident
memory after it, and its peak (the process's peak is reset before each step, /proc/self/clear_refs), MiB.

    .venv/bin/python scripts/bench_phases.py -n 200000
    .venv/bin/python scripts/bench_phases.py --url sqlite:////tmp/bench.db    # a database built before
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench_compute import Builder, T, tenant_config
from relinsights.collector import collector_paused
from relinsights.db import make_engine, migrate


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
    return out


class Steps:
    def __init__(self) -> None:
        self._reset()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from the current resident size

    def done(self, step: str) -> None:
        now, cpu, mem = time.perf_counter(), time.process_time(), _status()
        print(
            f"{step:12} {now - self.wall:7.2f} s  cpu {cpu - self.cpu:7.2f} s"
            f"  resident {mem['VmRSS']:6,} MiB  peak {mem['VmHWM']:6,} MiB",
            flush=True,
        )
        self._reset()
        self.wall, self.cpu = time.perf_counter(), time.process_time()


@collector_paused()
def measure(url: str) -> None:
    from relinsights.compute.job import prepare

    steps = Steps()
    p = prepare(make_engine(url), tenant_config(), T, keep_rows=False, step=steps.done)
    assert p.table is not None
    steps.done("table")
    wanted = p.fingerprints()
    steps.done("fingerprints")
    records = sum(1 for _ in p.snapshots(wanted))
    steps.done("kpis")
    print(f"{len(p.frames):,} activities, {records:,} records (steps from the start of the run's own work)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--activities", type=int, default=200_000)
    p.add_argument("--url", help="an existing database holding bench_compute.py's tenant")
    p.add_argument("--short-ids", action="store_true", help="bench_compute.py's short made-up ids")
    args = p.parse_args()
    if args.url:
        measure(args.url)
        return
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'bench.db'}"
        engine = make_engine(url)
        migrate(engine)
        n = args.activities
        b = Builder(engine, max(1, n // 2000), min(20_000, max(100, n // 100)), 1, short_ids=args.short_ids)
        b.base()
        b.add(n, T - timedelta(days=365) + timedelta(seconds=1), T)
        engine.dispose()
        # Measured in a process of its own: the build's rows are not in its memory.
        subprocess.run([sys.executable, __file__, "--url", url], check=True)


if __name__ == "__main__":
    main()
