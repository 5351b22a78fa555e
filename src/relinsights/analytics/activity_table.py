"""One run's activities as columns (polars): one row per activity, one per participant, built once as of T.

What the column engine (columnar.py) computes KPIs over, and what record fingerprints are hashed from.
Integer codes name people, addresses and threads within the run (people and addresses in the order of
their names, so sorting by code sorts by name); times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property

import polars as pl

from relinsights.analytics.activities import Activity, Direction, Kind, Participant, Role
from relinsights.analytics.health import TREND_DAYS, decayed_weight
from relinsights.analytics.kpis import series_dates
from relinsights.analytics.matching import LinkTable
from relinsights.analytics.records import RecordRef
from relinsights.analytics.settings import Settings
from relinsights.analytics.timeutil import as_utc, local_date, start_of_local_day

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KIND = {Kind.EMAIL: 0, Kind.MEETING: 1, Kind.CALL: 2}
DIRECTION = {Direction.OUTGOING: 0, Direction.INCOMING: 1}
ROLE = {r: i for i, r in enumerate(Role)}
OURS, THEIRS = 0, 1  # an email's side: sent by us / by the customer (responses.Side)
_SEED = 0x5EED  # fixed, so a fingerprint is the same in every process
_CHUNK = 50_000  # activities turned into columns at a time


def us(t: datetime) -> int:
    """An aware time as integer microseconds since the epoch."""
    return us_delta(t - _EPOCH)


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def us_delta(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def at_us(micros: int) -> datetime:
    """The UTC time `micros` microseconds after the epoch (the inverse of `us`)."""
    return _EPOCH + timedelta(microseconds=micros)


def link_rows(links: LinkTable, refs: Sequence[RecordRef]) -> tuple[array[int], array[int]]:
    """The records' links as stored: (each link's record number in `refs`, flat (activity, shape) pairs)."""
    flat: array[int] = array("I")
    rec: array[int] = array("I")
    for r, ref in enumerate(refs):
        row = links.pairs(ref)
        flat.extend(row)
        rec.extend(array("I", [r]) * (len(row) // 2))
    return rec, flat


class ActivityTable:
    """One run's activities as columns (one row per activity, one per participant), built once as of T."""

    def __init__(
        self,
        acts: Sequence[Activity],
        as_of: datetime,
        settings: Settings,
        *,
        threads: Mapping[str, str],
        identities: Mapping[str, str],
    ) -> None:
        self.as_of, self.settings = as_utc(as_of), settings
        self.before = self.as_of - timedelta(days=TREND_DAYS)
        self.acts = acts
        self.identities = identities
        self._members: tuple[LinkTable, pl.DataFrame] | None = None
        self._columns(threads, identities)

    @cached_property
    def index(self) -> dict[int, int]:
        """Activity identity -> row, for links given as Link objects."""
        return {id(a): i for i, a in enumerate(self.acts)}

    def _columns(self, threads: Mapping[str, str], identities: Mapping[str, str]) -> None:
        acts, settings = self.acts, self.settings

        # People as integer codes in the order of their names, so sorting by code sorts by name.
        # Participants are shared objects (activities.py interns them): numbered by identity, not by value.
        self._pid: dict[int, int] = {}
        plist: list[Participant] = []
        for a in acts:
            for p in a.participants:
                if id(p) not in self._pid:
                    self._pid[id(p)] = len(plist)
                    plist.append(p)
        names = {p.person for p in plist}
        names.update([identities.get(n, n) for n in names])
        names.add("")
        self.names = sorted(names)
        self.code = code = {n: c for c, n in enumerate(self.names)}
        self.addresses = sorted({p.address for p in plist if p.address})
        addr_code = {x: c for c, x in enumerate(self.addresses)}
        self._people = pl.DataFrame(
            {
                "pid": range(len(plist)),
                "person": [code[p.person] for p in plist],
                "role": [ROLE[p.role] for p in plist],
                "internal": [p.internal for p in plist],
                "attended": [p.attended for p in plist],
                "addr": [addr_code.get(p.address or "") for p in plist],
                "who": [code[identities.get(p.person, p.person)] for p in plist],
                # What a fingerprint knows of a participant, stable across runs (codes above are not).
                "p_h": [_h64(repr((p.person, p.internal, p.role.value, p.address, p.attended))) for p in plist],
            },
            schema_overrides={
                "pid": pl.Int32,
                "person": pl.Int32,
                "role": pl.Int8,
                "addr": pl.Int32,
                "who": pl.Int32,
                "p_h": pl.UInt64,
            },
        )
        # The series' local days by their first instants (zoneinfo's), so a time's day is a bisection.
        days = series_dates(local_date(self.as_of, settings.zone))
        self._bounds = [us(start_of_local_day(d, settings.zone)) for d in (*days, days[-1] + timedelta(days=1))]
        self._first_day = days[0].toordinal()
        self._threads: dict[str, int] = {}
        # A chunk at a time, so the Python lists the columns are made from stay small however big the run.
        chunks = [self._chunk(acts, i, threads) for i in range(0, max(len(acts), 1), _CHUNK)]  # one, even empty
        # Keys are only ever compared (ties on time) and fingerprinted: their rank and hash stand in for them.
        self.activities = (
            pl.concat([c[0] for c in chunks])
            .with_columns(krank=pl.col("key").rank("ordinal").cast(pl.Int32), key_h=pl.col("key").hash(_SEED))
            .drop("key")
        )
        self.parts = pl.concat([c[1] for c in chunks]).join(self._people, on="pid").drop("pid")
        # The thread codes are this run's; a fingerprint needs the thread's own (stable) name.
        thread_h = pl.Series("thread_h", [_h64(t) for t in self._threads] or [0], dtype=pl.UInt64)
        self.activities = self.activities.with_columns(
            thread_h=pl.when(pl.col("thread") >= 0)
            .then(pl.lit(thread_h).gather(pl.col("thread").clip(0)))
            .otherwise(pl.lit(0, dtype=pl.UInt64))
        )
        del self._people, self._pid, self._threads

    # Views of the participants every batch of records joins to: made once, not scanned again per batch.

    @cached_property
    def internal_attending(self) -> pl.DataFrame:
        """(activity, person, address) of our people who took part (top contacts, ours)."""
        return self.parts.filter(pl.col("internal") & pl.col("attended")).select("a", "person", "addr")

    @cached_property
    def internal_attending_count(self) -> pl.DataFrame:
        """(activity, n): how many of our people took part (a meeting's time spent by the team)."""
        return self.internal_attending.group_by("a").len().rename({"len": "n"})

    @cached_property
    def internal_roles(self) -> pl.DataFrame:
        """(activity, role) of each of our people on it (an email's writers and readers)."""
        return self.parts.filter(pl.col("internal")).select("a", "role")

    @cached_property
    def recipients(self) -> pl.DataFrame:
        """(activity, person) of each To/Cc recipient, as (close_a, opener, to_opener) for the turn walk."""
        to_or_cc = pl.col("role").is_in([ROLE[Role.TO], ROLE[Role.CC]])
        return (
            self.parts.filter(to_or_cc)
            .select(close_a="a", opener="person")
            .unique()
            .with_columns(to_opener=pl.lit(True))
        )

    def fingerprints(
        self, links: LinkTable, refs: Sequence[RecordRef], health_for: Collection[RecordRef], settings_key: str
    ) -> list[str]:
        """Each record's fingerprint (compute/fingerprint.py: what it covers and why), in `refs`' order.

        A hash of every field of every linked activity the KPIs read (its participants included), of each
        link's reasons and members with their identities, of whether the record gets health, and of the
        settings; polars' hashes are stable within one polars version, which `settings_key` includes."""
        # Sets (an activity's participants, a record's links) are hashed as the wrapping sum of their members'
        # 64-bit hashes: no sorting, no lists, and any one change moves the sum.
        people = self.parts.group_by("a").agg(pl.col("p_h").sum(), n_people=pl.len())
        digest = (
            self.activities.join(people, on="a", how="left")
            .select(
                "a",
                act_h=pl.struct(
                    "key_h", "kind", "dir", "t", "end", "dur", "all_day", "pending", "thread_h", "p_h", "n_people"
                ).hash(_SEED),
            )
            .sort("a")
            .get_column("act_h")
        )
        shapes = pl.Series(
            [
                _h64(repr((reasons, sorted((m, self.identities.get(m, m)) for m in members))))
                for reasons, members in links.shapes
            ],
            dtype=pl.UInt64,
        )
        rec, flat = link_rows(links, refs)
        per_record = (
            pl.DataFrame(
                {
                    "r": pl.Series(rec, dtype=pl.Int32),
                    "act_h": digest.gather(pl.Series(flat[0::2], dtype=pl.UInt32)),
                    "shape_h": shapes.gather(pl.Series(flat[1::2], dtype=pl.UInt32)),
                }
            )
            .select("r", link_h=pl.struct("act_h", "shape_h").hash(_SEED))
            .group_by("r")
            .agg(n=pl.len(), h=pl.col("link_h").sum())
        )
        got = {r: (n, h) for r, n, h in per_record.iter_rows()}
        wanted = set(health_for)
        return [
            hashlib.blake2b(
                f"{settings_key}|polars {pl.__version__}|{ref}|{ref in wanted}|{got.get(r)}".encode(), digest_size=16
            ).hexdigest()
            for r, ref in enumerate(refs)
        ]

    def members_of(self, links: LinkTable) -> pl.DataFrame:
        """(shape index, member person) of every shape of the link table: made once per run."""
        if self._members is None or self._members[0] is not links:
            code = self.code
            pairs = [(i, code[x]) for i, (_, members) in enumerate(links.shapes) for x in members if x in code]
            frame = pl.DataFrame(
                {"mid": [i for i, _ in pairs], "person": [c for _, c in pairs]},
                schema={"mid": pl.Int32, "person": pl.Int32},
            )
            self._members = (links, frame)
        return self._members[1]

    def _chunk(
        self, acts: Sequence[Activity], offset: int, threads: Mapping[str, str]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        chunk = acts[offset : offset + _CHUNK]
        s, as_of, before, code = self.settings, self.as_of, self.before, self.code
        p_act: list[int] = []
        p_pid: list[int] = []
        for i, a in enumerate(chunk, offset):
            for p in a.participants:
                p_act.append(i)
                p_pid.append(self._pid[id(p)])
        parts = pl.DataFrame({"a": p_act, "pid": p_pid}, schema={"a": pl.Int32, "pid": pl.Int32})
        bounds, first_day = self._bounds, self._first_day
        decay_from = before - timedelta(days=s.kpi.health.window_days)
        opener: list[int] = []
        side: list[int] = []
        day: list[int] = []
        decay_now: list[float] = []
        decay_before: list[float] = []
        t_us = [us(a.time) for a in chunk]
        for a, t in zip(chunk, t_us, strict=True):
            init = a.initiator
            opener.append(code[init.person] if init is not None else code[""])
            side.append(OURS if init is not None and init.internal else THEIRS)
            day.append(first_day + bisect_right(bounds, t) - 1 if bounds[0] <= t < bounds[-1] else -1)
            recent = decay_from <= a.time <= as_of
            decay_now.append(decayed_weight(a.kind, a.time, as_of, s) if recent else 0.0)
            decay_before.append(decayed_weight(a.kind, a.time, before, s) if recent else 0.0)
        thread = self._threads
        activities = pl.DataFrame(
            {
                "a": range(offset, offset + len(chunk)),
                "key": [a.key for a in chunk],
                "kind": [KIND[a.kind] for a in chunk],
                "dir": [DIRECTION[a.direction] for a in chunk],
                "t": t_us,
                "end": [us(a.end) for a in chunk],
                "pending": [a.pending for a in chunk],
                "all_day": [a.all_day for a in chunk],
                "dur": [a.duration_minutes for a in chunk],
                "thread": [
                    thread.setdefault(threads.get(a.key, a.key), len(thread)) if a.kind is Kind.EMAIL else -1
                    for a in chunk
                ],
                "side": side,
                "opener": opener,
                "day": day,
                "decay_now": decay_now,
                "decay_before": decay_before,
            },
            schema_overrides={
                "a": pl.Int32,
                "kind": pl.Int8,
                "dir": pl.Int8,
                "t": pl.Int64,
                "end": pl.Int64,
                "thread": pl.Int32,
                "side": pl.Int8,
                "opener": pl.Int32,
                "day": pl.Int32,
            },
        )
        return activities, parts
