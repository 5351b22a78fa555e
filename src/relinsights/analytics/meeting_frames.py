"""Graph calendar rows -> meeting activities as frames (frames.py): activities.py's meeting rules as column
operations.

A year of a tenant's calendars is hundreds of thousands of event copies (one per mailbox that holds the
meeting); built one Python object at a time they cost more than the database took to read them. Here the
same rules (activities.py `_graph_event` and `_merge_event`: its docstring lists them) run as joins and
group-bys over two frames as the database holds them:

- `events` (`EVENT_SCHEMA`): one row per Graph event copy, `start` and `end` in microseconds since the
  epoch (UTC), `own_response` the mailbox owner's own answer when the loader has it;
- `attendees` (`ATTENDEE_SCHEMA`): its attendee rows, in their stored order.

Addresses are resolved once per distinct raw address, in Python, by the object builder's own resolver.
Keys that a CRM appointment also has are left to the object builder, which merges the two sources
(`split_meetings`); the result is then the same as building every copy with `build_activities`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import polars as pl

from relinsights.analytics.activities import DECIDED, Role
from relinsights.analytics.frames import (
    ACT_SCHEMA,
    PART_SCHEMA,
    PY_SPACE,
    ROLE,
    SIDE_IGNORED,
    SIDE_INTERNAL,
    ActivityFrames,
    SourceRows,
    as_python,
    at_us,
    people_of,
    split_keys,
    us,
)
from relinsights.analytics.parties import PartyRules
from relinsights.analytics.sources import Attendee, CalendarEvent
from relinsights.analytics.timeutil import as_utc

EVENT_SCHEMA = pl.Schema(
    {
        "e": pl.Int64(),  # the copy's row id (any unique number)
        "graph_id": pl.String(),
        "mailbox": pl.String(),  # the calendar owner's address
        "start": pl.Int64(),
        "end": pl.Int64(),
        "organizer": pl.String(),
        "ical_uid": pl.String(),
        "is_all_day": pl.Boolean(),
        "is_cancelled": pl.Boolean(),
        "event_type": pl.String(),
        "own_response": pl.String(),
    }
)
ATTENDEE_SCHEMA = pl.Schema({"e": pl.Int64(), "role": pl.String(), "address": pl.String(), "response": pl.String()})
_ORGANIZER, _REQUIRED, _OPTIONAL = ROLE[Role.ORGANIZER], ROLE[Role.REQUIRED], ROLE[Role.OPTIONAL]


@dataclass
class EventRows(SourceRows):
    """Graph event copies and their attendees: the two frames the builder reads (it takes them)."""

    events: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EVENT_SCHEMA))
    attendees: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ATTENDEE_SCHEMA))

    def objects(self) -> list[CalendarEvent]:
        """The rows as `CalendarEvent` objects (checks and tests)."""
        return event_objects(self.events, self.attendees)


def event_rows(events: Iterable[CalendarEvent]) -> EventRows:
    """`CalendarEvent` objects as the two frames (tests, and callers that hold objects)."""
    cols: dict[str, list[object]] = {c: [] for c in EVENT_SCHEMA}
    acols: dict[str, list[object]] = {c: [] for c in ATTENDEE_SCHEMA}
    for i, ev in enumerate(events):
        cols["e"].append(i)
        cols["graph_id"].append(ev.graph_id)
        cols["mailbox"].append(ev.mailbox)
        cols["start"].append(us(as_utc(ev.start)) if ev.start is not None else None)
        cols["end"].append(us(as_utc(ev.end)) if ev.end is not None else None)
        cols["organizer"].append(ev.organizer)
        cols["ical_uid"].append(ev.ical_uid)
        cols["is_all_day"].append(ev.is_all_day)
        cols["is_cancelled"].append(ev.is_cancelled)
        cols["event_type"].append(ev.event_type)
        cols["own_response"].append(ev.own_response)
        for a in ev.attendees:
            acols["e"].append(i)
            acols["role"].append(a.role)
            acols["address"].append(a.address)
            acols["response"].append(a.response)
    return EventRows(pl.DataFrame(cols, schema=EVENT_SCHEMA), pl.DataFrame(acols, schema=ATTENDEE_SCHEMA))


def strip_lower(values: pl.Series) -> pl.Series:
    """Python's `value.strip().lower()` of each value (null stays null)."""
    return as_python(values, lambda v: v.str.strip_chars(PY_SPACE).str.to_lowercase(), lambda v: v.strip().lower())


