"""Activities as two polars frames (one row per activity, one per participant): how a run holds a year of them.

The column pipeline builds Graph mail and calendars straight into these frames (mail_frames.py,
meeting_frames.py, with what they share here: `SourceRows`, the read rows handed to a builder; `people_of`,
`split_keys`, `as_python`), matches them as joins (match_frames.py) and computes KPIs over them
(activity_table.py, columnar.py), so a run never makes one Python object per email. `frames_of` turns
`Activity` objects (calls, CRM copies, tests) into the same frames; `FrameActivities` turns rows back into
`Activity` objects, one when asked for.

`acts` is sorted by (time, key) and row i is activity i; `parts` is grouped by activity in row order and
lists each activity's participants in their order (the initiator first). Times are integer microseconds
since the epoch (UTC). Record references (`regarding`, a participant's `party`) are their `str()`:
"contact:<id>". A run settles its threads right after the build (activity_table.settle_threads): from then
on an email's `conversations` is one token naming its thread, its `message_id` null, its `reply_to` empty.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import overload

import numpy as np
import polars as pl

from relinsights.analytics.activities import Activity, Direction, Kind, Participant, Role, resolve_address
from relinsights.analytics.parties import PartyKind, PartyRules, canonical_address
from relinsights.analytics.records import Entity, RecordRef
from relinsights.analytics.spilled import SpilledStrings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KIND = {Kind.EMAIL: 0, Kind.MEETING: 1, Kind.CALL: 2}
DIRECTION = {Direction.OUTGOING: 0, Direction.INCOMING: 1}
ROLE = {r: i for i, r in enumerate(Role)}
_KINDS, _DIRECTIONS, _ROLES = list(KIND), list(DIRECTION), list(ROLE)

ACT_SCHEMA = pl.Schema(
    {
        "key": pl.String(),
        "kind": pl.Int8(),
        "dir": pl.Int8(),
        "t": pl.Int64(),
        "end": pl.Int64(),
        "dur": pl.Float64(),
        "all_day": pl.Boolean(),
        "pending": pl.Boolean(),
        "message_id": pl.String(),
        "conversations": pl.List(pl.String()),
        "reply_to": pl.List(pl.String()),
        "regarding": pl.List(pl.String()),
    }
)
# People and addresses as categoricals (polars' global mapping: the builders', matching's and the table's agree):
# a participant's strings are few distinct values over millions of rows, and as strings every row held a
# copy (2,000,000 activities: 312 MiB of the frames, 72 as categoricals).
PERSON = pl.Categorical()
# The database read's categories (compute/read_process.py writes them, CATEGORIES): the mail's addresses as the
# read gives them, until the build has resolved them. Named, not the global mapping: they go with the last
# column of them (the global mapping keeps every value until the process ends).
CODED = pl.Categorical(pl.Categories("read", "relinsights"))
PART_SCHEMA = pl.Schema(
    {
        "a": pl.Int32(),
        "person": PERSON,
        "internal": pl.Boolean(),
        "role": pl.Int8(),
        "address": PERSON,
        "party": pl.String(),
        "attended": pl.Boolean(),
    }
)


def us(t: datetime) -> int:
    """An aware time as integer microseconds since the epoch."""
    return us_delta(t - _EPOCH)


def us_delta(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def pair_key(a: pl.Expr, person: pl.Expr) -> pl.Expr:
    """(activity, person), or any two numbers in [0, 2**31), as one 64-bit key that sorts as the pair does."""
    return a.cast(pl.Int64) * (1 << 32) + person.cast(pl.Int64)


def sorted_order(frame: pl.DataFrame, *columns: str) -> pl.Series:
    """The frame's row numbers in the order of these columns. Where they are integers, none null or negative,
    whose bits fit in 63 together, by one 64-bit key of them packed (polars sorts several columns as rows of
    bytes: the KPIs' turns by three took 1.5-2x as long, the mail build's copies by two 1.1-1.2 s against
    0.15-0.17 s with the places made by scatter); else by the columns themselves."""
    values = [frame.get_column(c) for c in columns]
    if frame.height and all(v.dtype.is_integer() and not v.null_count() and not (v < 0).any() for v in values):
        widths = [max(int(v.to_numpy().max()), 1).bit_length() for v in values]
        if sum(widths) <= 63:
            shifts = np.cumsum([0, *widths[:0:-1]])[::-1].tolist()  # (the last column in the lowest bits)
            key = pl.sum_horizontal(pl.col(c).cast(pl.Int64) * (1 << s) for c, s in zip(columns, shifts, strict=True))
            return frame.select(key.arg_sort()).to_series()
    return frame.select(pl.arg_sort_by(*columns)).to_series()


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts, in values grouped by them (sorted, say): the first row, and each
    row unlike the one before."""
    if not len(values):
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))


