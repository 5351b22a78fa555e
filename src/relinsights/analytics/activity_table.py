"""One run's activities as columns (polars): one row per activity, one per participant, built once as of T.

What the column engine (columnar.py) computes KPIs over, and what record fingerprints are hashed from.
Integer codes name people, addresses and threads within the run (people and addresses in the order of
their names, so sorting by code sorts by name); times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from itertools import repeat

import numpy as np
import polars as pl

from relinsights.analytics.activities import Activity, Kind, Role
from relinsights.analytics.frames import (
    DIRECTION,
    KEY_SEED,
    KIND,
    ROLE,
    ActivityFrames,
    FrameActivities,
    at_us,
    frames_of,
    pair_key,
    run_starts,
    us,
)
from relinsights.analytics.health import HALF_LIFE_DAYS, TREND_DAYS, kind_weight
from relinsights.analytics.kpis import Interaction, series_dates
from relinsights.analytics.matching import LinkTable
from relinsights.analytics.records import RecordRef
from relinsights.analytics.settings import Settings
from relinsights.analytics.spilled import SpilledStrings
from relinsights.analytics.timeutil import as_utc, local_date, start_of_local_day

OURS, THEIRS = 0, 1  # an email's side: sent by us / by the customer (responses.Side)
EMAIL = KIND[Kind.EMAIL]
_SEED = KEY_SEED  # fixed, so a fingerprint is the same in every process
_SEED2 = 0xC0FFEE
_THREAD = "t"  # a settled email's one thread token: this and its thread's number (settle_threads)
_INITIATORS = [ROLE[Role.FROM], ROLE[Role.ORGANIZER]]
# The first of an activity's rows, in rows sorted by activity.
_FIRST_OF_ACTIVITY = pl.col("a").ne_missing(pl.col("a").shift(1))
_KINDS, _DIRECTIONS = list(KIND), list(DIRECTION)
_KEPT = ("kind", "dir", "t", "end", "pending", "all_day", "dur")  # the activities' own columns the table keeps
FINGERPRINT_RECORDS = 5_000  # records whose links a fingerprint step hashes at a time


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def link_rows(links: LinkTable, refs: Sequence[RecordRef]) -> tuple[pl.Series, pl.Series, pl.Series]:
    """The records' links as stored, as columns: each link's record number in `refs`, activity and shape."""
    rows = [links.pairs(ref) for ref in refs]
    joined: array[int] = array("I")
    for row in rows:
        joined.extend(row)
    # Read as numpy's (polars reads an array.array item by item).
    pairs = np.frombuffer(joined, dtype=np.uint32) if joined else np.zeros(0, np.uint32)
    rec = np.repeat(np.arange(len(rows), dtype=np.int32), [len(row) // 2 for row in rows])
    # (in order, and told so: polars groups a sorted key by its runs, 3-5x faster than by hashing, and the
    # KPIs group by record a dozen times a batch)
    return (
        pl.Series(rec).set_sorted(),
        pl.Series(pairs[0::2].astype(np.int32)),
        pl.Series(pairs[1::2].astype(np.int32)),
    )


def token_hashes(tokens: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Two 64-bit hashes of each thread token, of independent seeds (`thread_groups`)."""
    return tokens.hash(_SEED), tokens.hash(_SEED2)