def with_keys(events: pl.DataFrame) -> pl.DataFrame:
    """Each copy's activity key (activities._graph_event): "meeting:" and its iCal uid, else its Graph id."""
    uid = strip_lower(events.get_column("ical_uid"))
    return events.with_columns(
        key=pl.when(uid.str.len_bytes() > 0)
        .then(pl.concat_str(pl.lit("meeting:"), pl.lit(uid)))
        .otherwise(pl.concat_str(pl.lit("meeting:graph:"), pl.col("graph_id")))
    )


def split_meetings(
    events: pl.DataFrame, attendees: pl.DataFrame, crm_keys: Collection[str]
) -> tuple[pl.DataFrame, list[CalendarEvent]]:
    """(the copies the frame builder takes, as `with_keys` gives them; the copies of keys a CRM appointment
    also has, as `CalendarEvent` objects for the object builder)."""
    keyed, shared = split_keys(with_keys(events), crm_keys)
    return keyed, event_objects(shared, attendees) if shared.height else []


def event_objects(events: pl.DataFrame, attendees: pl.DataFrame) -> list[CalendarEvent]:
    """Event rows as `CalendarEvent` objects (the few the object builder merges with CRM copies; tests)."""
    ids = events.get_column("e").implode()
    by_event: dict[int, list[Attendee]] = {}
    for e, role, address, response in attendees.filter(pl.col("e").is_in(ids)).iter_rows():
        by_event.setdefault(e, []).append(Attendee(address, role, response))
    return [
        CalendarEvent(
            graph_id=row["graph_id"],
            mailbox=row["mailbox"],
            start=at_us(row["start"]) if row["start"] is not None else None,
            end=at_us(row["end"]) if row["end"] is not None else None,
            organizer=row["organizer"],
            attendees=tuple(by_event.get(row["e"], ())),
            ical_uid=row["ical_uid"],
            is_all_day=row["is_all_day"],
            is_cancelled=row["is_cancelled"],
            event_type=row["event_type"],
            own_response=row["own_response"],
        )
        for row in events.iter_rows(named=True)
    ]


def build_meeting_frames(
    meetings: EventRows, crm_keys: Collection[str], rules: PartyRules, skipped: Counter[str]
) -> tuple[ActivityFrames, list[CalendarEvent]]:
    """(the meeting activities of the copies whose keys no CRM appointment has, merged by key; those other
    copies as `CalendarEvent` objects, for the object builder): `split_meetings` and the build. Skipped rows
    counted. The rows are taken out of `meetings`."""
    events, attendees = meetings.take()
    keyed, shared = split_meetings(events, attendees, crm_keys)
    rows = EventRows(keyed, attendees)  # the copies with their keys
    del events, keyed, attendees
    return _build(rows, rules, skipped), shared


def _build(rows: EventRows, rules: PartyRules, skipped: Counter[str]) -> ActivityFrames:
    keyed, attendees = rows.take()
    masters = (keyed.get_column("event_type").str.to_lowercase() == "seriesmaster").fill_null(False)
    skipped["series-master"] += int(masters.sum())  # calendarView already yields each occurrence
    copies = keyed.filter(~masters)
    if copies.height == 0:
        return ActivityFrames.empty()
    atts = (
        attendees.lazy()
        .with_row_index("seq")  # the stored order
        .join(copies.lazy().select("e"), on="e", how="semi")
        .with_columns(role=pl.col("role").str.to_lowercase().fill_null(""))
        .filter(pl.col("role") != "resource")  # rooms and equipment are not people
        .collect()
    )
    raw = pl.concat([copies.get_column("mailbox"), copies.get_column("organizer"), atts.get_column("address")])
    who = people_of(rules, raw).rename({"address": "addr"})
    copies = _copies(copies, who)
    acts = _meetings(copies, skipped)
    if acts.height == 0:
        return ActivityFrames.empty()
    return _frames(acts, _attendees(atts, copies, acts, who), skipped)


