"""polars' jemalloc reached at run time (compute/jemalloc.py) and the run's freed memory kept under a limit
(compute/freed_memory.py): found and checked, its settings read back, and the resident size it leads to."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from relinsights.compute import freed_memory
from relinsights.compute import jemalloc as jemalloc_module
from relinsights.compute.freed_memory import FreedMemory
from relinsights.compute.jemalloc import SYMBOL, Jemalloc, Mapping, _polars_libraries, polars_jemalloc, symbol_offset
from relinsights.config import ServiceConfig
from relinsights.doctor import check_compute_memory

MIB = 2**20
BLOCK = 256 * MIB  # what each test allocates through polars (twice) and frees


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def allocate_and_free() -> int:
    """The resident size while polars holds two BLOCKs of its own (every page written), then frees them."""
    first = pl.int_range(0, BLOCK // 8, eager=True)
    second = first * 3
    held = resident()
    del first, second
    return held


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `condition` holds within `seconds` (the sampler acts within milliseconds on an idle machine)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(freed_memory.SAMPLE_SECONDS)
    return True


def a_few_rounds() -> int:
    time.sleep(25 * freed_memory.SAMPLE_SECONDS)
    return resident()


def sampler_running() -> bool:
    return any(t.name == "freed-memory" for t in threading.enumerate())


@pytest.fixture
def jemalloc() -> Iterator[Jemalloc]:
    found = polars_jemalloc()
    assert found is not None, "polars' jemalloc was not found in this process (Linux, polars' own build)"
    before = found.decay_ms(), found.decay_ms(kind="muzzy")
    found.set_decay_ms(0)  # as the product's start-up setting (this process may have loaded polars without it)
    found.set_decay_ms(0, kind="muzzy")
    gc.collect()  # earlier tests' garbage freed now, not while a test measures
    found.purge()
    yield found
    assert not sampler_running()
    assert (found.decay_ms(), found.decay_ms(kind="muzzy")) == (0, 0)
    found.set_decay_ms(before[0])
    found.set_decay_ms(before[1], kind="muzzy")


def test_polars_jemalloc_is_found_and_checked() -> None:
    [library] = _polars_libraries()
    offset = symbol_offset(Path(library), SYMBOL)
    assert offset is not None and offset > 0
    jemalloc = polars_jemalloc()
    assert jemalloc is not None and jemalloc.version().startswith("5.") and jemalloc.arenas() >= 1


def test_the_function_is_called_only_where_the_library_maps_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    piece = Mapping(start=0x7F0000001000, end=0x7F0000003000, offset=0x5000, executable=True)
    addresses = [piece.address_of(o) for o in (0x4FFF, 0x5000, 0x6FFF, 0x7000)]
    assert addresses == [None, 0x7F0000001000, 0x7F0000002FFF, None]
    found = _polars_libraries()
    not_code = {lib: [Mapping(m.start, m.end, m.offset, False) for m in ms] for lib, ms in found.items()}
    monkeypatch.setattr(jemalloc_module, "_polars_libraries", lambda: not_code)
    assert polars_jemalloc.__wrapped__() is None  # (not even read: the address would be outside its code)
    monkeypatch.setattr(jemalloc_module, "_polars_libraries", lambda: found)
    assert polars_jemalloc.__wrapped__() is not None


def test_symbols_not_there_are_none(tmp_path: Path) -> None:
    [library] = _polars_libraries()
    assert symbol_offset(Path(library), b"_rjem_no_such_function") is None
    assert symbol_offset(Path(library), SYMBOL[1:]) is None  # a suffix of the name is not the name
    assert symbol_offset(Path(sys.executable), SYMBOL) is None  # an ELF file without it
    (text := tmp_path / "not-elf.so").write_bytes(b"#!/bin/sh\n" * 10)
    assert symbol_offset(text, SYMBOL) is None


def test_decay_is_set_for_every_arena_and_read_back(jemalloc: Jemalloc) -> None:
    jemalloc.set_decay_ms(freed_memory.KEEP)
    try:
        assert jemalloc.decay_ms() == -1 and jemalloc.decay_ms(0) == -1
    finally:
        jemalloc.set_decay_ms(freed_memory.RETURN)
    assert jemalloc.decay_ms() == 0 and jemalloc.decay_ms(0) == 0


def test_freed_memory_is_kept_under_the_limit_and_returned_when_the_hold_ends(jemalloc: Jemalloc) -> None:
    before = resident()
    assert allocate_and_free() > before + BLOCK + BLOCK // 2
    assert eventually(lambda: resident() < before + BLOCK // 4)  # the default: returned at once

    with FreedMemory((before + 4 * BLOCK) // MIB) as freed:
        freed.keep()
        assert sampler_running()
        assert eventually(lambda: jemalloc.decay_ms() == freed_memory.KEEP)
        allocate_and_free()
        assert a_few_rounds() > before + BLOCK // 2  # kept for the next allocation
        again = allocate_and_free()
        assert again < before + 2 * BLOCK + BLOCK // 2  # which reuses it (two blocks at once, no more)
    assert resident() < before + BLOCK // 4  # the hold ended: what was kept went back


def test_over_the_limit_freed_memory_goes_back_at_once(jemalloc: Jemalloc) -> None:
    before = resident()
    with FreedMemory((before + BLOCK) // MIB) as freed:
        freed.keep()
        assert eventually(lambda: jemalloc.decay_ms() == freed_memory.KEEP)
        held = allocate_and_free()  # two blocks at once: over the limit while they are held
        assert held > before + BLOCK + BLOCK // 2
        assert eventually(lambda: resident() < before + BLOCK // 4)  # returned, not kept
        assert freed_memory._sampler is not None and freed_memory._sampler.returns >= 1
        # and kept again, back under the limit less the margin
        assert eventually(lambda: jemalloc.decay_ms() == freed_memory.KEEP)


def test_a_hold_returns_pages_without_a_muzzy_stage_and_restores_the_settings_before(jemalloc: Jemalloc) -> None:
    jemalloc.set_decay_ms(500)  # an admin's _RJEM_MALLOC_CONF, say: polars' own defaults
    jemalloc.set_decay_ms(1000, kind="muzzy")
    with FreedMemory(100_000) as freed:
        freed.keep()
        assert jemalloc.decay_ms(0, kind="muzzy") == 0 and jemalloc.decay_ms(kind="muzzy") == 0
        assert eventually(lambda: jemalloc.decay_ms() == freed_memory.KEEP)
    assert (jemalloc.decay_ms(), jemalloc.decay_ms(0), jemalloc.decay_ms(kind="muzzy")) == (500, 500, 1000)
    jemalloc.set_decay_ms(0)
    jemalloc.set_decay_ms(0, kind="muzzy")


def test_holds_nest_and_the_last_one_ends_the_sampler(jemalloc: Jemalloc) -> None:
    with FreedMemory(100_000) as outer:
        outer.keep()
        with FreedMemory(50_000) as inner:
            inner.keep()
            inner.keep()  # a second call changes nothing
            assert freed_memory._limit_bytes() == 50_000 * MIB  # the lowest applies
        assert sampler_running() and freed_memory._limit_bytes() == 100_000 * MIB
    assert not sampler_running()


def test_nothing_is_kept_with_limit_zero_or_without_the_allocator(
    jemalloc: Jemalloc, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FreedMemory(0) as freed:
        freed.keep_after("read")("read")
        assert not sampler_running()
    monkeypatch.setattr(freed_memory, "polars_jemalloc", lambda: None)
    with FreedMemory(900) as freed:
        freed.keep()
        assert not sampler_running()


def test_keep_after_waits_for_its_step(jemalloc: Jemalloc) -> None:
    with FreedMemory(100_000) as freed:
        step = freed.keep_after("read")
        step("load")
        assert not sampler_running()
        step("read")
        assert sampler_running()


def test_doctor_says_whether_freed_memory_can_be_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_compute_memory(ServiceConfig(compute_keep_freed_below_mib=0)).detail.startswith("no: returned")
    monkeypatch.setattr("relinsights.compute.jemalloc.polars_jemalloc", lambda: None)
    check = check_compute_memory(ServiceConfig())
    assert check.level == "warn" and "has no effect" in check.detail


def test_a_failing_sampler_leaves_the_settings_as_they_were(
    jemalloc: Jemalloc, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object) -> None:
        jemalloc.set_decay_ms(freed_memory.KEEP)  # (as if it had started keeping)
        raise OSError(14, "mallctl failed")

    monkeypatch.setattr(freed_memory._Sampler, "_sample", broken)
    with FreedMemory(100_000) as freed:
        freed.keep()
        assert eventually(lambda: not sampler_running())
        assert jemalloc.decay_ms() == 0  # not left keeping everything for the rest of the run
