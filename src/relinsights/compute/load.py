"""Database rows -> the analytics' inputs for one tenant as of T: one query per table, dicts keyed by id;
Graph mail and calendars, the largest inputs, are read straight into columns (`MailRows`, `mail_read`;
`EventRows`, `event_read`).

Only the rows a computation as of T can use are read: activities from T - lookback_days - 14 days on
(the health trend looks 14 days back; scheduled ones have no upper bound), CRM records in full.

Decisions:

- Enhanced tier (`tenant_enabled`): Graph mail and calendar of the in-scope mailboxes, plus the CRM's
  tracked emails, appointments and phone calls (merged with their Graph copies by the activity
  builder). Basic tier: the CRM's activities only; Graph rows are not even read.
- Mail of a mailbox that left the sync scope (not opted out, just no longer configured) is not read:
  the admin narrowed the scope on purpose. Its user stays an internal user.
- Internal users are the mailbox users (primary address and every alias) merged with the Dataverse
  system users by address (`internalemailaddress`, `domainname`); a system user without a mailbox is a
  user of its own (its business unit still matters for similar won opportunities).
- Opted-out users: mailboxes marked "opted out" by the sync and the config's `scope.exclude_users`.
- The mailbox owner's own meeting response is read from their row in their own copy's attendee list,
  when it holds a decided answer (Graph's attendee copies often say "none").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import orjson
import polars as pl
from sqlalchemy import Connection, Engine, func, or_, select

from relinsights.analytics import (
    CrmAppointment,
    CrmEmail,
    CrmRecords,
    InternalUser,
    PartyRules,
    PhoneCall,
    Tier,
)
from relinsights.analytics.activities import DECIDED
from relinsights.analytics.frames import CODED
from relinsights.analytics.health import TREND_DAYS
from relinsights.analytics.mail_frames import MAIL_SCHEMA, RECIPIENT_SCHEMA, GraphIds, MailRows
from relinsights.analytics.meeting_frames import ATTENDEE_SCHEMA, EVENT_SCHEMA, EventRows
from relinsights.analytics.parties import canonical_address
from relinsights.compute.bulk_read import (
    Query,
    bulk_reader,
    epoch_micros,
    id_ranges,
    timestamp_literal,
    utc_micros,
)
from relinsights.compute.dataverse_rows import (
    CrmIds,
    Row,
    activity_time,
    crm_appointment,
    crm_email,
    crm_ids,
    crm_records,
    parties_by_activity,
    phone_call,
)
from relinsights.compute.dbcache import small_page_cache
from relinsights.config import TenantConfig
from relinsights.db.models import CrmRecord, Event, EventAttendee, Mailbox, Message, MessageParticipant, table_of

FAILED_MAILBOX_STATUSES = ("error", "throttled")
RECORD_SETS = (
    "systemusers",
    "contacts",
    "accounts",
    "leads",
    "opportunities",
    "teams",
    "teammemberships",
    "connections",
    "connectionroles",
)
ACTIVITY_SETS = ("emails", "appointments", "phonecalls")
# A message's recipients and an event's attendees in the order they were stored (the order of its lists),
# each read in parts by message or event id, which no message's or event's rows span: each part in (message,
# row) order, which SQLite's index on the message id gives as it reads it, without a sort. (Sorting a year
# of recipients by row id afterwards was the read's highest place: 1,352 MiB at 2,000,000 activities.)
STORED_ORDER = "ORDER BY {row}.{of}, {row}.id"
_mb, _msg, _mp = table_of(Mailbox), table_of(Message), table_of(MessageParticipant)
# The most messages outside a read's window, as a share of the message table, with which its To/Cc rows are
# still read by message id alone (`_few_outside`).
OUTSIDE_SHARE = 0.1
_ev, _att, _crm = table_of(Event), table_of(EventAttendee), table_of(CrmRecord)


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    pk: int
    address: str
    aliases: tuple[str, ...]
    in_scope: bool
    status: str
    opted_out: bool
    name: str | None


@dataclass(slots=True)
class TenantInputs:
    """Everything one computation as of T reads, typed for the analytics core."""

    tier: Tier
    since: datetime  # activities before this were not read
    rules: PartyRules
    users: tuple[InternalUser, ...]
    records: CrmRecords
    ids: CrmIds
    messages: MailRows = field(default_factory=MailRows)
    events: EventRows = field(default_factory=EventRows)
    crm_emails: list[CrmEmail] = field(default_factory=list)
    crm_appointments: list[CrmAppointment] = field(default_factory=list)
    phone_calls: list[PhoneCall] = field(default_factory=list)
    graph_ids: GraphIds | None = None  # the Graph ids of `messages`' copies, read when the build asks
    failed_mailboxes: tuple[str, ...] = ()  # in scope, in error or throttled: the computation is Partial
    source_rows: int = 0  # the activity rows read (counted once read: the builders take them out)

    def release_rows(self) -> None:
        """Drop the source rows once activities are built from them (a tenant's year of mail is large)."""
        self.messages, self.events = MailRows(), EventRows()
        self.crm_emails, self.crm_appointments, self.phone_calls = [], [], []


def load_inputs(
    engine: Engine,
    tenant: TenantConfig,
    tenant_pk: int,
    verified_domains: Iterable[str],
    as_of: datetime,
    tier: Tier,
) -> TenantInputs:
    since = read_since(tenant, as_of)
    with engine.connect() as conn, small_page_cache(conn):
        mailboxes = _mailboxes(conn, tenant_pk, tenant)
        crm = {s: list(_crm_rows(conn, tenant_pk, s)) for s in RECORD_SETS}
        ids = crm_ids(crm)
        users = internal_users(mailboxes, crm["systemusers"], tenant)
        rules = PartyRules.for_tenant(tenant, verified_domains=verified_domains, users=users)
        inputs = TenantInputs(tier, since, rules, tuple(users), crm_records(crm, ids), ids)
        _crm_activities(conn, tenant_pk, since, inputs)
        if tier is Tier.ENHANCED:
            scoped = {m.pk: m for m in mailboxes if m.in_scope}
            every = _every_mailbox_scoped(conn, scoped)
            mail, events = mail_read(conn, tenant_pk, since, every), event_read(conn, tenant_pk, since, every)
            # Both read at once, a large read by the same reader processes (bulk_read.py; each costs about 0.3 s of
            # CPU to start, in a read that keeps both cores busy), while this one makes the mail's parts ready.
            with bulk_reader(conn, rows_hint=mail.rows_hint + events.rows_hint) as read:
                rows = read([*mail.queries, *events.queries])()
                # (the mail's rows made before the calendars' are taken: 50 MiB less at 2,000,000 activities)
                mail_rows = [next(rows) for _ in mail.queries]
                inputs.messages = _mail_rows(mail_rows, scoped, partial(_graph_ids, conn))
                del mail_rows
                inputs.events = _event_rows(list(rows), scoped)
            inputs.graph_ids = partial(graph_ids, engine)
            inputs.failed_mailboxes = tuple(
                sorted(m.address for m in scoped.values() if m.status in FAILED_MAILBOX_STATUSES)
            )
    inputs.source_rows = len(inputs.messages) + len(inputs.events)
    inputs.source_rows += len(inputs.crm_emails) + len(inputs.crm_appointments) + len(inputs.phone_calls)
    return inputs


def read_since(tenant: TenantConfig, as_of: datetime) -> datetime:
    """The earliest activity time a computation as of `as_of` reads: its lookback and the health trend's days."""
    return as_of - timedelta(days=tenant.sync.lookback_days + TREND_DAYS)


# ---------------------------------------------------------------- users


def _mailboxes(conn: Any, tenant_pk: int, tenant: TenantConfig) -> list[MailboxInfo]:
    excluded = set(tenant.scope.exclude_users)
    out = []
    for pk, address, aliases, in_scope, status, detail, name in conn.execute(
        select(
            _mb.c.id,
            _mb.c.address,
            _mb.c.aliases,
            _mb.c.in_scope,
            _mb.c.status,
            _mb.c.status_detail,
            _mb.c.display_name,
        )
        .where(_mb.c.tenant_pk == tenant_pk)
        .order_by(_mb.c.id)
    ):
        names = tuple(a for a in json.loads(aliases or "[]") if isinstance(a, str))
        opted_out = (not in_scope and detail == "opted out") or bool({address, *names} & excluded)
        out.append(MailboxInfo(pk, address, names, bool(in_scope), status, opted_out, name))
    return out


def internal_users(
    mailboxes: Iterable[MailboxInfo], systemusers: Iterable[Row], tenant: TenantConfig
) -> list[InternalUser]:
    """Mailbox users merged with Dataverse system users by address (see the module docstring)."""
    excluded = set(tenant.scope.exclude_users)
    users: list[InternalUser] = []
    index: dict[str, int] = {}
    for mb in mailboxes:
        index.update({a: len(users) for a in (mb.address, *mb.aliases) if a})
        users.append(InternalUser(mb.address, mb.aliases, opted_out=mb.opted_out, name=mb.name))
    for row in sorted(systemusers, key=lambda r: str(r.get("systemuserid"))):
        sid = str(row.get("systemuserid") or "").lower()
        if not sid:
            continue
        bu = str(row["_businessunitid_value"]).lower() if row.get("_businessunitid_value") else None
        addresses = [
            a
            for a in (canonical_address(row.get("internalemailaddress")), canonical_address(row.get("domainname")))
            if a
        ]
        at = next((index[a] for a in addresses if a in index), None)
        if at is not None and users[at].systemuser_id is None:
            users[at] = replace(users[at], systemuser_id=sid, business_unit_id=bu)
            continue
        primary = addresses[0] if addresses and addresses[0] not in index else ""
        users.append(
            InternalUser(
                primary,
                tuple(a for a in addresses[1:] if a not in index),
                systemuser_id=sid,
                business_unit_id=bu,
                opted_out=bool(set(addresses) & excluded),
                name=row.get("fullname"),
            )
        )
    return users


# ---------------------------------------------------------------- CRM


def _crm_rows(conn: Any, tenant_pk: int, entity_set: str) -> Iterator[dict[str, Any]]:
    result = conn.execution_options(yield_per=2000).execute(
        select(_crm.c.data).where(_crm.c.tenant_pk == tenant_pk, _crm.c.entity_set == entity_set)
    )
    for (data,) in result:
        yield orjson.loads(data)


def _crm_activities(conn: Any, tenant_pk: int, since: datetime, inputs: TenantInputs) -> None:
    rows: dict[str, list[dict[str, Any]]] = {}
    wanted: set[str] = set()
    for entity_set in ACTIVITY_SETS:
        kept = []
        for row in _crm_rows(conn, tenant_pk, entity_set):
            when = activity_time(entity_set, row)
            if when is None or when >= since:  # undated rows go through: the builder reports them
                kept.append(row)
                wanted.add(str(row.get("activityid") or "").lower())
        rows[entity_set] = kept
    parties = parties_by_activity(
        (p for p in _crm_rows(conn, tenant_pk, "activityparties") if str(p.get("_activityid_value")).lower() in wanted),
        inputs.ids,
    )

    def of(row: Row) -> list[Any]:
        return parties.get(str(row.get("activityid") or "").lower(), [])

    inputs.crm_emails = [e for r in rows["emails"] if (e := crm_email(r, of(r), inputs.ids))]
    inputs.crm_appointments = [a for r in rows["appointments"] if (a := crm_appointment(r, of(r), inputs.ids))]
    inputs.phone_calls = [c for r in rows["phonecalls"] if (c := phone_call(r, of(r), inputs.ids))]


# ---------------------------------------------------------------- Graph


class Read(NamedTuple):
    """Queries of a large read (bulk_read.py), and about how many rows they return."""

    queries: list[Query]
    rows_hint: int


def mail_read(conn: Connection, tenant_pk: int, since: datetime, every: bool) -> Read:
    """The read of the scoped mailboxes' sent (not draft) messages from `since` on and of their To and Cc rows,
    as columns (`_mail_rows` makes them MailRows). Bcc is never read: it is never a participant. `every`:
    every mailbox stored is one of the scoped ones (`_every_mailbox_scoped`)."""
    dialect = conn.dialect.name
    no = "0" if dialect == "sqlite" else "false"
    window = f"{_window(conn, 'm.mailbox_pk', 'm.sent_at', tenant_pk, since, every)} AND m.is_draft IS {no}"
    # COALESCE: a driver may type a column by its first rows, which can all be NULL; "" and NULL mean the
    # same in every one of these columns (no address, no id), and "" is read back as NULL.
    coalesced = ", ".join(f"COALESCE(m.{c}, '') AS {c}" for c in _MAIL_TEXTS)
    # The conversation ids: their SQL and the names it reads as.
    if dialect == "postgresql":  # hashed by the server (_conversation_hashes says why)
        conversation, conversation_names = _server_hashes("m.conversation_id"), ["c1", "c2"]
    else:  # (SQLite has no hash function: hashed by this process as each part comes, `_mail_part`)
        conversation, conversation_names = "COALESCE(m.conversation_id, '')", ["conversation_id"]
    hint = conn.execute(select(func.max(_msg.c.id))).scalar() or 0  # ids only grow: an upper bound of the rows
    # The Graph id (152 characters in Exchange Online, 40% of a message row) keys a copy without an
    # internetMessageId: it is read with the rows only where there is none, and afterwards for the few whose
    # id has no letter or digit either (`_keyless`). The few copies it orders are read again with theirs
    # (`graph_ids`, when the build asks).
    graph_id = "CASE WHEN COALESCE(m.internet_message_id, '') = '' THEN m.graph_id END"
    sent = epoch_micros(dialect, "m.sent_at")  # (the window leaves no NULL)
    if every and _few_outside(conn, since, hint):
        recipients, recipient_parts = "message_participant p WHERE", id_ranges(hint, "p.message_id")
    else:
        recipients = f"message_participant p JOIN message m ON m.id = p.message_id WHERE {window} AND"
        recipient_parts = id_ranges(hint, "m.id", "p.message_id")
    return Read(
        [
            Query(
                [
                    f"SELECT m.id, {graph_id}, m.mailbox_pk, {sent}, {coalesced}, {conversation}"
                    f" FROM message m WHERE {window} AND {ids}"
                    for ids in id_ranges(hint, "m.id")  # a reader holds one range of messages at a time
                ],
                ["m", "graph_id", "box", "sent", *_MAIL_TEXTS, *conversation_names],
                ready=_mail_part,
                categorical=("from_address", "sender_address"),
            ),
            Query(
                [
                    f"SELECT p.message_id, p.role, p.address FROM {recipients} {ids}"
                    f" AND (p.role = 'to' OR p.role = 'cc') {STORED_ORDER.format(row='p', of='message_id')}"
                    for ids in recipient_parts
                ],
                ["m", "role", "address"],
                categorical=("role", "address"),
            ),
        ],
        hint,
    )


_MAIL_TEXTS = ("from_address", "sender_address", "internet_message_id", "in_reply_to")


def _every_mailbox_scoped(conn: Connection, scoped: dict[int, MailboxInfo]) -> bool:
    """Whether every mailbox stored is one of the scoped ones (one tenant's, all in scope: the common case).
    The reads then leave out their test of each row's mailbox (13-19% of SQLite's time for the message rows);
    the rows of a mailbox stored since are left out as they are made (`_in_scope`)."""
    return conn.execute(select(func.count()).select_from(_mb)).scalar_one() == len(scoped)


def _few_outside(conn: Connection, since: datetime, rows: int) -> bool:
    """Whether the mail read takes its To/Cc rows by message id alone, not joined to their messages (when every
    mailbox stored is one of the scoped ones): when at most OUTSIDE_SHARE of its `rows` messages were sent
    before `since` or never (retention deletes old mail daily). The join took 2 of the read's 11 s
    on PostgreSQL at 2,000,000 activities (0.75 of SQLite's 8.3 s). Then the rows of the messages outside the
    window (drafts, the mail before it) are read too, and left out where recipients meet the messages read
    (the activity build's join, `mail_objects`)."""
    outside = select(func.count()).where(or_(_msg.c.sent_at < since, _msg.c.sent_at.is_(None)))
    return conn.execute(outside).scalar_one() <= OUTSIDE_SHARE * rows


def _mail_part(part: pl.DataFrame) -> pl.DataFrame:
    """A part of the mail read as it comes (while the readers read the next ones): its texts as strings (null
    for none), its time as microseconds and, read from SQLite, its conversation ids as their hashes."""
    if "conversation_id" in part.columns:
        part = _conversation_hashes(part)
    part = part.with_columns(
        graph_id=_text(part.get_column("graph_id")),
        sent=utc_micros(part.get_column("sent")),
        **{c: _text(part.get_column(c)) for c in _MAIL_TEXTS},
    )
    return part.with_columns(keyless=_keyless(part))


def _keyless(part: pl.DataFrame) -> pl.Series:
    """Which copies have an internetMessageId without a letter or digit: it may normalise to nothing
    (activities.normalise_message_id keeps any letter or digit), and the copy is then keyed by its Graph id,
    which the read left out. Found here rather than in SQL, where the test of every id took 27% of
    PostgreSQL's time for the message rows (a regular expression; SQLite's GLOB, 5%)."""
    ids = part.get_column("internet_message_id")
    return (ids.is_not_null() & ~ids.str.contains("[0-9A-Za-z]")).fill_null(False).alias("keyless")


def _mail_rows(read: list[pl.DataFrame], scoped: dict[int, MailboxInfo], read_graph_ids: GraphIds) -> MailRows:
    """The mail read's rows (`mail_read`: messages made ready as they came, recipients) as MailRows, with the
    Graph ids of the keyless copies read (`read_graph_ids`); a copy gone before is left out (the next run reads
    it)."""
    messages, recipients = read
    keyless = messages.get_column("keyless")
    if keyless.any():
        at = keyless.arg_true()
        wanted = messages.get_column("m").gather(at).cast(pl.Int64).to_list()
        found = dict(read_graph_ids(wanted))
        read_ids = pl.Series([found.get(m) for m in wanted], dtype=pl.String)
        messages = messages.with_columns(messages.get_column("graph_id").scatter(at, read_ids))
        if len(found) < len(wanted):  # (a filter copies every column: only when a copy went)
            messages = messages.filter(~keyless | pl.col("graph_id").is_not_null())
    # The owner joined to the ids alone, then set beside the rows: joining the rows themselves gathered every
    # column of a year of mail again (0.25 GB more at 2,000,000 activities). (The ids taken as columns: a
    # select on the read's frame first joined every column's parts into one, 0.1 GB more. And the ids set
    # back in one part: with the first column in the read's parts, polars' select below joined every
    # column's parts into one, 0.2 GB more.)
    ids = pl.DataFrame([messages.get_column("m").cast(pl.Int64), messages.get_column("box").cast(pl.Int64)])
    keys = ids.join(_owners(scoped), on="box", how="left", maintain_order="left").rechunk()
    del ids
    messages = messages.with_columns(
        keys.get_column("m"),
        keys.get_column("mailbox"),
        is_draft=pl.lit(False),
        references=pl.lit([], dtype=pl.List(pl.String)),
    )
    del keys
    # (then the conversation codes: the ids and owners above let go first, the read's peak is lower; `source`
    # unknown: the build asks for the Graph ids of the few copies they decide between, `graph_ids`)
    messages = messages.with_columns(_conversation_codes(messages), source=pl.lit(None, pl.Int64))
    messages = _in_scope(messages.select(list(MAIL_SCHEMA)).cast(MAIL_SCHEMA))
    recipients = recipients.cast(RECIPIENT_SCHEMA)
    return MailRows(messages, recipients)


GRAPH_ID_CHUNK = 5000  # Graph ids read at a time, by row id


def graph_ids(engine: Engine, ids: list[int]) -> list[tuple[int, str]]:
    """(row id, Graph id) of these message copies, those still stored (mail_frames.GraphIds: the few copies
    whose Graph ids order them, read after the rest)."""
    with engine.connect() as conn:
        return _graph_ids(conn, ids)


def _graph_ids(conn: Connection, ids: list[int]) -> list[tuple[int, str]]:
    """`graph_ids` on an open connection."""
    return [
        (m, g)
        for start in range(0, len(ids), GRAPH_ID_CHUNK)
        for m, g in conn.execute(
            select(_msg.c.id, _msg.c.graph_id).where(_msg.c.id.in_(ids[start : start + GRAPH_ID_CHUNK]))
        )
    ]


# Two independent 64-bit hashes of a conversation id: two distinct ids of a run share both with a chance
# of about n^2 / 2^129 (2,000,000 ids: 6e-27).
_CONVERSATION_SEEDS = (0x5EED, 0xC0FFEE)


def _conversation_hashes(part: pl.DataFrame) -> pl.DataFrame:
    """A part of the mail read with its conversation ids as two hashes (`c1`, `c2`; 0 and 0 for none).

    A conversation id is only ever compared with another Graph conversation id (its thread): as read, a
    year of them was 0.17 GB of strings (2,000,000 activities), held from the read to the activities'
    threads; the hashes of each part are made as it is read, and the strings let go."""
    conv = part.get_column("conversation_id").cast(pl.String)
    none = conv.fill_null("") == ""
    c1, c2 = (pl.when(~none).then(conv.hash(seed)).otherwise(pl.lit(0, pl.UInt64)) for seed in _CONVERSATION_SEEDS)
    hashes = pl.select(c1=c1, c2=c2)
    return part.drop("conversation_id").with_columns(hashes.get_column("c1"), hashes.get_column("c2"))


def _server_hashes(column: str) -> str:
    """SQL (PostgreSQL): a text column as the two 64-bit hashes `c1`, `c2` of `_conversation_hashes` (0 and 0
    for NULL or ""), by the server's own hashtextextended: the ids themselves (about 80 characters in Exchange
    Online) were 0.17 GB of a year of mail to copy, read and hash again here (2,000,000 activities)."""
    return ", ".join(
        f"CASE WHEN COALESCE({column}, '') = '' THEN 0 ELSE hashtextextended({column}, {seed}) END AS c{i}"
        for i, seed in enumerate(_CONVERSATION_SEEDS, start=1)
    )


def _conversation_codes(messages: pl.DataFrame) -> pl.Series:
    """Each message's conversation as a short token of its own (its number in the hashes' order, as text; null
    for none): what mail_frames.py compares, as the ids themselves would compare. Numbered through one sort
    (polars' window by the two hashes held a group of rows per conversation: 0.12 GB more, 2,000,000
    activities), by the first hash alone where no two conversations share it (the order is the same; 0.20 s
    against 0.31-0.37 by both, for 2,279,293 copies)."""
    hashes = pl.DataFrame([messages.get_column("c1"), messages.get_column("c2")])  # (not the read's other columns)
    order = hashes.get_column("c1").arg_sort().to_numpy()
    first, second = (hashes.get_column(c).to_numpy()[order] for c in ("c1", "c2"))
    same = first[1:] == first[:-1]
    if (second[1:] != second[:-1])[same].any():  # (two conversations of one first hash: about n^2 / 2^65)
        order = hashes.select(pl.arg_sort_by("c1", "c2")).to_series().to_numpy()
        first, second = (hashes.get_column(c).to_numpy()[order] for c in ("c1", "c2"))
        same = (first[1:] == first[:-1]) & (second[1:] == second[:-1])
    new = np.empty(len(order), dtype=bool)  # where a conversation starts, in the hashes' order
    new[:1] = True
    np.logical_not(same, out=new[1:])
    number = np.empty(len(order), dtype=np.int64)
    number[order] = np.cumsum(new)
    none = hashes.select((pl.col("c1") == 0) & (pl.col("c2") == 0)).to_series()
    del hashes, order, new, first, second, same
    return pl.select(conversation_id=pl.when(~none).then(pl.Series(number).cast(pl.String))).to_series()


_EVENT_TEXTS = ("organizer_address", "ical_uid", "event_type")


def event_read(conn: Connection, tenant_pk: int, since: datetime, every: bool) -> Read:
    """The read of the scoped mailboxes' event copies starting from `since` on and of their attendees in
    stored order (without the organizer's own row, which the event names), as columns (`_event_rows` makes
    them EventRows, with each owner's own answer). `every` as for `mail_read`."""
    sqlite = conn.dialect.name == "sqlite"
    window = _window(conn, "e.mailbox_pk", "e.start", tenant_pk, since, every)
    # COALESCE: a driver may type a column by its first rows, which can all be NULL ("" reads back as NULL);
    # SQLite's timestamps are text too, PostgreSQL's are typed.
    coalesced = ", ".join(f"COALESCE(e.{c}, '') AS {c}" for c in _EVENT_TEXTS)
    end_at = """COALESCE(e."end", '')""" if sqlite else 'e."end"'
    start = epoch_micros(conn.dialect.name, "e.start")  # (the window leaves no NULL; an end may be)
    last_event = conn.execute(select(func.max(_ev.c.id))).scalar() or 0
    hint = last_event + (conn.execute(select(func.max(_att.c.id))).scalar() or 0)  # ids only grow
    return Read(
        [
            Query(
                [
                    f"SELECT e.id, e.graph_id, e.mailbox_pk, {start}, {end_at} AS end_at, {coalesced},"
                    f" e.is_all_day, e.is_cancelled FROM event e WHERE {window} AND {ids}"
                    for ids in id_ranges(last_event, "e.id")  # a reader holds one range of events at a time
                ],
                ["e", "graph_id", "box", "start", "end", *_EVENT_TEXTS, "is_all_day", "is_cancelled"],
            ),
            Query(
                [
                    "SELECT a.event_id, a.role, a.address, COALESCE(a.response, '') FROM event_attendee a"
                    f" JOIN event e ON e.id = a.event_id WHERE {window} AND {ids} AND a.role <> 'organizer'"
                    f" {STORED_ORDER.format(row='a', of='event_id')}"
                    for ids in id_ranges(last_event, "e.id", "a.event_id")
                ],
                ["e", "role", "address", "response"],
            ),
        ],
        hint,
    )


def _event_rows(read: list[pl.DataFrame], scoped: dict[int, MailboxInfo]) -> EventRows:
    """The calendar read's rows (`event_read`: events, attendees) as the activity builder's EventRows."""
    events, attendees = read
    end = events.get_column("end")  # SQLite's text ("" for NULL), PostgreSQL's timestamps
    events = events.with_columns(
        pl.col("e", "box").cast(pl.Int64),
        pl.col("is_all_day", "is_cancelled").cast(pl.Boolean),
        start=utc_micros(events.get_column("start")),
        end=utc_micros(_text(end) if end.dtype == pl.String else end),
        **{c: _text(events.get_column(c)) for c in _EVENT_TEXTS},
    ).rename({"organizer_address": "organizer"})
    attendees = attendees.cast({"e": pl.Int64, "role": pl.String, "address": pl.String}).with_columns(
        response=_text(attendees.get_column("response"))
    )
    events = _in_scope(events.join(_owners(scoped), on="box", how="left")).join(
        _own_responses(events, attendees, scoped), on="e", how="left"
    )
    return EventRows(events.select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA), attendees.cast(ATTENDEE_SCHEMA))