def _copies(copies: pl.DataFrame, who: pl.DataFrame) -> pl.DataFrame:
    """The copies with their mailbox's person (`box`), organizer and own answer resolved, numbered (`prank`)
    in the order the object builder reads them: by (mailbox, source)."""
    return (
        copies.lazy()
        .join(who.lazy().select(mailbox="raw", box="person"), on="mailbox", how="left")
        .join(
            who.lazy().select(organizer="raw", o_person="person", o_kind="kind", o_addr="addr"),
            on="organizer",
            how="left",
        )
        .select(
            "e",
            "key",
            "start",
            "end",
            "is_all_day",
            "is_cancelled",
            "o_person",
            "o_kind",
            "o_addr",
            box=pl.coalesce("box", "mailbox"),  # a mailbox that is not an address is its own key
            own=pl.col("own_response").str.to_lowercase().fill_null(""),
            source=pl.concat_str(pl.lit("graph:"), pl.col("graph_id")),
        )
        .sort("box", "source", "e")  # "e": copies alike in both keep the order they came in
        .with_row_index("prank")
        .drop("source")
        .collect()
    )


def _meetings(copies: pl.DataFrame, skipped: Counter[str]) -> pl.DataFrame:
    """One row per meeting that passes the key-level rules (none cancelled, an organizer who counts, times
    on the base copy), numbered `a`: its organizer and base copy's times."""
    keys = copies.group_by("key").agg(
        cancelled=pl.col("is_cancelled").any(),  # cancellation is sent to every attendee: any copy says it
        org=pl.col("prank").filter(pl.col("o_person").is_not_null()).min(),
    )
    skipped["cancelled"] += keys.filter(pl.col("cancelled")).height
    keys = keys.filter(~pl.col("cancelled")).join(
        copies.select("o_person", "o_kind", "o_addr", org="prank"), on="org", how="left"
    )
    skipped["no-organizer"] += keys.filter(pl.col("o_person").is_null()).height
    keys = keys.filter(pl.col("o_person").is_not_null())
    skipped["ignored-organizer"] += keys.filter(pl.col("o_kind") == SIDE_IGNORED).height
    keys = keys.filter(pl.col("o_kind") != SIDE_IGNORED)
    # The base copy (times, all-day): the organizer's own, else the first one.
    base = (
        copies.select("key", "prank", "box")
        .join(keys.select("key", org="o_person"), on="key")
        .group_by("key")
        .agg(base=pl.coalesce(pl.col("prank").filter(pl.col("box") == pl.col("org")).min(), pl.col("prank").min()))
    )
    keys = keys.join(base, on="key").join(copies.select("start", "end", all_day="is_all_day", base="prank"), on="base")
    skipped["no-time"] += keys.filter(pl.col("start").is_null() | pl.col("end").is_null()).height
    return (
        keys.filter(pl.col("start").is_not_null() & pl.col("end").is_not_null())
        .select("key", "o_person", "o_kind", "o_addr", "start", "all_day", end=pl.max_horizontal("start", "end"))
        .with_row_index("a")
    )


def _attendees(atts: pl.DataFrame, copies: pl.DataFrame, acts: pl.DataFrame, who: pl.DataFrame) -> pl.DataFrame:
    """Each meeting's attendees but its organizer, each person once, in their order: (a, person, internal,
    role, address, attended)."""
    role = pl.col("role")
    rows = (
        atts.lazy()
        .join(copies.lazy().select("e", "key", "prank", "box", "own"), on="e")
        .join(acts.lazy().select("key", "a", org="o_person"), on="key")
        .join(who.lazy(), left_on="address", right_on="raw")  # inner: a value that is no address is nobody
        .filter(pl.col("person").is_not_null() & (pl.col("kind") != SIDE_IGNORED) & (pl.col("person") != pl.col("org")))
        .with_columns(
            r=pl.when(role == "organizer")
            .then(pl.lit(_ORGANIZER))
            .when(role == "optional")
            .then(pl.lit(_OPTIONAL))
            .otherwise(pl.lit(_REQUIRED))
            .cast(pl.Int8),
            resp=pl.col("response").str.to_lowercase().fill_null(""),
        )
        # Where a copy's answer comes from, best first: the attendee's own mailbox, the organizer's copy, any.
        .with_columns(
            prio=pl.when((pl.col("box") == pl.col("person")) & (pl.col("own") != ""))
            .then(0)
            .when((pl.col("box") == pl.col("org")) & (pl.col("resp") != ""))
            .then(1)
            .otherwise(2)
        )
        .with_columns(
            rank=pl.when(pl.col("prio") < 2)
            .then(0)
            .otherwise(pl.col("resp").replace_strict(DECIDED, default=9, return_dtype=pl.Int32)),
            answer=pl.when(pl.col("prio") == 0).then(pl.col("own")).otherwise(pl.col("resp")),
            not_required=pl.col("r") != _REQUIRED,
        )
        .select("a", "person", "kind", "addr", "r", "not_required", "prank", "seq", "prio", "rank", "answer")
        .collect()
    )
    # A person's best answer; their role and address from their first required row, else their first row.
    answers = _first_by(rows, "prio", "rank", "answer").select("a", "person", "answer")
    picks = _first_by(rows, "not_required", "prank", "seq").select("a", "person", "kind", "addr", "r", "not_required")
    return (
        picks.join(answers, on=["a", "person"])
        .sort("a", "not_required", "person")
        .select(
            "a",
            "person",
            internal=pl.col("kind") == SIDE_INTERNAL,
            # An organizer-role row of someone else: an attendee like the others.
            role=pl.when(pl.col("r") == _ORGANIZER).then(pl.lit(_REQUIRED)).otherwise(pl.col("r")).cast(pl.Int8),
            address="addr",
            attended=pl.col("answer") != "declined",
        )
    )