def repeated(values: pl.Series) -> pl.Series:
    """Whether each value (of a column without nulls) occurs more than once: found next to its equals in sorted
    order (polars' is_duplicated hashes every value: 0.25 s against 0.12 for 2,279,293 64-bit hashes)."""
    order = values.arg_sort()
    ordered = values.gather(order).to_numpy()
    same = np.zeros(len(ordered), dtype=np.bool_)
    if len(ordered) > 1:
        equal = ordered[1:] == ordered[:-1]
        same[1:] |= equal
        same[:-1] |= equal
    out = np.empty(len(ordered), dtype=np.bool_)
    out[order.to_numpy()] = same
    return pl.Series(values.name, out)


def at_us(micros: int) -> datetime:
    """The UTC time `micros` microseconds after the epoch (the inverse of `us`)."""
    return _EPOCH + timedelta(microseconds=micros)


def record_ref(text: str) -> RecordRef:
    """The inverse of str(RecordRef)."""
    entity, _, rid = text.partition(":")
    return RecordRef(Entity(entity), rid)


@dataclass
class SourceRows:
    """Source rows of one kind as frames (a subclass names them; its first frame has a row per copy).

    A year of mail or calendars is a computation's largest input, read straight into columns (the database
    driver's rows, never one Python object per row). A builder takes the frames out of the holder it is
    given (`take`), so that, given the only holder, it frees them as soon as it has what it needs."""

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).height)

    def take(self) -> tuple[pl.DataFrame, ...]:
        """The frames, in field order; this holder left empty."""
        empty = type(self)()
        rows = tuple(getattr(self, f.name) for f in fields(self))
        for f in fields(self):
            setattr(self, f.name, getattr(empty, f.name))
        return rows


# The ASCII characters Python's str.strip() removes: polars' (Rust's) strip_chars() keeps \x1c-\x1f.
PY_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def unbracketed(v: pl.Expr) -> pl.Expr:
    """Python's `v.strip().strip("<>").strip().lower()` of ASCII values (a message id's, an address's first
    steps)."""
    return v.str.strip_chars(PY_SPACE).str.strip_chars("<>").str.strip_chars(PY_SPACE).str.to_lowercase()


def as_python(values: pl.Series, columns: Callable[[pl.Expr], pl.Expr], python: Callable[[str], str]) -> pl.Series:
    """`python(v)` of each value (null stays null). `columns` does the same as column operations, exactly for
    ASCII (strip with PY_SPACE); values beyond ASCII go through `python` itself: Python's Unicode whitespace
    and case tables differ from Rust's for a few characters, and keys must be the object builder's exactly."""
    out = pl.select(columns(pl.lit(values))).to_series().alias(values.name)
    # (a value beyond ASCII has more bytes than characters: 8x faster than a regular expression)
    odd = (values.str.len_bytes() != values.str.len_chars()).fill_null(False)
    if odd.any():
        out = out.scatter(odd.arg_true(), [python(v) for v in values.filter(odd).to_list()])
    return out