def _window(conn: Connection, mailbox: str, time: str, tenant_pk: int, since: datetime, every: bool) -> str:
    """SQL: the row's mailbox is one of the tenant's in scope (not tested when `every` mailbox is) and its time
    is `since` or later."""
    dialect = conn.dialect.name
    # SQLite would walk the rows through an index, a random page per row: a year of a tenant's mail or
    # calendars is most of the table, read far faster in one sequential scan ("+col": no index for it).
    scan, yes = ("+", "1") if dialect == "sqlite" else ("", "true")
    boxes = f"SELECT id FROM mailbox WHERE tenant_pk = {int(tenant_pk)} AND in_scope IS {yes}"
    recent = f"{scan}{time} >= {timestamp_literal(dialect, since)}"
    return recent if every else f"{scan}{mailbox} IN ({boxes}) AND {recent}"


def _in_scope(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows whose owner (`mailbox`, from `_owners`) is a scoped mailbox: a read that did not test each
    row's mailbox (`_window`) also holds the rows of a mailbox stored after `_every_mailbox_scoped` counted."""
    owners = rows.get_column("mailbox")
    return rows.filter(owners.is_not_null()) if owners.null_count() else rows


def _text(col: pl.Series) -> pl.Series:
    """A text column as strings, or as categoricals when read as such (a driver cannot type a column without
    rows), "" read back as NULL (what the reads' COALESCE stood for)."""
    text = pl.lit(col if col.dtype == CODED else col.cast(pl.String))
    return pl.select(pl.when(text != "").then(text)).to_series().alias(col.name)


def _owners(scoped: dict[int, MailboxInfo]) -> pl.DataFrame:
    """(box, mailbox): each scoped mailbox's owner address."""
    return pl.DataFrame(
        {"box": list(scoped), "mailbox": [m.address for m in scoped.values()]},
        schema={"box": pl.Int64, "mailbox": CODED},
    )


def _own_responses(events: pl.DataFrame, attendees: pl.DataFrame, scoped: dict[int, MailboxInfo]) -> pl.DataFrame:
    """(e, own_response): the first decided answer of the mailbox owner's own row (any of their addresses) in
    their copy's attendee list (the module docstring says why)."""
    mine = pl.DataFrame(
        [(pk, a) for pk, m in scoped.items() for a in {m.address, *m.aliases}],
        schema={"box": pl.Int64, "address": pl.String},
        orient="row",
    )
    return (
        attendees.with_row_index("seq")  # (each copy's in stored order)
        .filter(pl.col("response").str.to_lowercase().is_in(list(DECIDED)))
        .join(events.select("e", "box"), on="e")
        .join(mine, on=["box", "address"], how="semi")
        .sort("seq")
        .unique("e", keep="first", maintain_order=True)
        .select("e", own_response="response")
    )
