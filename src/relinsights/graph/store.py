"""Writes one delta page and its cursor in a single transaction.

That is the whole crash-safety story: a page's rows and the link to the next page commit together, so a
restart resumes from the last committed link, and replays of a page are harmless upserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Boolean, Connection, Engine, Table, delete, insert, select, update

from relinsights.collector import collector_paused
from relinsights.db.models import Event, EventAttendee, MailFolder, Message, MessageParticipant, SyncCursor, table_of
from relinsights.graph.parse import (
    EVENT_PARTY_COLUMNS,
    MESSAGE_COLUMNS,
    MESSAGE_PARTY_COLUMNS,
    ParsedItem,
    parse_event,
    parse_message,
)

log = structlog.get_logger(__name__)

_IN_CHUNK = 500  # bound on IN (...) lists: SQLite's variable limit and PostgreSQL's plan size

message_t = table_of(Message)
participant_t = table_of(MessageParticipant)
event_t = table_of(Event)
attendee_t = table_of(EventAttendee)
cursor_t = table_of(SyncCursor)
folder_t = table_of(MailFolder)


@dataclass(frozen=True)
class ItemKind:
    """How one kind of delta item (message, event) maps onto its table and its participant table."""

    name: str
    table: Table
    child: Table
    child_fk: str
    parse: Callable[[dict[str, Any]], ParsedItem]
    # Every column the parser fills, with its value when an item does not say; a complete item's row
    # (ParsedItem.complete) holds them in this order.
    defaults: dict[str, Any]
    child_columns: tuple[str, ...]  # the order of the participant tuples the parser builds
    container_column: str | None  # rows belong to a folder (messages) or to the whole mailbox (events)
    datetime_columns: frozenset[str] = frozenset()
    # Columns that never hold "" (the parser keeps None instead): the bulk insert into SQLite binds "" for
    # their None and stores NULLIF(?, ''), because sqlite3 binds a str several times faster than None (it
    # looks None up in its adapter protocol first; booleans too, so those go in as 0/1, as SQLAlchemy stores them).
    blank_is_null: frozenset[str] = frozenset()
    # The same for participant columns; there the parser itself gives "" for absent, on both databases.
    child_blank_is_null: frozenset[str] = frozenset()


MESSAGES = ItemKind(
    name="message",
    table=message_t,
    child=participant_t,
    child_fk="message_id",
    parse=parse_message,
    defaults={column: False if column == "is_draft" else None for column in MESSAGE_COLUMNS},
    child_columns=MESSAGE_PARTY_COLUMNS,
    container_column="folder_graph_id",
    datetime_columns=frozenset({"sent_at", "received_at"}),
    blank_is_null=frozenset({"from_raw_address", "from_name", "sender_raw_address", "sender_name", "in_reply_to"}),
    child_blank_is_null=frozenset({"raw_address", "name"}),
)
EVENTS = ItemKind(
    name="event",
    table=event_t,
    child=attendee_t,
    child_fk="event_id",
    parse=parse_event,
    defaults={
        "ical_uid": None,
        "series_master_id": None,
        "event_type": None,
        "subject": None,
        "start": None,
        "end": None,
        "is_all_day": False,
        "is_cancelled": False,
        "is_online_meeting": False,
        "organizer_address": None,
    },
    child_columns=EVENT_PARTY_COLUMNS,
    container_column=None,
    datetime_columns=frozenset({"start", "end"}),
)


@dataclass
class PageResult:
    added: int = 0
    updated: int = 0
    removed: int = 0
    dropped_at_round_end: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (item id, problem)


@dataclass(frozen=True)
class CursorAdvance:
    """What the cursor becomes once the page is stored."""

    cursor_id: int
    link: str
    is_delta: bool
    round: int
    full_round: bool


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _final_states(
    items: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str], list[tuple[str, str]]]:
    """Collapse replays: the last state of each id in page order wins."""
    state: dict[str, dict[str, Any]] = {}
    invalid: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            invalid.append(("?", "item is not an object"))
            continue
        gid = item.get("id")
        if type(gid) is not str or not gid:
            invalid.append(("?", "item without an id"))
            continue
        state[gid] = item
    live: list[dict[str, Any]] = []
    removed: list[str] = []
    for gid, item in state.items():
        if "@removed" in item:
            removed.append(gid)
        else:
            live.append(item)
    return live, removed, invalid


# A page makes some 30 container objects per message, all freed right after it is stored: the collector
# only walked them again and again (about 7 us a message in scripts/bench_sync.py). On again between pages.
@collector_paused()
def apply_page(
    engine: Engine,
    kind: ItemKind,
    mailbox_pk: int,
    container: str | None,
    items: list[dict[str, Any]],
    advance: CursorAdvance,
) -> PageResult:
    """Upsert, merge and delete one page's items and move the cursor, in one transaction."""
    live, removed, invalid = _final_states(items)
    result = PageResult(problems=invalid)
    parsed: list[ParsedItem] = []
    for item in live:
        try:
            parsed.append(kind.parse(item))
        except Exception as exc:  # one broken item never stops the page
            result.problems.append((str(item.get("id")), f"unreadable {kind.name}: {exc!r}"))
    now = datetime.now(UTC)
    t = kind.table
    with engine.begin() as conn:
        # The cursor first: on SQLite this statement takes the write lock, so what the page reads below (the
        # stored ids, the next free row id) cannot change before it commits.
        conn.execute(
            update(cursor_t)
            .where(cursor_t.c.id == advance.cursor_id)
            .values(
                link=advance.link,
                is_delta=advance.is_delta,
                full_round=advance.full_round and not advance.is_delta,
                updated_at=now,
                **({"completed_at": now} if advance.is_delta else {}),
            )
        )
        existing = _existing_ids(conn, t, mailbox_pk, [p.graph_id for p in parsed])
        new = [p for p in parsed if p.graph_id not in existing]
        old = [p for p in parsed if p.graph_id in existing]
        place = {kind.container_column: container} if kind.container_column else {}
        if new:
            _insert_new(conn, kind, mailbox_pk, container, advance.round, new)
        for p in old:
            row_id = existing[p.graph_id]
            conn.execute(update(t).where(t.c.id == row_id).values(**p.row, **place, seen_round=advance.round))
            if p.roles:
                conn.execute(
                    delete(kind.child).where(kind.child.c[kind.child_fk] == row_id, kind.child.c.role.in_(p.roles))
                )
                if p.participants:
                    _insert_children(conn, kind, [(row_id, *part) for part in p.participants])
        for chunk in _chunks(removed, _IN_CHUNK):
            cond = [t.c.mailbox_pk == mailbox_pk, t.c.graph_id.in_(chunk)]
            if kind.container_column:
                # A message moved to another folder is 'removed' here and added there: only delete our copy.
                cond.append(t.c[kind.container_column] == container)
            result.removed += conn.execute(delete(t).where(*cond)).rowcount or 0
        if advance.is_delta and advance.full_round:
            result.dropped_at_round_end = _drop_unseen(conn, kind, mailbox_pk, container, advance.round)
    result.added, result.updated = len(new), len(old)
    for p in parsed:
        if p.problems:
            result.problems.extend((p.graph_id, msg) for msg in p.problems)
    return result


