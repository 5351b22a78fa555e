"""Byte strings a run holds to the end but reads little of, kept in a temporary file, read back one at a time.

The KPI job's JSON payloads (about 5.5 KiB a record, which wait for the run's one write) and, through
`spilled.SpilledStrings`, its activity keys. The file is anonymous (unlinked as it is made, readable by this
process only) and goes when it is closed or collected, or the process ends; its pages are the kernel's page
cache, not the process's memory. (No polars here: the daemon imports the snapshot store, not the engine.)
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO

BUFFER = 1 << 20  # bytes appended before they are written to the file together


class SpilledBytes:
    """Byte strings appended to one file, each read back by the place `append` gave it (by any thread: the KPI
    job's writer reads the payloads while they are appended)."""

    __slots__ = ("_file", "_lock", "_pending", "_pending_size", "_size")

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 (held open until `close`: the file goes with it)
        # Values appended but not yet written: written together once there are BUFFER bytes of them. (Through
        # a buffered file object, with an 8 or 64 KiB buffer, the writes of 20,000 payloads took 1.4 s of the
        # thread making them, each giving the interpreter lock up to the KPI threads; with a 1 MiB buffer the
        # run held 17 MiB more through its activity table step.)
        self._pending: list[bytes] = []
        self._pending_size = self._size = 0
        self._lock = threading.Lock()

    def append(self, value: bytes) -> tuple[int, int]:
        """(where `value` starts, its length)."""
        with self._lock:
            self._pending.append(value)
            self._pending_size += len(value)
            if self._pending_size >= BUFFER:
                self._write()
            at, self._size = self._size, self._size + len(value)
        return at, len(value)

    def append_written(self, write: Callable[[BinaryIO], object]) -> tuple[int, int]:
        """(where the bytes `write` writes to the file start, their length): many values written at once by a
        writer of files (`spilled.SpilledStrings`: polars' own), not made a Python bytes object first."""
        with self._lock:
            if self._pending:
                self._write()
            write(self._file)
            at, self._size = self._size, os.lseek(self._file.fileno(), 0, os.SEEK_END)
        return at, self._size - at

    def _write(self) -> None:
        view = memoryview(b"".join(self._pending)) if len(self._pending) > 1 else memoryview(self._pending[0])
        while view:
            view = view[os.write(self._file.fileno(), view) :]
        self._pending.clear()
        self._pending_size = 0

    def read(self, at: int, length: int) -> bytes:
        with self._lock:
            if at < 0 or length < 0 or at + length > self._size:
                raise IndexError(f"bytes {at}..{at + length} of {self._size}")
            if self._pending:
                self._write()
        return os.pread(self._file.fileno(), length, at)

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        self._file.close()