def thread_groups(acts: pl.DataFrame) -> pl.Series:
    """Each email's thread as a number (responses.assign_threads, as columns); null for meetings and calls.

    Emails are joined by a shared conversation id, message id, or a message id one refers to (In-Reply-To,
    References): the threads are the connected components of the email-token graph (`components`)."""
    rows = acts.select("kind", "message_id", "conversations", "reply_to").with_row_index("i")
    emails = rows.filter(pl.col("kind") == EMAIL).with_row_index("j")

    def stars(tokens: pl.DataFrame) -> pl.DataFrame:
        """Each email that names a token joined to one email naming it (any one: the components are the same)."""
        tokens = tokens.drop_nulls()
        # The emails naming a token are found by sorting on its hash, not by grouping the strings (a window
        # over 3 million ids of Exchange's length held 0.4 GB at 2,000,000 activities; this, 0.13). A second,
        # independently seeded hash must agree within each run: where it does not, two ids share the first
        # hash, and the strings themselves are grouped instead.
        h, h2 = token_hashes(tokens.get_column("tok"))
        order = h.arg_sort()
        run = pl.DataFrame({"j": tokens.get_column("j").gather(order), "h": h.gather(order), "h2": h2.gather(order)})
        same = (pl.col("h") == pl.col("h").shift()).fill_null(False)
        if run.select((same & (pl.col("h2") != pl.col("h2").shift())).any()).item():
            return tokens.select("j", root=pl.col("j").min().over("tok")).filter(pl.col("j") != pl.col("root"))
        return run.select("j", root=pl.when(~same).then(pl.col("j")).forward_fill()).filter(
            pl.col("j") != pl.col("root")
        )

    # Conversation ids and message ids are two name spaces: each is starred on its own.
    edges = pl.concat(
        [
            stars(emails.select("j", tok="conversations").explode("tok")),
            stars(pl.concat([emails.select("j", tok="message_id"), emails.select("j", tok="reply_to").explode("tok")])),
        ]
    )
    j, root = (edges.get_column(c).to_numpy().astype(np.int64) for c in ("j", "root"))
    # (set by row: a join back gathered 2,000,000 rows to place 1,900,000)
    thread = pl.Series("thread", components(emails.height, j, root))
    none = pl.repeat(None, acts.height, dtype=pl.Int64, eager=True).alias("thread")
    return none.scatter(emails.get_column("i"), thread)


def components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The connected components of the undirected graph of nodes 0..n-1 and edges (u[k], v[k]): each node's
    component named by its least node. Trees hooked by their roots and flattened, in rounds: each edge
    between two trees hooks the larger root under the smaller, then every node is pointed at its root. A tree
    with an edge out either hooks or is hooked onto, so the trees of a component at least halve each round
    (scipy's csgraph did this in C, but held 26 MiB of library through the whole run; this takes 0.04 s
    for the 977,652 edges of 2,000,000 activities)."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        pu, pv = parent[u], parent[v]  # roots: the last round ended flat
        apart = pu != pv
        if not apart.any():
            return parent
        u, v, pu, pv = u[apart], v[apart], pu[apart], pv[apart]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while not np.array_equal(up := parent[parent], parent):
            parent = up


def decays(ages_us: np.ndarray) -> np.ndarray:
    """health.decay of each age (below 2**53 microseconds), the same bits: numpy's divisions are Python's, and
    each power is Python's own (numpy's power may take other last bits, e.g. with AVX-512). (Here, not in
    health.py, which the daemon loads without numpy.)"""
    exponents = ages_us / 1_000_000 / 86400.0 / HALF_LIFE_DAYS
    return np.fromiter(map(pow, repeat(0.5), exponents.tolist()), np.float64, len(exponents))


