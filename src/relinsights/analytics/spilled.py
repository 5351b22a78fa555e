"""A long column of strings kept in a temporary file (`spillfile.SpilledBytes`), read back one value at a time.

For a column a run holds to the end but reads a few values of: the activity keys (0.17 GB at 2,000,000
activities), of which the KPIs read only the last and next interaction of each record.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from relinsights.analytics.spillfile import SpilledBytes

WIDE_FROM = 2**32  # the file size from which the values' places need 64 bits


class SpilledStrings:
    """The values of a string column without nulls, by row number (as `pl.Series[i]` gives them)."""

    __slots__ = ("_file", "_lengths", "_starts")

    def __init__(self, values: pl.Series, order: pl.Series | None = None) -> None:
        """`values` (in `order`, row numbers of them, when given).

        Written as they are, and put in order by their places in the file: gathered in order instead, each
        chunk's strings were first copied again (polars compacts what a gather of a few of a column's strings
        holds), 1.6 s against 0.3 s for 2,000,000 activity keys. Written by polars' CSV writer, one after the
        other with nothing between them and nothing quoted: a chunk of them joined into one Python string at a
        time and encoded took 0.14-0.44 s for 190 MB of keys, this 0.06-0.15 s."""
        if values.null_count():
            raise ValueError(f"column {values.name!r} has {values.null_count()} nulls: only whole columns are spilled")
        self._file = SpilledBytes()
        lengths = values.str.len_bytes().to_numpy()
        # (32-bit places while the file is under 4 GiB: 8 bytes a value with the lengths, as the offsets were)
        total = int(lengths.sum(dtype=np.int64))
        starts = np.zeros(values.len(), dtype=np.uint32 if total < WIDE_FROM else np.int64)
        np.cumsum(lengths[:-1], out=starts[1:], dtype=starts.dtype)
        frame = values.to_frame()
        self._file.append_written(
            lambda file: frame.write_csv(file, include_header=False, quote_style="never", line_terminator="")
        )
        if order is not None:
            at = order.to_numpy()
            starts, lengths = starts[at], lengths[at]
        self._starts, self._lengths = starts, lengths

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: int) -> str:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"value {i} of {len(self)}")
        return self._file.read(int(self._starts[i]), int(self._lengths[i])).decode()

    def to_series(self, name: str = "") -> pl.Series:
        """Every value, in memory again (checks and the few callers that want the whole column)."""
        raw = self._file.read(0, len(self._file))
        starts = self._starts.astype(np.int64)
        bounds = zip(starts.tolist(), (starts + self._lengths).tolist(), strict=True)
        return pl.Series(name, [raw[start:stop].decode() for start, stop in bounds], dtype=pl.String)

    def close(self) -> None:
        self._file.close()
