"""Byte strings a run holds to the end but reads little of, kept in a temporary file, read back one at a time.

The KPI job's JSON payloads (about 5.5 KiB a record, which wait for the run's one write) and, through
`spilled.SpilledStrings`, its activity keys. The file is anonymous (unlinked as it is made, readable by this
process only) and goes when it is closed or collected, or the process ends; its pages are the kernel's page
cache, not the process's memory. (No polars here: the daemon imports the snapshot store, not the engine.)
"""

from __future__ import annotations

import os
import tempfile

BUFFER = 1 << 20  # bytes appended before they are written to the file


class SpilledBytes:
    """Byte strings appended to one file, each read back by the place `append` gave it."""

    __slots__ = ("_file", "_size", "_written")

    def __init__(self) -> None:
        # (held open until `close`: the file goes with it. A large buffer: each write to the file gives the
        # interpreter lock up and waits to take it back from the KPI threads; through the default 8 KiB one,
        # the writes of 20,000 payloads took 1.4 s of the thread making them, through this one too little to see)
        self._file = tempfile.TemporaryFile(buffering=BUFFER)  # noqa: SIM115
        self._size = self._written = 0  # bytes appended; of them, bytes flushed to the file

    def append(self, value: bytes) -> tuple[int, int]:
        """(where `value` starts, its length)."""
        self._file.write(value)
        at, self._size = self._size, self._size + len(value)
        return at, len(value)

    def read(self, at: int, length: int) -> bytes:
        if at < 0 or length < 0 or at + length > self._size:
            raise IndexError(f"bytes {at}..{at + length} of {self._size}")
        if at + length > self._written:
            self._file.flush()
            self._written = self._size
        return os.pread(self._file.fileno(), length, at)

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        self._file.close()