def thread_hashes(group: pl.Series, key_h: pl.Series) -> pl.Series:
    """A thread as a fingerprint knows it, stable across runs: the least key hash of its emails (0 where
    `group`, the thread's number, is null: not an email). By numpy's unbuffered minimum (a window over the
    groups took 0.3 s longer at 2,000,000 activities)."""
    email = group.is_not_null()
    out = np.zeros(len(group), dtype=np.uint64)
    if email.any():
        g = group.drop_nulls().to_numpy().astype(np.int64)
        least = np.full(int(g.max()) + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(least, g, key_h.filter(email).to_numpy())
        out[email.to_numpy()] = least[g]
    return pl.Series(out)


def settled_groups(acts: pl.DataFrame) -> pl.Series:
    """`thread_groups` of settled activities (`settle_threads`): each email's thread is the number its one
    token names (the same threads, numbered otherwise), without finding them again."""
    email = pl.col("kind") == EMAIL
    return acts.select(
        pl.when(email).then(pl.col("conversations").list.first().str.slice(len(_THREAD)).cast(pl.Int64))
    ).to_series()


def settle_threads(frames: ActivityFrames) -> ActivityFrames:
    """The same activities, each email's thread tokens (its conversation ids, message id and the ids it replies
    to) replaced by one that names its thread ("t<n>", n this run's), non-emails as they were.

    An email's thread is its connected component of the token graph, so both engines (`thread_groups`,
    responses.assign_threads) find exactly the threads they found before. The ids themselves are needed by
    nothing after the build: with Exchange Online's (80 characters and more) they were a third of the
    activity frames, about 0.45 GB held through matching, the table and the KPIs of 2,000,000 activities."""
    return ActivityFrames(settled_acts(frames.acts), frames.parts, settled=True)


def settled_acts(acts: pl.DataFrame) -> pl.DataFrame:
    """`settle_threads` of the activities alone, in any order (ActivityFrames.combine settles before it sorts)."""
    if acts.height == 0:
        return acts
    group = thread_groups(acts)
    email = pl.col("kind") == EMAIL
    return acts.with_columns(
        message_id=pl.when(email).then(pl.lit(None, dtype=pl.String)).otherwise(pl.col("message_id")),
        conversations=pl.when(email)
        .then(pl.concat_list(pl.concat_str(pl.lit(_THREAD), pl.lit(group).cast(pl.String))))
        .otherwise(pl.col("conversations")),
        reply_to=pl.when(email).then(pl.lit([], dtype=pl.List(pl.String))).otherwise(pl.col("reply_to")),
    )


# Participant rows hashed at a time: polars encodes a struct's rows to hash them, and all of a year's
# participants at once were 0.26 GB more (2,000,000 activities), the activity table's highest place.
HASH_ROWS = 500_000


def _participant_hashes(parts: pl.DataFrame) -> pl.Series:
    """What a fingerprint knows of each participant (`p_h`), stable across runs (the table's codes are not)."""
    # (people and addresses hashed as strings, as they were before the frames held them as categoricals: the
    # fingerprints stored by earlier runs stay those of the same inputs)
    text = [pl.col(c).cast(pl.String) for c in ("person", "address")]
    hashed = pl.struct(text[0], "internal", "role", text[1], "attended").hash(_SEED).alias("p_h")
    return pl.concat(
        [parts.slice(i, HASH_ROWS).select(hashed).to_series() for i in range(0, max(parts.height, 1), HASH_ROWS)]
    )


class ActivityTable:
    """One run's activities as columns (one row per activity, one per participant), built once as of T."""

    def __init__(
        self,
        frames: ActivityFrames,
        as_of: datetime,
        settings: Settings,
        *,
        identities: Mapping[str, str],
        acts: Sequence[Activity] | None = None,
        threads: Mapping[str, str] | None = None,
        release_parts: bool = False,
    ) -> None:
        """Over activity frames. `acts` is what links point into (default: the frames' own activities);
        `threads` as assign_threads gives them (default: found here, over these activities).
        release_parts=True lets the frames' participants go once the table has its own (frames.release_parts:
        the frames' activities are not to be asked for after)."""
        self.as_of, self.settings = as_utc(as_of), settings
        self.before = self.as_of - timedelta(days=TREND_DAYS)
        self.acts = acts if acts is not None else FrameActivities(frames)
        self.identities = identities
        self._shapes: tuple[LinkTable, pl.DataFrame, ReasonTuples] | None = None
        self._parts_released = False
        self._columns(frames, threads, release_parts)

    @classmethod
    def of_activities(
        cls,
        acts: Sequence[Activity],
        as_of: datetime,
        settings: Settings,
        *,
        identities: Mapping[str, str],
        threads: Mapping[str, str] | None = None,
    ) -> ActivityTable:
        """Over `Activity` objects (tests, and records given as Link objects)."""
        return cls(frames_of(acts), as_of, settings, identities=identities, acts=acts, threads=threads)

    @cached_property
    def index(self) -> dict[int, int]:
        """Activity identity -> row, for links given as Link objects."""
        return {id(a): i for i, a in enumerate(self.acts)}

    def _columns(self, frames: ActivityFrames, threads: Mapping[str, str] | None, release_parts: bool) -> None:
        s, identities = self.settings, self.identities
        # People as integer codes in the order of their names, so sorting by code sorts by name.
        # (unique in order: polars finds them in half the time of its unordered unique)
        # (as columns: in Python, a set, a sort and a dict of every person held the interpreter lock 0.8 s at
        # 2,000,000 activities; polars sorts strings by their UTF-8 bytes, which is Python's code point order)
        persons = frames.parts.get_column("person").unique(maintain_order=True)
        text = persons.cast(pl.String)
        who = text.replace(list(identities), list(identities.values())) if identities else text
        names = pl.concat([text, who, pl.Series([""])]).unique().sort()
        self.names = names.to_list()
        self.code = code = dict(zip(self.names, range(len(self.names)), strict=True))
        distinct = frames.parts.get_column("address").drop_nulls().unique(maintain_order=True)
        self.addresses = distinct.cast(pl.String).sort().to_list()
        # (keyed as the participant rows hold them: frames.PERSON)
        coded = pl.DataFrame({"name": names, "code": pl.int_range(names.len(), dtype=pl.Int32, eager=True)}).lazy()
        people = (
            pl.DataFrame([persons.alias("person"), text.alias("text"), who.alias("name")])
            .lazy()
            .join(coded, left_on="text", right_on="name", how="left", maintain_order="left")
            .rename({"code": "pc"})
            .join(coded, on="name", how="left", maintain_order="left")
            .select("person", "pc", who="code")
            .collect()
        )
        addresses = pl.DataFrame(
            {"address": self.addresses, "addr": range(len(self.addresses))},
            schema={"address": frames.parts.schema["address"], "addr": pl.Int32},
        )
        # The codes set beside the participant rows (a lazy join yields only them): joining the rows themselves
        # gathered every column twice, with the year's participants alive (this step's peak, 1,352 MiB at
        # 2,000,000 activities).
        codes = (
            frames.parts.lazy()
            .select("person", "address")
            .join(people.lazy(), on="person", how="left", maintain_order="left")
            .join(addresses.lazy(), on="address", how="left", maintain_order="left")
            .select("pc", "addr", "who")
            .collect()
        )
        self.parts = frames.parts.select(
            "a",
            codes.get_column("pc").alias("person"),
            "role",
            "internal",
            "attended",
            codes.get_column("addr"),
            codes.get_column("who"),
            _participant_hashes(frames.parts),
        )
        del codes
        if release_parts:
            frames.release_parts()
        # From the table's own participant rows (people as codes; in the frames' order: grouped by activity,
        # each activity's in order), not the frames' strings joined to the codes again.
        # An interaction's internal party (kpis.interaction_of): the activity's first internal participant.
        # (an activity's first row is where `a` changes, the rows being sorted by it: is_first_distinct hashes
        # every row, 0.3 s for the year's participants at 2,000,000 activities)
        internal = self.parts.select("a", "person", "internal").filter(pl.col("internal"))
        party = internal.filter(_FIRST_OF_ACTIVITY).select("a", party="person")
        del internal
        # The initiator is an activity's first participant, when it is a sender or organizer.
        first = (
            self.parts.lazy()
            .filter(_FIRST_OF_ACTIVITY & pl.col("role").is_in(_INITIATORS))
            .select("a", opener="person", init_internal="internal")
            .collect()
        )
        # The series' local days by their first instants (zoneinfo's), so a time's day is a bisection.
        days = series_dates(local_date(self.as_of, s.zone))
        bounds = pl.Series([us(start_of_local_day(d, s.zone)) for d in (*days, days[-1] + timedelta(days=1))])
        # Engagement weights, by the core's own powers (`decays`), for the activities in the health windows only
        # (each computed per activity: a unique of their (kind, time) pairs and a join back cost more than the
        # few repeated times saved).
        t, kind = (frames.acts.get_column(c).to_numpy() for c in ("t", "kind"))
        window = us(self.before - timedelta(days=s.kpi.health.window_days)), us(self.as_of)
        recent = np.flatnonzero((t >= window[0]) & (t <= window[1]))
        weight = np.array([kind_weight(k, s) for k in _KINDS], dtype=np.float64)[kind[recent]]
        weights = []
        for at_time in (self.as_of, self.before):
            column = np.zeros(len(t), dtype=np.float64)
            column[recent] = weight * decays(us(at_time) - t[recent])
            weights.append(pl.Series(column))
        del t, kind, recent, weight, window
        # (only what the table keeps: the joins below gather every column they are given)
        acts = frames.acts.select(pl.int_range(frames.acts.height, dtype=pl.Int32).alias("a"), *_KEPT)
        if threads is None:
            acts = acts.with_columns(group=(settled_groups if frames.settled else thread_groups)(frames.acts))
        else:  # as given (the per-record reference's own threads); an email not in them is a thread of its own
            named = pl.DataFrame(
                {"key": list(threads), "tname": list(threads.values())}, schema={"key": pl.String, "tname": pl.String}
            )
            acts = (
                acts.with_columns(frames.key_column())
                .join(named, on="key", how="left", maintain_order="left")
                .with_columns(
                    group=pl.when(pl.col("kind") == EMAIL)
                    .then(pl.coalesce("tname", "key").rank("dense").cast(pl.Int64))
                )
                .drop("key", "tname")
            )
        first_day = days[0].toordinal()
        at = bounds.search_sorted(acts.get_column("t"), side="right").cast(pl.Int32)
        # Keys are only ever compared and fingerprinted: the activity's place in (time, key) order and the key's
        # hash stand in; the keys themselves are read for the interactions shown (`interaction`).
        self.keys: pl.Series | SpilledStrings = frames.keys if frames.keys is not None else frames.acts.get_column("key")
        order = frames.key_order()
        key_h = order.get_column("key_h")

        def per_activity(rows: pl.DataFrame, column: str) -> pl.Series:
            """`column` of `rows` (at most one per activity) for every activity, null where it has none."""
            empty = pl.repeat(None, acts.height, dtype=rows.schema[column], eager=True)
            return empty.scatter(rows.get_column("a"), rows.get_column(column)).alias(column)

        self.activities = acts.with_columns(
            per_activity(first, "opener"),
            per_activity(first, "init_internal"),
            per_activity(party, "party"),
            decay_now=weights[0],
            decay_before=weights[1],
            at=at,
        ).select(
            "a",
            *_KEPT,
            "decay_now",
            "decay_before",
            # Thread codes are this run's; a fingerprint needs the thread's own (stable) name.
            thread=pl.col("group").fill_null(-1).cast(pl.Int32),
            thread_h=thread_hashes(acts.get_column("group"), key_h),
            side=pl.when(pl.col("init_internal").fill_null(False))
            .then(pl.lit(OURS))
            .otherwise(pl.lit(THEIRS))
            .cast(pl.Int8),
            opener=pl.col("opener").fill_null(code[""]).cast(pl.Int32),
            party=pl.col("party").fill_null(-1).cast(pl.Int32),
            day=pl.when((pl.col("at") >= 1) & (pl.col("at") < bounds.len()))
            .then(pl.col("at") - 1 + first_day)
            .otherwise(pl.lit(-1))
            .cast(pl.Int32),
            krank=order.get_column("krank"),
            key_h=key_h,
        )

    @cached_property
    def link_columns(self) -> pl.DataFrame:
        """What the KPIs read of a linked activity, by row (gathered for each batch of links)."""
        return self.activities.drop("a", "key_h")

    @cached_property
    def _interactions(self) -> pl.DataFrame:
        return self.activities.select("t", "kind", "dir", "party")

    def moments(self, rows: Sequence[int]) -> list[tuple[Kind, datetime, datetime]]:
        """(kind, time, end) of these activities: what fingerprint.stable_until reads of them."""
        picked = self.activities.select("kind", "t", "end")[list(rows)]
        return [(_KINDS[kind], at_us(t), at_us(end)) for kind, t, end in picked.iter_rows()]

    def interactions(self, picked: Mapping[int, int]) -> dict[int, Interaction]:
        """kpis.interaction_of of each activity `picked` (by record), from the columns (no Activity object is
        made; their rows gathered at once, not read one by one: 3 us a row)."""
        rows = self._interactions[list(picked.values())].iter_rows()
        names, keys = self.names, self.keys
        return {
            r: Interaction(
                at_us(t), _KINDS[kind], _DIRECTIONS[direction], str(keys[a]), names[party] if party >= 0 else None
            )
            for (r, a), (t, kind, direction, party) in zip(picked.items(), rows, strict=True)
        }

    # Views of the participants every batch of records looks up, indexed once by activity (`a` is a row
    # number): a batch gathers its rows instead of joining, so it never hashes the run's whole year again.

    @cached_property
    def _internal_attending(self) -> _ByActivity:
        """Our people who took part, by activity: (person, address) (top contacts, ours)."""
        return _ByActivity(self.parts.filter(pl.col("internal") & pl.col("attended")), ["person", "addr"], self.size)

    @cached_property
    def _internal_roles(self) -> tuple[np.ndarray, np.ndarray]:
        """How many of our people wrote each activity, and how many were on it otherwise (an email's time
        spent by the team): counts by activity, not each person's row."""
        internal = self.parts.filter(pl.col("internal"))
        a = internal.get_column("a").to_numpy()
        wrote = (internal.get_column("role") == ROLE[Role.FROM]).to_numpy()
        return np.bincount(a[wrote], minlength=self.size), np.bincount(a[~wrote], minlength=self.size)

    @cached_property
    def _people_index(self) -> _ByKey:
        """Every participant by (activity, person)."""
        return _ByKey(self.parts, ["role", "attended", "addr", "who"])

    @cached_property
    def _recipients(self) -> _ByKey:
        """The To/Cc recipients by (activity, person)."""
        return _ByKey(self.parts.filter(pl.col("role").is_in([ROLE[Role.TO], ROLE[Role.CC]])), [])

    def warm(self, links: LinkTable, release_parts: bool = False) -> None:
        """Build every look-up the KPIs of `links` read, so that threads can then share the table read-only.

        release_parts=True then lets the participant rows go: the look-ups hold what the KPIs read of them, and
        the rows themselves only make fingerprints, which are to be made before (the KPI job: 0.12 GB of the
        KPIs' peak at 2,000,000 activities)."""
        for view in (
            self.link_columns,
            self._interactions,
            self._internal_attending,
            self._internal_roles,
            self._people_index,
            self._recipients,
        ):
            assert view is not None
        self.shapes_of(links)
        if release_parts:
            self.parts, self._parts_released = self.parts.clear(), True

    @property
    def size(self) -> int:
        return self.activities.height

    def internal_attending(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (with `a`) once per our person who took part in the activity, with person and address."""
        return self._internal_attending.expand(rows)

    def internal_attending_count(self, a: pl.Series) -> pl.Series:
        """How many of our people took part in each activity (a meeting's time spent by the team)."""
        return self._internal_attending.counts(a)

    def internal_writers_readers(self, a: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """For each activity `a`: how many of our people wrote it, how many were on it otherwise."""
        idx = a.to_numpy()
        wrote, other = self._internal_roles
        return wrote[idx], other[idx]

    def participants(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (with `a`, `person`) that name a participant of the activity, with its role, attendance,
        address and identity (an inner join on (a, person), as lookups)."""
        return self._people_index.find(rows, "a", "person")

    def is_recipient(self, a: pl.Series, person: pl.Series) -> pl.Series:
        """Whether each `person` was a To/Cc recipient of activity `a` (false where `a` is null)."""
        return self._recipients.has(a, person)

    def fingerprints(
        self, links: LinkTable, refs: Sequence[RecordRef], health_for: Collection[RecordRef], settings_key: str
    ) -> list[str]:
        """Each record's fingerprint (compute/fingerprint.py: what it covers and why), in `refs`' order.

        A hash of every field of every linked activity the KPIs read (its participants included), of each
        link's reasons and members with their identities, of whether the record gets health, and of the
        settings; polars' hashes are stable within one polars version, which `settings_key` includes."""
        if self._parts_released:
            raise RuntimeError("fingerprints are made before warm(release_parts=True) lets the participant rows go")
        # Sets (an activity's participants, a record's links) are hashed as the wrapping sum of their members'
        # 64-bit hashes: no sorting, no lists, and any one change moves the sum.
        # (each activity's rows a run, the rows sorted by activity: summed by numpy, set by row, not grouped by
        # polars and joined back, 0.2 s at 2,000,000 activities; null for an activity of no participant)
        a, p_h = self.parts.get_column("a").to_numpy(), self.parts.get_column("p_h").to_numpy()
        starts = run_starts(a)
        sums, counts = np.add.reduceat(p_h, starts), np.diff(starts, append=len(a))
        height = self.activities.height
        by_activity = {
            name: pl.repeat(None, height, dtype=dtype, eager=True)
            .scatter(a[starts], pl.Series(values, dtype=dtype))
            .alias(name)
            for name, dtype, values in (("p_h", pl.UInt64, sums), ("n_people", pl.UInt32, counts))
        }
        del a, p_h, starts, sums, counts
        columns = ("key_h", "kind", "dir", "t", "end", "dur", "all_day", "pending", "thread_h")
        digest = self.activities.select(
            act_h=pl.struct(*columns, by_activity["p_h"], by_activity["n_people"]).hash(_SEED)
        ).to_series()
        shapes = pl.Series(
            [
                _h64(repr((reasons, sorted((m, self.identities.get(m, m)) for m in members))))
                for reasons, members in links.shapes
            ],
            dtype=pl.UInt64,
        )
        # A range of records' links at a time: all of them at once were the run's peak after the build
        # (2,000,000 activities: 0.27 GB over what came before).
        got: dict[int, tuple[int, int]] = {}
        for first in range(0, len(refs), FINGERPRINT_RECORDS):
            rec, act, shape = link_rows(links, refs[first : first + FINGERPRINT_RECORDS])
            per_record = (
                pl.DataFrame({"r": rec + first, "act_h": digest.gather(act), "shape_h": shapes.gather(shape)})
                .select("r", link_h=pl.struct("act_h", "shape_h").hash(_SEED))
                .group_by("r")
                .agg(n=pl.len(), h=pl.col("link_h").sum())
            )
            got.update((r, (n, h)) for r, n, h in per_record.iter_rows())
            del rec, act, shape, per_record
        wanted = set(health_for)
        return [
            hashlib.blake2b(
                f"{settings_key}|polars {pl.__version__}|{ref}|{ref in wanted}|{got.get(r)}".encode(), digest_size=16
            ).hexdigest()
            for r, ref in enumerate(refs)
        ]

    def shapes_of(self, links: LinkTable) -> tuple[pl.DataFrame, ReasonTuples]:
        """The link table's shapes as the KPIs read them, made once per run: (shape index, member person) rows
        (`member_rows`), and the shapes' reasons as `reason_tuples` numbers them."""
        if self._shapes is None or self._shapes[0] is not links:
            members = member_rows(self.code, [m for _, m in links.shapes])
            self._shapes = (links, members, reason_tuples([reasons for reasons, _ in links.shapes]))
        return self._shapes[1], self._shapes[2]


def member_rows(code: Mapping[str, int], member_sets: Sequence[Collection[str]]) -> pl.DataFrame:
    """(`mid`: the set's index, `person`: a member's code) of each set of members. Members are people of the
    activity, so each has a code; one that had none could match no one."""
    pairs = [(m, code[x]) for m, members in enumerate(member_sets) for x in members if x in code]
    return pl.DataFrame(
        {"mid": [m for m, _ in pairs], "person": [c for _, c in pairs]}, schema={"mid": pl.Int32, "person": pl.Int32}
    )


# Each shape's tuple of reasons as a number (an array by shape), and the distinct tuples by number.
ReasonTuples = tuple[np.ndarray, list[tuple[str, ...]]]


def reason_tuples(reasons: Sequence[tuple[str, ...]]) -> ReasonTuples:
    """Links' reasons, numbered by tuple: the shapes (one per distinct reasons and members) share a few."""
    numbers: dict[tuple[str, ...], int] = {}
    of = np.fromiter((numbers.setdefault(x, len(numbers)) for x in reasons), np.int64, len(reasons))
    return of, list(numbers)


class _ByActivity:
    """Rows grouped by activity: each activity's rows are a slice (offsets by `a`)."""

    def __init__(self, rows: pl.DataFrame, columns: list[str], size: int) -> None:
        ordered = rows.sort("a")
        self.columns = ordered.select(columns)
        counts = np.bincount(ordered.get_column("a").to_numpy(), minlength=size)
        self.starts = np.concatenate([[0], np.cumsum(counts)])

    def counts(self, a: pl.Series) -> pl.Series:
        idx = a.to_numpy()
        return pl.Series(self.starts[idx + 1] - self.starts[idx], dtype=pl.Int64)

    def expand(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Each row repeated once per row of its activity, side by side with it (an inner join on a)."""
        idx = rows.get_column("a").to_numpy()
        lo = self.starts[idx]
        n = self.starts[idx + 1] - lo
        which = np.repeat(np.arange(len(idx)), n)
        # Row i's k-th row of its activity is at lo[i] + k: k counts up from 0 within each repeat.
        offsets = np.arange(len(which)) - np.repeat(np.cumsum(n) - n, n)
        at = np.repeat(lo, n) + offsets
        return pl.concat([rows[which], self.columns[at]], how="horizontal")


class _ByKey:
    """Rows by (activity, person), sorted, looked up by binary search."""

    def __init__(self, rows: pl.DataFrame, columns: list[str]) -> None:
        # Sorted stably, then the first of each key kept: the rows come grouped by activity, so the sort has
        # little to do (0.19 s for 4,948,139 participants, against 0.65 s for a unique and then a sort).
        keyed = rows.select(*columns, k=pair_key(pl.col("a"), pl.col("person"))).sort("k", maintain_order=True)
        keyed = keyed.filter(pl.col("k") != pl.col("k").shift(1, fill_value=-1))  # (keys are never negative)
        self.keys = keyed.get_column("k").to_numpy()
        self.columns = keyed.drop("k")

    def _at(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each key's row, whether it is there)."""
        if not len(self.keys):
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        # Searched in sorted order (about 6x faster: the searches walk the keys in step), then put back. (A
        # search within each activity's own rows, without the sort, took half the time alone, and made the
        # KPI step no faster on its threads.)
        order = np.argsort(keys)  # (equal keys find the same row: no need for a stable sort, 2.5x slower)
        idx = np.empty(len(keys), np.int64)
        idx[order] = np.searchsorted(self.keys, keys[order])
        idx = np.minimum(idx, len(self.keys) - 1)
        return idx, self.keys[idx] == keys

    def find(self, rows: pl.DataFrame, a: str, person: str) -> pl.DataFrame:
        """`rows` whose (a, person) is here, side by side with what is kept of it (an inner join)."""
        idx, found = self._at(rows.select(pair_key(pl.col(a), pl.col(person))).to_series().to_numpy())
        return pl.concat([rows.filter(pl.Series(found)), self.columns[idx[found]]], how="horizontal")

    def has(self, a: pl.Series, person: pl.Series) -> pl.Series:
        """Whether each (a, person) is here (false where a is null)."""
        keys = pl.select(pair_key(pl.lit(a), pl.lit(person))).to_series()
        _, found = self._at(keys.fill_null(-1).to_numpy())
        return pl.Series(found & keys.is_not_null().to_numpy())