def _first_by(rows: pl.DataFrame, *order: str) -> pl.DataFrame:
    """Each (a, person)'s first row in `order`."""
    return rows.sort(*order).unique(["a", "person"], keep="first", maintain_order=True)


def _minutes(acts: pl.DataFrame) -> pl.Series:
    """Each meeting's length in minutes, to the last bit as the object builder's
    `(end - start).total_seconds() / 60`: numpy divides, where polars multiplies many rows by the reciprocal
    (which rounds differently)."""
    micros = (acts.get_column("end") - acts.get_column("start")).to_numpy()
    return pl.Series(micros / 1_000_000 / 60, dtype=pl.Float64)


def _frames(acts: pl.DataFrame, attendees: pl.DataFrame, skipped: Counter[str]) -> ActivityFrames:
    """The meetings that have a direction (a sent one needs an external attendee) as frames."""
    external = attendees.filter(~pl.col("internal")).get_column("a").unique().implode()
    acts = acts.with_columns(
        dir=pl.when(pl.col("o_kind") != SIDE_INTERNAL)
        .then(pl.lit(1))
        .when(pl.col("a").is_in(external))
        .then(pl.lit(0))
        .cast(pl.Int8)
    )
    skipped["no-external"] += acts.filter(pl.col("dir").is_null()).height
    acts = acts.filter(pl.col("dir").is_not_null())
    out = acts.select(
        "key",
        kind=pl.lit(1, dtype=pl.Int8),
        dir="dir",
        t="start",
        end="end",
        dur=pl.when(pl.col("all_day")).then(pl.lit(0.0)).otherwise(_minutes(acts)),
        all_day="all_day",
        pending=pl.lit(False),
        message_id=pl.lit(None, dtype=pl.String),
        conversations=pl.lit([], dtype=pl.List(pl.String)),
        reply_to=pl.lit([], dtype=pl.List(pl.String)),
        regarding=pl.lit([], dtype=pl.List(pl.String)),
        old="a",
    ).with_row_index("a")
    organizers = acts.select(
        "a",
        person="o_person",
        internal=pl.col("o_kind") == SIDE_INTERNAL,
        role=pl.lit(_ORGANIZER, dtype=pl.Int8),
        address="o_addr",
        attended=pl.lit(True),
    )
    # Activities renumbered densely (some were dropped); ActivityFrames.combine sorts them by (time, key).
    parts = (
        pl.concat([organizers.with_columns(o=pl.lit(0)), attendees.with_columns(o=pl.lit(1))], how="vertical_relaxed")
        .with_row_index("ord")
        .join(out.select("a", old="old"), left_on="a", right_on="old")
        .sort("a_right", "o", "ord")  # the organizer first, then the attendees in their order
        .select(
            a="a_right",
            person="person",
            internal="internal",
            role="role",
            address="address",
            party=pl.lit(None, dtype=pl.String),
            attended="attended",
        )
    )
    return ActivityFrames(out.drop("a", "old").cast(ACT_SCHEMA), parts.cast(PART_SCHEMA))
