"""A long column of strings kept in a temporary file (`spillfile.SpilledBytes`), read back one value at a time.

For a column a run holds to the end but reads a few values of: the activity keys (0.17 GB at 2,000,000
activities), of which the KPIs read only the last and next interaction of each record.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from relinsights.analytics.spillfile import SpilledBytes

CHUNK = 100_000  # values written at a time (each chunk is one Python string while it is written)


class SpilledStrings:
    """The values of a string column without nulls, by row number (as `pl.Series[i]` gives them)."""

    __slots__ = ("_file", "_offsets")

    def __init__(self, values: pl.Series, order: pl.Series | None = None) -> None:
        """`values` (in `order`, row numbers of them, when given: gathered a chunk at a time)."""
        if values.null_count():
            raise ValueError(f"column {values.name!r} has {values.null_count()} nulls: only whole columns are spilled")
        self._file = SpilledBytes()
        lengths = values.str.len_bytes()
        self._offsets = np.zeros(values.len() + 1, dtype=np.int64)
        np.cumsum((lengths if order is None else lengths.gather(order)).to_numpy(), out=self._offsets[1:])
        for start in range(0, values.len(), CHUNK):
            chunk = values.slice(start, CHUNK) if order is None else values.gather(order.slice(start, CHUNK))
            self._file.append(chunk.str.join("").item().encode())

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"value {i} of {len(self)}")
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._file.read(start, stop - start).decode()

    def to_series(self, name: str = "") -> pl.Series:
        """Every value, in memory again (checks and the few callers that want the whole column)."""
        raw = self._file.read(0, len(self._file))
        bounds = zip(self._offsets[:-1].tolist(), self._offsets[1:].tolist(), strict=True)
        return pl.Series(name, [raw[start:stop].decode() for start, stop in bounds], dtype=pl.String)

    def close(self) -> None:
        self._file.close()