def _insert_new(
    conn: Connection, kind: ItemKind, mailbox_pk: int, container: str | None, round_no: int, new: list[ParsedItem]
) -> None:
    """The bulk path: plain DBAPI executemany, because SQLAlchemy's per-row parameter processing cost more
    than the inserts themselves (scripts/bench_sync.py).

    On SQLite the rows get their ids here, counting on from the largest stored one: apply_page's transaction
    already holds the write lock, so no other writer can take them, and the participant rows are built in
    the same pass. On PostgreSQL the ids are read back with one indexed query."""
    sqlite = conn.dialect.name == "sqlite"
    ph = "?" if sqlite else "%s"
    defaults = list(kind.defaults.items())
    fixed = ["graph_id", "mailbox_pk", "seen_round", *([kind.container_column] if kind.container_column else [])]
    head: tuple[Any, ...] = (mailbox_pk, round_no, *([container] if kind.container_column else []))
    # SQLite only: what its bulk insert binds in another form (see ItemKind.blank_is_null).
    bools = {c.name for c in kind.table.columns if isinstance(c.type, Boolean)} if sqlite else set()
    dt_columns = [c for c in kind.defaults if c in kind.datetime_columns] if sqlite else []
    bool_columns = [c for c in kind.defaults if c in bools]
    blank_columns = [c for c in kind.defaults if c in kind.blank_is_null] if sqlite else []
    dt_at, bool_at, blank_at = (
        [i for i, (c, _) in enumerate(defaults) if c in cs] for cs in (dt_columns, bools, blank_columns)
    )
    rows: list[tuple[Any, ...]] = []
    children: list[tuple[Any, ...]] = []
    next_id = 0
    if sqlite:
        next_id = (conn.exec_driver_sql(f"SELECT max(id) FROM {kind.table.name}").scalar() or 0) + 1
    for p in new:
        r = p.row
        values: Iterable[Any]
        if p.complete:  # every column, in the defaults' order: the usual first-sync item
            # (the row is not used after this insert: it is converted in place)
            for c in dt_columns:
                if (v := r[c]) is not None:
                    r[c] = v.isoformat(" ", "microseconds")[:26] if v.tzinfo is UTC else _sqlite_time(v)
            for c in bool_columns:
                if (v := r[c]) is not None:
                    r[c] = 1 if v else 0
            for c in blank_columns:
                if r[c] is None:
                    r[c] = ""
            values = r.values()
        else:
            values = [r.get(c, d) for c, d in defaults]
            for i in dt_at:
                if (v := values[i]) is not None:
                    values[i] = _sqlite_time(v)
            for i in bool_at:
                if (v := values[i]) is not None:
                    values[i] = 1 if v else 0
            for i in blank_at:
                if values[i] is None:
                    values[i] = ""
        if sqlite:
            rows.append((next_id, p.graph_id, *head, *values))
            for part in p.participants or ():
                children.append((next_id, *part))
            next_id += 1
        else:
            rows.append((p.graph_id, *head, *values))
    names = ", ".join(_q(c) for c in (*(["id"] if sqlite else []), *fixed, *kind.defaults))
    marks = [ph] * (len(fixed) + (1 if sqlite else 0))
    marks += [f"NULLIF({ph}, '')" if c in blank_columns else ph for c in kind.defaults]
    conn.exec_driver_sql(f"INSERT INTO {kind.table.name} ({names}) VALUES ({', '.join(marks)})", rows)
    if not sqlite:
        ids = _existing_ids(conn, kind.table, mailbox_pk, [p.graph_id for p in new])
        children = [(ids[p.graph_id], *part) for p in new for part in p.participants or ()]
    if children:
        _insert_children(conn, kind, children)


