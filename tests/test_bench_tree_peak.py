"""The benchmark's memory measure (scripts/bench_compute.py, TreePeak): the run's resident memory plus its
children's, whichever of the run's threads started them, found either way the children can be listed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CHILD_MIB = 96


def bench_compute() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compute", SCRIPTS / "bench_compute.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("every_process", [False, True], ids=["as-detected", "every-process"])
def test_tree_peak_counts_children_started_by_any_thread(every_process: bool) -> None:
    tree_peak = bench_compute().TreePeak
    holding = f"import time; b = bytearray({CHILD_MIB} * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    codes: list[int] = []

    def run_child() -> None:  # (a reader process is started from a thread of the run's, not always the main one)
        codes.append(subprocess.Popen([sys.executable, "-c", holding]).wait(timeout=30))

    tree = tree_peak()
    if every_process:  # (the way for a kernel that lists no children, tried on this one too)
        tree._listed = False
    own = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    # Each child's own starting thread lives until it ends: its parent is that thread, not the main one.
    starters = [threading.Thread(target=run_child) for _ in range(2)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    assert codes == [0, 0]
    peak = tree.stop()
    assert peak >= own + 2 * CHILD_MIB
    assert peak < own + 2 * CHILD_MIB + 200  # (each child: its own interpreter besides the bytes)


def test_tree_peak_is_zero_without_children() -> None:
    tree = bench_compute().TreePeak()
    time.sleep(0.3)
    assert tree.stop() == 0
