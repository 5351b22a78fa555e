"""polars' own allocator (the jemalloc built into its library), reached at run time to steer its freed memory.

polars allocates every column with a jemalloc of its own, which it neither exports nor lets Python configure
after start-up (only `_RJEM_MALLOC_CONF`, read once at load). Its control function, `mallctl`, is in the
library's symbol table as a local symbol (`_rjem_mallctl`): found there and checked (its code is mapped
executable in this process and is the file's, and it answers "version" with jemalloc 5's), it is called
through ctypes.

Anything unexpected (another platform, a polars built with another allocator, a stripped library) gives
`None`, and the caller runs as if it had never looked: with the start-up setting alone.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

SYMBOL = b"_rjem_mallctl"
ALL_ARENAS = 4096  # MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena

Decay = Literal["dirty", "muzzy"]

_SHT_SYMTAB, _PT_LOAD, _STT_FUNC = 2, 1, 2
_SYM = np.dtype(
    [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")]
)
_MALLCTL = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)


def symbol_offset(path: Path, name: bytes) -> int | None:
    """Where the code of a function of a 64-bit little-endian ELF file's full symbol table (.symtab) lies in the
    file, or None."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as elf:
        if elf[:6] != b"\x7fELF\x02\x01":
            return None
        phoff, shoff = struct.unpack_from("<QQ", elf, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", elf, 0x36)
        sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
        for _, kind, _, _, offset, size, link, _, _, entsize in sections:
            if kind != _SHT_SYMTAB or entsize != _SYM.itemsize:
                continue
            strings = sections[link]
            table = elf[strings[4] : strings[4] + strings[5]]
            starts, at = [], table.find(name + b"\0")
            while at >= 0:  # each place the name stands before a NUL: a symbol of exactly that name names one
                starts.append(at)
                at = table.find(name + b"\0", at + 1)
            symbols = np.frombuffer(elf, _SYM, size // entsize, offset)
            hits = symbols[np.isin(symbols["name"], starts) & (symbols["info"] & 0xF == _STT_FUNC)]
            del symbols  # (the mmap cannot close while a view of it lives)
            if len(hits) != 1:
                return None
            value = int(hits["value"][0])
            for i in range(phnum):
                kind, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
                if kind == _PT_LOAD and p_vaddr <= value < p_vaddr + p_filesz:
                    return value - p_vaddr + p_offset
        return None


@dataclass(frozen=True)
class Mapping:
    """A piece of a file mapped into this process (a line of /proc/self/maps)."""

    start: int
    end: int
    offset: int  # of its first byte in the file
    executable: bool

    def address_of(self, file_offset: int) -> int | None:
        inside = self.offset <= file_offset < self.offset + self.end - self.start
        return self.start + file_offset - self.offset if inside else None


def _polars_libraries() -> dict[str, list[Mapping]]:
    """polars' libraries mapped in this process, with their mappings."""
    import polars  # noqa: F401  (maps its library into this process)

    found: dict[str, list[Mapping]] = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            file = fields[5].rstrip("\n") if len(fields) == 6 else ""
            if "polars" in file.rsplit("/", 1)[-1] and file.endswith(".so"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.setdefault(file, []).append(Mapping(start, end, int(fields[2], 16), "x" in fields[1]))
    return found


class Jemalloc:
    """The controls of polars' jemalloc this code uses (names as in jemalloc's manual, `mallctl`)."""

    def __init__(self, mallctl: Callable[..., int]) -> None:
        self._call = mallctl

    def version(self) -> str:
        value, size = ctypes.c_char_p(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_char_p))
        self._check("version", self._call(b"version", ctypes.byref(value), ctypes.byref(size), None, 0))
        return (value.value or b"").decode()

    def arenas(self) -> int:
        value, size = ctypes.c_uint(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint))
        self._check("arenas.narenas", self._call(b"arenas.narenas", ctypes.byref(value), ctypes.byref(size), None, 0))
        return value.value

    def decay_ms(self, arena: int | None = None, kind: Decay = "dirty") -> int:
        """How long freed pages stay before they go on (dirty: to muzzy, or back to the system when muzzy is 0;
        muzzy: back to the system) in ms, -1: until purged; of the arenas made from now on when arena is None."""
        name = f"arenas.{kind}_decay_ms" if arena is None else f"arena.{arena}.{kind}_decay_ms"
        value, size = ctypes.c_ssize_t(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_ssize_t))
        self._check(name, self._call(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0))
        return value.value

    def set_decay_ms(self, ms: int, kind: Decay = "dirty") -> None:
        """Set it for every arena and for those made later (threads get theirs on their first allocation)."""
        value = ctypes.c_ssize_t(ms)
        name = f"arenas.{kind}_decay_ms"
        self._check(name, self._call(name.encode(), None, None, ctypes.byref(value), ctypes.sizeof(value)))
        for arena in range(self.arenas()):
            # (an index not in use yet answers an error: it gets the new arenas' value when it is made)
            self._call(f"arena.{arena}.{kind}_decay_ms".encode(), None, None, ctypes.byref(value), ctypes.sizeof(value))

    def purge(self) -> None:
        """Give every freed page of every arena back to the system now."""
        self._check("arena.purge", self._call(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, 0))

    @staticmethod
    def _check(name: str, code: int) -> None:
        if code:
            raise OSError(code, f"jemalloc mallctl({name!r}) failed: {os.strerror(code)}")


@cache
def polars_jemalloc() -> Jemalloc | None:
    """The controls of the jemalloc inside polars' library in this process, or None where it cannot be found."""
    if not Path("/proc/self/maps").exists():
        return None
    for library, mappings in _polars_libraries().items():
        if (offset := symbol_offset(Path(library), SYMBOL)) is None:
            continue
        # (where its code is mapped: never an address outside the library's executable mappings)
        found = [a for m in mappings if m.executable and (a := m.address_of(offset)) is not None]
        if len(found) != 1:
            continue
        address = found[0]
        with open(library, "rb") as f:
            f.seek(offset)
            if ctypes.string_at(address, 32) != f.read(32):  # the code there is not the file's
                continue
        jemalloc = Jemalloc(_MALLCTL(address))
        if jemalloc.version().startswith("5."):
            return jemalloc
    return None
