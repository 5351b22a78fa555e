"""SQLModel tables: tenants, mailboxes with their visible sync status, folders, cursors, and the synced
mail and calendar metadata (never bodies) with their participants.

Every Graph copy is stored per mailbox, as Graph returns it; deduplication across mailboxes (the same
email in the sender's Sent Items and in each recipient's Inbox) happens later, in analytics, by
internetMessageId / iCalUId.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Column, ForeignKey, Index, Integer, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def table_of(model: Any) -> Table:
    """The Core table of a SQLModel class, for bulk statements (typed: SQLModel hides __table__)."""
    return cast(Table, model.__table__)


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=63)
    directory_id: str = Field(max_length=255)
    # Set by `relinsights tenants enable|disable`; None: the config's `enabled` decides.
    enabled_override: bool | None = None
    # JSON list of the tenant's verified domains, read from Graph (normalised, lower case).
    verified_domains: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    status: str = Field(default="pending", max_length=32)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None
    created_at: datetime


class Mailbox(SQLModel, table=True):
    """One user in (or once in) the sync scope, with the status an admin sees in `relinsights status`."""

    __tablename__ = "mailbox"
    __table_args__ = (UniqueConstraint("tenant_pk", "user_id"), Index("ix_mailbox_address", "address"))
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    user_id: str = Field(max_length=64)
    address: str = Field(max_length=320)
    user_principal_name: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=256)
    # JSON list of every SMTP address of the user (primary and proxies), lower case.
    aliases: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    in_scope: bool = True
    # pending | syncing | ok | error | throttled | no_mailbox | out_of_scope
    status: str = Field(default="pending", max_length=32)
    status_detail: str | None = Field(default=None, sa_column=Column(Text))
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = None
    error_count: int = 0


class MailFolder(SQLModel, table=True):
    __tablename__ = "mail_folder"
    __table_args__ = (UniqueConstraint("mailbox_pk", "graph_id"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox_pk: int = Field(sa_column=Column(Integer, ForeignKey("mailbox.id", ondelete="CASCADE"), nullable=False))
    graph_id: str = Field(max_length=255)
    parent_graph_id: str | None = Field(default=None, max_length=255)
    display_name: str = Field(default="", max_length=512)
    child_folder_count: int = 0
    # Well-known name (inbox, sentitems, deleteditems...) when the folder is one of those.
    well_known: str | None = Field(default=None, max_length=32)
    synced: bool = False
    # The folder-delta level ('' = top, else the parent id) that last reported it, and in which round.
    level_key: str | None = Field(default=None, max_length=255)
    seen_round: int = 0


class SyncCursor(SQLModel, table=True):
    """Where a delta round stands. Saved in the same transaction as the rows of the page it follows.

    kind: 'messages' (key = folder id), 'folders' (key = parent folder id, '' for the top level),
    'calendar' (key = 'calendar'). `link` is the next link while a round is under way (is_delta false)
    and the delta link once it is complete (is_delta true). `round` grows at every full (re)sync; rows
    remember the round that last saw them, so the end of a full round can drop what it no longer saw.
    """

    __tablename__ = "sync_cursor"
    __table_args__ = (UniqueConstraint("mailbox_pk", "kind", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox_pk: int = Field(sa_column=Column(Integer, ForeignKey("mailbox.id", ondelete="CASCADE"), nullable=False))
    kind: str = Field(max_length=16)
    key: str = Field(max_length=255)
    link: str | None = Field(default=None, sa_column=Column(Text))
    is_delta: bool = False
    round: int = 0
    full_round: bool = True
    window_start: datetime | None = None
    window_end: datetime | None = None
    round_started_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    resyncs: int = 0


class Message(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("mailbox_pk", "graph_id"),
        Index("ix_message_mailbox_folder", "mailbox_pk", "folder_graph_id"),
        Index("ix_message_sent_at", "sent_at"),
        # No indexes on internet_message_id / conversation_id: analytics dedups and threads in memory over
        # the window it loads, and each extra index costs the first sync of a large mailbox dearly.
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox_pk: int = Field(sa_column=Column(Integer, ForeignKey("mailbox.id", ondelete="CASCADE"), nullable=False))
    folder_graph_id: str | None = Field(default=None, max_length=255)
    graph_id: str = Field(max_length=255)
    internet_message_id: str | None = Field(default=None, max_length=998)
    conversation_id: str | None = Field(default=None, max_length=255)
    conversation_index: str | None = Field(default=None, sa_column=Column(Text))
    subject: str | None = Field(default=None, sa_column=Column(Text))
    # The author (from) and the account that sent it (sender: a delegate or shared mailbox, else the same)
    # live here, not in message_participant (migration 0008): canonical form, raw form only when it differs
    # from the canonical one, display name (None when empty).
    from_address: str | None = Field(default=None, max_length=320)
    sender_address: str | None = Field(default=None, max_length=320)
    sent_at: datetime | None = None
    received_at: datetime | None = None
    is_draft: bool = False
    is_read: bool | None = None
    in_reply_to: str | None = Field(default=None, max_length=998)
    seen_round: int = 0
    from_raw_address: str | None = Field(default=None, max_length=320)
    from_name: str | None = Field(default=None, max_length=256)
    sender_raw_address: str | None = Field(default=None, max_length=320)
    sender_name: str | None = Field(default=None, max_length=256)


class MessageParticipant(SQLModel, table=True):
    __tablename__ = "message_participant"
    __table_args__ = (
        Index("ix_message_participant_message", "message_id"),
        # No index on address: it cost about half of a first sync's inserts; only `purge --user` looks
        # participants up by address, and it may scan (migration 0007).
    )
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(sa_column=Column(Integer, ForeignKey("message.id", ondelete="CASCADE"), nullable=False))
    # to | cc | bcc (from and sender are columns of the message since migration 0008)
    role: str = Field(max_length=8)
    # Canonical form (trimmed, lower case, IDNA domain) beside the raw one, for matching. Rows written since
    # 0008 leave the raw form None when it equals the canonical one, the name None when Graph gave none or "".
    address: str = Field(max_length=320)
    raw_address: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=256)


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("mailbox_pk", "graph_id"),
        Index("ix_event_ical_uid", "ical_uid"),
        Index("ix_event_start", "start"),
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox_pk: int = Field(sa_column=Column(Integer, ForeignKey("mailbox.id", ondelete="CASCADE"), nullable=False))
    graph_id: str = Field(max_length=255)
    ical_uid: str | None = Field(default=None, max_length=1024)
    series_master_id: str | None = Field(default=None, max_length=255)
    event_type: str | None = Field(default=None, max_length=32)
    subject: str | None = Field(default=None, sa_column=Column(Text))
    start: datetime | None = None
    end: datetime | None = None
    is_all_day: bool = False
    is_cancelled: bool = False
    is_online_meeting: bool = False
    organizer_address: str | None = Field(default=None, max_length=320)
    seen_round: int = 0


class EventAttendee(SQLModel, table=True):
    __tablename__ = "event_attendee"
    __table_args__ = (
        Index("ix_event_attendee_event", "event_id"),
        Index("ix_event_attendee_address", "address"),
    )
    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(sa_column=Column(Integer, ForeignKey("event.id", ondelete="CASCADE"), nullable=False))
    # organizer | required | optional | resource
    role: str = Field(max_length=16)
    address: str = Field(max_length=320)
    raw_address: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=256)
    # none | organizer | tentativelyAccepted | accepted | declined | notResponded
    response: str | None = Field(default=None, max_length=32)


class WorkLease(SQLModel, table=True):
    """A unit of work (a mailbox to sync, a tenant to compute) and the daemon that holds it until when.

    Every replica runs the same timers; a tick only works on the units it manages to claim, so several
    daemons on one PostgreSQL database never process a unit twice at once, and a unit whose daemon died
    is taken over once its lease has expired. Failures back off here instead of crash-looping.
    """

    __tablename__ = "work_lease"
    unit: str = Field(primary_key=True, max_length=400)
    owner: str | None = Field(default=None, max_length=200)
    leased_until: datetime | None = None
    attempts: int = 0  # consecutive failures
    next_attempt_at: datetime | None = None
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class CrmRecord(SQLModel, table=True):
    """One mirrored Dataverse row, kept as the JSON Dataverse returned (a new column needs no migration)."""

    __tablename__ = "crm_record"
    __table_args__ = (
        UniqueConstraint("tenant_pk", "entity_set", "record_id"),
        Index("ix_crm_record_parent", "tenant_pk", "entity_set", "parent_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    entity_set: str = Field(max_length=100)
    record_id: str = Field(max_length=64)
    # The owning row for child tables: the activity of an activity party, the team of a membership.
    parent_id: str | None = Field(default=None, max_length=64)
    data: str = Field(sa_column=Column(Text, nullable=False))
    synced_at: datetime


class CrmCursor(SQLModel, table=True):
    """Per tenant and table: the change-tracking delta link (empty for tables read in full each time)."""

    __tablename__ = "crm_cursor"
    __table_args__ = (UniqueConstraint("tenant_pk", "entity_set"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    entity_set: str = Field(max_length=100)
    delta_link: str | None = Field(default=None, sa_column=Column(Text))
    completed_at: datetime | None = None


class KpiRun(SQLModel, table=True):
    """One KPI computation of a tenant as of a moment: what it read, what it computed, what it reused."""

    __tablename__ = "kpi_run"
    __table_args__ = (Index("ix_kpi_run_tenant_as_of", "tenant_pk", "as_of"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None = None
    mode: str = Field(max_length=16)  # full | incremental
    tier: str = Field(max_length=16)  # enhanced | basic
    accuracy: str = Field(max_length=16)  # Complete | Partial
    activities: int = 0
    links: int = 0
    records: int = 0
    computed: int = 0
    reused: int = 0
    # JSON: ambiguous domains, skipped rows by reason, mailboxes that made the run Partial.
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


class KpiSnapshot(SQLModel, table=True):
    """The KPIs of one CRM record as of a moment (docs: kpis.md section 5), one row per record and run.

    `payload` holds every KPI under stable keys named after kpis.md; the health columns beside it are
    copies for ranking and filtering. `fingerprint` and `stable_until` let the next run reuse the row when
    neither the record's inputs changed nor time moved its values.
    """

    __tablename__ = "kpi_snapshot"
    __table_args__ = (
        UniqueConstraint("tenant_pk", "entity", "record_id", "as_of"),
        Index("ix_kpi_snapshot_tenant_as_of", "tenant_pk", "as_of"),
        Index("ix_kpi_snapshot_record", "tenant_pk", "record_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    run_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("kpi_run.id", ondelete="SET NULL"), nullable=True)
    )
    entity: str = Field(max_length=16)  # contact | lead | account | opportunity
    record_id: str = Field(max_length=64)
    as_of: datetime
    computed_at: datetime  # when these values were computed (a reused row keeps the original time)
    accuracy: str = Field(max_length=16)
    activities: int = 0  # counted activities in the lookback window
    last_interaction_at: datetime | None = None
    health_score: int | None = None
    health_state: str | None = Field(default=None, max_length=32)
    health_trend: str | None = Field(default=None, max_length=32)
    fingerprint: str = Field(max_length=64)
    stable_until: datetime | None = None  # the values hold for as-of times before this (None: for ever)
    payload: str = Field(sa_column=Column(Text, nullable=False))


class SimilarWonSnapshot(SQLModel, table=True):
    """Similar won opportunities of one open opportunity (kpis.md 5.4), refreshed weekly."""

    __tablename__ = "similar_won"
    __table_args__ = (UniqueConstraint("tenant_pk", "opportunity_id", "as_of"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    opportunity_id: str = Field(max_length=64)
    as_of: datetime
    computed_at: datetime
    fallback: bool = False
    eligible_won: int = 0
    matches: str = Field(sa_column=Column(Text, nullable=False))  # JSON list


class WritebackRow(SQLModel, table=True):
    """A row the write-back last wrote to Dataverse, with the hash of its values: the ledger that lets the
    next write-back skip unchanged rows and delete rows it owns that should no longer exist."""

    __tablename__ = "writeback_row"
    __table_args__ = (
        UniqueConstraint("tenant_pk", "entity_set", "row_id"),
        Index("ix_writeback_row_parent", "tenant_pk", "parent_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    entity_set: str = Field(max_length=100)
    row_id: str = Field(max_length=64)
    kind: str = Field(max_length=8)  # kpi | daily | top
    parent_id: str = Field(max_length=64)
    day: str | None = Field(default=None, max_length=10)  # daily rows
    hash: str = Field(max_length=32)
    written_at: datetime


class WritebackRun(SQLModel, table=True):
    """One write-back of a tenant: what it wrote, skipped and could not write (`relinsights status`)."""

    __tablename__ = "writeback_run"
    __table_args__ = (Index("ix_writeback_run_tenant", "tenant_pk", "started_at"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_pk: int = Field(sa_column=Column(Integer, ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False))
    as_of: datetime | None = None  # the snapshots' as-of
    started_at: datetime
    finished_at: datetime | None = None
    status: str = Field(default="running", max_length=16)  # running | ok | partial | failed
    written: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    pending: int = 0  # rows wanted but not attempted (the run stopped early)
    # JSON: rows written per table, and each failed row with its table, id, record and error.
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    error: str | None = Field(default=None, sa_column=Column(Text))
