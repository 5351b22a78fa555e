"""The cyclic garbage collector paused around bulk work that makes millions of objects and no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the duration (also usable as a decorator).

    Bulk work (a delta page being stored, a tenant's KPI run) allocates objects by the million and keeps
    them alive until it ends; the collector, triggered every 700 allocations, only walks those live objects
    again and again. Everything such work makes is freed by reference counting, so nothing piles up while
    the collector is off; it is switched back on at the end. Left alone when something else turned it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