def split_keys(keyed: pl.DataFrame, keys: Collection[str], column: str = "key") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the rows whose key (`column`) is not among `keys`, the rows whose key is): the copies a column builder
    takes, and those of keys a CRM copy also has, which the object builder merges with it."""
    if not keys:
        return keyed, keyed.clear()
    shared = pl.col(column).is_in(pl.Series(list(keys), dtype=pl.String).implode())
    theirs = keyed.filter(shared)
    return (keyed.filter(~shared), theirs) if theirs.height else (keyed, theirs)


# A resolved address's side, as `people_of` codes it.
SIDE_INTERNAL, SIDE_EXTERNAL, SIDE_IGNORED = 0, 1, 2
_SIDES = {PartyKind.INTERNAL: SIDE_INTERNAL, PartyKind.EXTERNAL: SIDE_EXTERNAL}


def people_of(rules: PartyRules, raw: pl.Series) -> pl.DataFrame:
    """Distinct raw addresses -> (raw, person, kind, address): the object builder's `resolve_address` of each
    (person null when a value is not an address; kind a SIDE_ code).

    As column operations for ASCII values (exactly the resolver's steps: `_ascii_people`); values beyond
    ASCII, and the few that canonical_address would change again, through the resolver itself."""
    values = raw.drop_nulls().unique(maintain_order=True)  # (twice as fast as unordered)
    people = _ascii_people(rules, values)
    python = people.get_column("python")
    if python.any():
        at = python.arg_true()
        whos = [resolve_address(rules, v) for v in values.gather(at).to_list()]
        people = people.with_columns(
            people.get_column("person").scatter(at, [w.person if w else None for w in whos]),
            people.get_column("kind").scatter(at, [_SIDES.get(w.kind, SIDE_IGNORED) if w else None for w in whos]),
            people.get_column("address").scatter(at, [w.address if w else None for w in whos]),
        )
    return people.drop("python")


# Python's \s over ASCII (Rust's leaves out \x1c-\x1f), and parties.canonical_domain's DNS name.
_ASCII_SPACE = "[\t\n\x0b\x0c\r\x1c-\x1f ]"
_LABEL = "[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_DNS_NAME = f"^{_LABEL}(?:\\.{_LABEL})+$"


def _ascii_people(rules: PartyRules, values: pl.Series) -> pl.DataFrame:
    """people_of's columns for every value, as columns: parties.canonical_address, then PartyRules.classify
    and PartyRules.person, step for step. `python` marks the values this cannot resolve exactly."""
    users = rules.user_addresses()
    known = pl.DataFrame(
        {
            "address": [a for a, _ in users],
            "opted_out": [u.opted_out for _, u in users],
            "user": [canonical_address(u.address) or a for a, u in users],
        },
        schema={"address": pl.String, "opted_out": pl.Boolean, "user": pl.String},
    )
    v = pl.col("v")
    frame = pl.DataFrame({"raw": values}).with_columns(
        ascii=pl.col("raw").str.len_bytes() == pl.col("raw").str.len_chars(),
        v=unbracketed(pl.col("raw")).str.strip_prefix("mailto:"),
    )
    parts = v.str.split_exact("@", 1)
    frame = frame.with_columns(
        local=parts.struct.field("field_0"), domain=parts.struct.field("field_1").str.strip_chars(".")
    )
    valid = (
        pl.col("ascii")
        & (v.str.count_matches("@", literal=True) == 1)
        & ~v.str.contains(_ASCII_SPACE)
        & (pl.col("local") != "")
        & pl.col("domain").str.contains(_DNS_NAME)
    )
    frame = frame.with_columns(
        valid=valid.fill_null(False), address=pl.concat_str(pl.col("local"), pl.lit("@"), pl.col("domain"))
    )
    # canonical_address of an address it made is that address again, unless a "<", ">" or "mailto:" led it
    # (it strips both brackets from both ends, and "mailto:" once: "mailto:>x@y.com" makes ">x@y.com").
    again = pl.col("address").str.contains("^(?:[<>]|mailto:)")
    frame = frame.join(known, on="address", how="left", maintain_order="left")
    excluded = pl.Series([], dtype=pl.String)
    if rules.excluded_domains:  # (a domain and every parent of it: each distinct domain once)
        domains = frame.filter(pl.col("valid")).get_column("domain").unique().to_list()
        excluded = pl.Series([d for d in domains if rules.excluded_domain(d)], dtype=pl.String)
    local = pl.col("local")
    ignored = pl.Series(sorted(rules.ignored_localparts), dtype=pl.String).implode()
    kind = (
        pl.when(pl.col("opted_out").fill_null(False))
        .then(pl.lit(SIDE_IGNORED))
        .when(
            pl.col("address").is_in(pl.Series(sorted(rules.excluded_addresses), dtype=pl.String).implode())
            | pl.col("domain").is_in(excluded.implode())
            | local.is_in(ignored)
            | local.str.extract("^([^+]*)", 1).is_in(ignored)
        )
        .then(pl.lit(SIDE_IGNORED))
        .when(
            pl.col("user").is_not_null()
            | pl.col("domain").is_in(pl.Series(sorted(rules.internal_domains), dtype=pl.String).implode())
        )
        .then(pl.lit(SIDE_INTERNAL))
        .otherwise(pl.lit(SIDE_EXTERNAL))
    )
    ok = pl.col("valid")
    return frame.select(
        "raw",
        person=pl.when(ok).then(
            pl.when(pl.col("user").is_not_null() & (kind == SIDE_INTERNAL))
            .then(pl.col("user"))
            .otherwise(pl.col("address"))
        ),
        kind=pl.when(ok).then(kind).cast(pl.Int8),
        address=pl.when(ok).then(pl.col("address")),
        python=~pl.col("ascii") | (ok & again),
    )


KEY_SEED = 0x5EED  # fixed, so a key's hash (and every fingerprint made of it) is the same in every process


@dataclass(frozen=True)
class ActivityFrames:
    acts: pl.DataFrame  # ACT_SCHEMA, sorted by (t, key): row i is activity i
    parts: pl.DataFrame  # PART_SCHEMA, grouped by activity in row order, each activity's participants in order
    # Each email's thread ids replaced by one token naming its thread (activity_table.settle_threads).
    settled: bool = False
    # The keys, when kept in a file (`combine`'s spill_keys): `acts` then holds what is read of them in bulk,
    # their hashes and order (`key_order`), instead of their column.
    keys: SpilledStrings | None = None

    def __len__(self) -> int:
        return self.acts.height

    @staticmethod
    def empty() -> ActivityFrames:
        return ActivityFrames(pl.DataFrame(schema=ACT_SCHEMA), pl.DataFrame(schema=PART_SCHEMA))

    def compacted(self) -> ActivityFrames:
        """The same frames, each string in a buffer of its own frames' making.

        A polars string is a view into a shared buffer, which lives as long as any view into it: the
        builders' joins and gathers leave the frames' people, addresses and keys pointing into the buffers
        of the rows they were read or resolved from, most of whose strings no later step needs (2,000,000
        activities: 0.3 GB more held from matching to the end of a run)."""

        fresh = pl.col(pl.String).cast(pl.Binary).cast(pl.String)
        return replace(self, acts=self.acts.with_columns(fresh), parts=self.parts.with_columns(fresh))

    def key_order(self) -> pl.DataFrame:
        """(key_h, krank) of each activity: its key's hash (fingerprints) and its place in (time, key) order
        (krank; keys are only ever compared and hashed, so these two stand in for them)."""
        if self.keys is not None:
            return self.acts.select("key_h", "krank")
        t, key = pl.col("t"), pl.col("key")
        in_order = self.acts.select(((t > t.shift()) | ((t == t.shift()) & (key > key.shift()))).all()).item()
        return self.acts.select(
            key.hash(KEY_SEED).alias("key_h"),
            (pl.int_range(pl.len()) if in_order else pl.arg_sort_by("t", "key").arg_sort()).cast(pl.Int32).alias("krank"),
        )

    def key_of(self, a: int) -> str:
        """Activity a's key."""
        return self.keys[a] if self.keys is not None else str(self.acts.get_column("key")[a])

    def key_column(self) -> pl.Series:
        """Every activity's key (read back from its file when spilled: checks and the per-record reference)."""
        return self.keys.to_series("key") if self.keys is not None else self.acts.get_column("key")

    def release_parts(self) -> None:
        """Let the participant rows go, in place: every holder of these frames sees them gone (the KPI job's
        activity table, once it holds its own: while the table's activity columns were made, they were 0.18
        GB of the run's peak at 2,000,000 activities). Activities are not to be asked for after."""
        for column in self.parts.columns:
            self.parts.drop_in_place(column)

    @staticmethod
    def combine(
        pieces: list[ActivityFrames],
        settle: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
        spill_keys: bool = False,
    ) -> ActivityFrames:
        """Several sets of activities (with distinct keys) as one, sorted by (time, key) and renumbered. The
        pieces are taken out of the list: each frame is let go as soon as what replaces it is made. A piece's
        participants need not be grouped by activity, only each activity's in order (one stable sort groups
        them all).

        `settle` (activity_table.settled_acts), when given, rewrites the activities row for row before they
        are sorted: what it replaces is never gathered by the sort.

        spill_keys=True: the keys go to a temporary file (spilled.py), in sorted order, instead of through the
        sort, their hashes and order kept in memory (`key_order`): a run reads the keys themselves only for the
        few interactions it shows (the KPI job: 0.17 GB less held from the build to the end of a run at
        2,000,000 activities; sorting them also gathered every key again)."""
        acts: list[pl.DataFrame] = []
        parts: list[pl.DataFrame] = []
        while pieces:
            piece = pieces.pop(0)
            acts.append(piece.acts)
            parts.append(piece.parts)
            del piece
        if not acts:
            return ActivityFrames.empty()
        starts = np.cumsum([0, *(a.height for a in acts)]).tolist()
        both = pl.concat(acts).with_columns(src=pl.int_range(starts[-1], dtype=pl.Int32))
        acts.clear()
        order = both.select(pl.arg_sort_by("t", "key")).to_series()  # (keys are distinct: no ties)
        keys = None
        if spill_keys:  # (before the settling, which then works without the keys held)
            key = both.drop_in_place("key")
            keys = SpilledStrings(key, order)
            both.hstack([key.hash(KEY_SEED).alias("key_h")], in_place=True)
            del key
        if settle is not None:
            both = settle(both)
        both = gathered(both, order)
        if keys is not None:
            both = both.with_columns(krank=pl.int_range(pl.len(), dtype=pl.Int32))
        del order
        # A participant's new activity by lookup, then a stable sort: each activity's participants stay in order.
        new = both.get_column("src").arg_sort().cast(pl.Int32)
        for i, start in enumerate(starts[:-1]):
            parts[i] = parts[i].with_columns(a=new.gather(parts[i].get_column("a") + start))
        return ActivityFrames(both.drop("src"), by_activity(parts), settled=settle is not None, keys=keys)


def gathered(frame: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """The frame's rows in the order `rows` gives, gathered a column at a time, each column let go of as soon
    as its copy is made: the frame (which the caller gives up) is never held twice (the combine's gather of
    2,000,000 activities, sorted, was the build's peak). A column of several chunks (pieces concatenated) is
    made one first, as a frame's own gather does: gathering lists across chunks took 0.3-0.6 s a column, 10
    times longer."""
    columns = []
    for name in frame.columns:
        columns.append(frame.get_column(name).rechunk().gather(rows))
        frame.drop_in_place(name)
    return pl.DataFrame(columns)


def by_activity(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Participant rows (the frames', taken out of the list, one after the other) stably sorted by activity
    (`a`): each activity's in the order they came.

    Sorted with their strings as codes (people and addresses are categoricals already; the rest, few distinct
    ones, as codes of a mapping of their own for the sort): sorting strings themselves gathered every row's
    bytes again (the participants of 2,000,000 activities: 0.4 GB more at the build's peak)."""
    parts = pl.concat(frames)
    frames.clear()
    strings = [c for c, dtype in parts.schema.items() if dtype == pl.String]  # (people are categoricals already)
    parts = parts.with_columns(pl.col(strings).cast(pl.Categorical(pl.Categories.random())))
    return parts.sort("a", maintain_order=True).with_columns(pl.col(strings).cast(pl.String))


def frames_of(activities: Sequence[Activity]) -> ActivityFrames:
    """`Activity` objects as frames, in the order given (sort them by (time, key) first)."""
    p_cols: dict[str, list[object]] = {c: [] for c in PART_SCHEMA}
    for i, act in enumerate(activities):
        for p in act.participants:
            p_cols["a"].append(i)
            p_cols["person"].append(p.person)
            p_cols["internal"].append(p.internal)
            p_cols["role"].append(ROLE[p.role])
            p_cols["address"].append(p.address)
            p_cols["party"].append(str(p.party) if p.party is not None else None)
            p_cols["attended"].append(p.attended)
    acts = pl.DataFrame(
        {
            "key": [a.key for a in activities],
            "kind": [KIND[a.kind] for a in activities],
            "dir": [DIRECTION[a.direction] for a in activities],
            "t": [us(a.time) for a in activities],
            "end": [us(a.end) for a in activities],
            "dur": [float(a.duration_minutes) for a in activities],
            "all_day": [a.all_day for a in activities],
            "pending": [a.pending for a in activities],
            "message_id": [a.message_id for a in activities],
        },
        schema={c: ACT_SCHEMA[c] for c in list(ACT_SCHEMA)[:9]},
    ).with_columns(
        conversations=_lists(len(activities), ((i, c) for i, a in enumerate(activities) for c in a.conversations)),
        reply_to=_lists(len(activities), ((i, r) for i, a in enumerate(activities) for r in a.reply_to)),
        regarding=_lists(len(activities), ((i, str(r)) for i, a in enumerate(activities) for r in a.regarding)),
    )
    return ActivityFrames(acts, pl.DataFrame(p_cols, schema=PART_SCHEMA))


def _lists(n: int, items: Iterable[tuple[int, str]]) -> pl.Series:
    """A list-of-strings column of n rows from (row, value) pairs (polars makes one from Python lists
    slowly, and most of these lists are empty)."""
    pairs = list(items)
    flat = pl.DataFrame(
        {"row": [i for i, _ in pairs], "v": [v for _, v in pairs]}, schema={"row": pl.Int64, "v": pl.String}
    )
    lists = flat.group_by("row", maintain_order=True).agg("v")
    rows = pl.DataFrame({"row": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
    joined = rows.join(lists, on="row", how="left", maintain_order="left")
    return joined.get_column("v").fill_null(pl.lit([], dtype=pl.List(pl.String)))


_OBJECT_COLUMNS = [c for c in ACT_SCHEMA if c != "key"]  # an `Activity`'s columns, its key read on its own


class FrameActivities(Sequence[Activity]):
    """The frames' activities as a sequence of `Activity` objects, each made when asked for.

    For the few places that want an activity itself (a record's links read as `Link` objects, a report);
    two lookups give equal objects."""

    def __init__(self, frames: ActivityFrames) -> None:
        self.frames = frames
        self._rows = frames.acts.select(_OBJECT_COLUMNS)  # (the frames' own columns, selected once)
        self._count = frames.acts.height
        # Where each activity's participants start in `parts` (sorted by activity): an array, not a list (a list
        # of 2,000,000 Python ints is 70 MB held through a run, for the few activities ever asked for).
        counts = np.bincount(frames.parts.get_column("a").to_numpy(), minlength=frames.acts.height)
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return self._count

    def release(self) -> None:
        """Let the frames go (the KPI job, once its activity table holds what it reads of them): an activity
        asked for after this is an error; the sequence keeps its length."""
        self.frames, self._starts = ActivityFrames.empty(), np.zeros(1, dtype=np.int64)
        self._rows = self.frames.acts.select(_OBJECT_COLUMNS)

    @overload
    def __getitem__(self, i: int) -> Activity: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Activity]: ...
    def __getitem__(self, i: int | slice) -> Activity | Sequence[Activity]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < self.frames.acts.height:
            released = ": its frames were released" if self.frames.acts.height < self._count else ""
            raise IndexError(f"activity {i} of {self._count}{released}")
        kind, direction, t, end, dur, all_day, pending, mid, *lists = self._rows.row(i)
        start, stop = int(self._starts[i]), int(self._starts[i + 1])
        parts = self.frames.parts.slice(start, stop - start)
        participants = tuple(
            Participant(
                person,
                internal,
                _ROLES[role],
                address,
                record_ref(party) if party is not None else None,
                attended,
            )
            for _, person, internal, role, address, party, attended in parts.iter_rows()
        )
        return Activity(
            key=self.frames.key_of(i),
            kind=_KINDS[kind],
            direction=_DIRECTIONS[direction],
            time=at_us(t),
            end=at_us(end),
            participants=participants,
            duration_minutes=dur,
            all_day=all_day,
            pending=pending,
            message_id=mid,
            conversations=tuple(lists[0]),
            reply_to=tuple(lists[1]),
            regarding=tuple(record_ref(r) for r in lists[2]),
        )

    def __iter__(self) -> Iterator[Activity]:
        for i in range(len(self)):
            yield self[i]