def _insert_children(conn: Connection, kind: ItemKind, rows: list[tuple[Any, ...]]) -> None:
    ph = "?" if conn.dialect.name == "sqlite" else "%s"
    names = ", ".join((kind.child_fk, *kind.child_columns))
    marks = [ph, *(f"NULLIF({ph}, '')" if c in kind.child_blank_is_null else ph for c in kind.child_columns)]
    conn.exec_driver_sql(f"INSERT INTO {kind.child.name} ({names}) VALUES ({', '.join(marks)})", rows)


def _q(column: str) -> str:
    return f'"{column}"' if column in ("end", "start") else column  # "end" is a keyword in SQL


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime stores (UTC), so both paths read back alike.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def _existing_ids(conn: Connection, t: Table, mailbox_pk: int, graph_ids: list[str]) -> dict[str, int]:
    # Plain SQL: SQLAlchemy's rendering of a 500-value IN list cost more than the indexed lookup itself.
    ph = "?" if conn.dialect.name == "sqlite" else "%s"
    found: dict[str, int] = {}
    for chunk in _chunks(graph_ids, _IN_CHUNK):
        rows = conn.exec_driver_sql(
            f"SELECT graph_id, id FROM {t.name} WHERE mailbox_pk = {ph} AND graph_id IN ({', '.join([ph] * len(chunk))})",
            (mailbox_pk, *chunk),
        )
        found.update(rows.fetchall())
    return found


def _drop_unseen(conn: Connection, kind: ItemKind, mailbox_pk: int, container: str | None, round_no: int) -> int:
    """End of a full round: what the server no longer has (or what left the window) is dropped locally."""
    t = kind.table
    cond = [t.c.mailbox_pk == mailbox_pk, t.c.seen_round < round_no]
    if kind.container_column:
        cond.append(t.c[kind.container_column] == container)
    return conn.execute(delete(t).where(*cond)).rowcount or 0


def get_or_create_cursor(engine: Engine, mailbox_pk: int, kind: str, key: str) -> SyncCursor:
    where = (cursor_t.c.mailbox_pk == mailbox_pk, cursor_t.c.kind == kind, cursor_t.c.key == key)
    with engine.begin() as conn:
        row = conn.execute(select(cursor_t).where(*where)).mappings().first()
        if row is None:
            conn.execute(insert(cursor_t).values(mailbox_pk=mailbox_pk, kind=kind, key=key, round=0, full_round=True))
            row = conn.execute(select(cursor_t).where(*where)).mappings().one()
    return SyncCursor.model_validate(dict(row))


def start_full_round(
    engine: Engine,
    cursor: SyncCursor,
    *,
    window: tuple[datetime, datetime] | None = None,
    resync: bool = False,
) -> SyncCursor:
    """Begin a full (re)sync: forget the link, bump the round so rows not seen again can be dropped."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "link": None,
        "is_delta": False,
        "full_round": True,
        "round": cursor.round + 1,
        "round_started_at": now,
        "updated_at": now,
    }
    if resync:
        values["resyncs"] = cursor.resyncs + 1
    if window is not None:
        values["window_start"], values["window_end"] = window
    with engine.begin() as conn:
        conn.execute(update(cursor_t).where(cursor_t.c.id == cursor.id).values(**values))
    return cursor.model_copy(update=values)


def delete_folder_data(engine: Engine, mailbox_pk: int, folder_ids: Sequence[str]) -> int:
    """A folder that is gone or no longer synced: its messages and its cursor go with it."""
    if not folder_ids:
        return 0
    removed = 0
    with engine.begin() as conn:
        for chunk in _chunks(list(folder_ids), _IN_CHUNK):
            removed += (
                conn.execute(
                    delete(message_t).where(
                        message_t.c.mailbox_pk == mailbox_pk, message_t.c.folder_graph_id.in_(chunk)
                    )
                ).rowcount
                or 0
            )
            conn.execute(
                delete(cursor_t).where(
                    cursor_t.c.mailbox_pk == mailbox_pk,
                    cursor_t.c.kind == "messages",
                    cursor_t.c.key.in_(chunk),
                )
            )
    return removed
