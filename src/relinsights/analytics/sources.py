"""Input rows for activities: Graph mail and calendar copies (one per mailbox), and the CRM's own
tracked emails, appointments and phone calls. The loader maps database rows onto these; nothing here
knows about the database.

Times are aware datetimes (naive ones are read as UTC). Addresses may be raw: they are canonicalised
by the activity builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from relinsights.analytics.records import RecordRef


@dataclass(frozen=True, slots=True)
class MailMessage:
    """One mailbox's copy of a Graph message (table `message` + its `message_participant` rows)."""

    graph_id: str
    mailbox: str  # the mailbox owner's address (or any stable mailbox key)
    sent_at: datetime | None
    from_address: str | None = None
    sender_address: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    internet_message_id: str | None = None
    conversation_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    is_draft: bool = False


@dataclass(frozen=True, slots=True)
class Attendee:
    address: str
    role: str = "required"  # organizer | required | optional | resource
    response: str | None = None  # none | organizer | tentativelyAccepted | accepted | declined | notResponded


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """One mailbox's copy of a Graph calendarView occurrence (table `event` + `event_attendee`)."""

    graph_id: str
    mailbox: str  # the calendar owner's address
    start: datetime | None
    end: datetime | None
    organizer: str | None = None
    attendees: tuple[Attendee, ...] = ()
    ical_uid: str | None = None
    is_all_day: bool = False
    is_cancelled: bool = False
    event_type: str | None = None  # singleInstance | occurrence | exception | seriesMaster
    own_response: str | None = None  # the mailbox owner's responseStatus, when the loader has it


@dataclass(frozen=True, slots=True)
class CrmParty:
    """A Dataverse activity party: the record it names (partyid) and the address used, when any."""

    entity: str | None = None  # systemuser | contact | lead | account | None (unresolved)
    id: str | None = None
    address: str | None = None  # addressused (an email address, or a phone number for calls)


@dataclass(frozen=True, slots=True)
class CrmEmail:
    """A Dataverse `email` activity (basic tier, or a tracked copy of a Graph message)."""

    activity_id: str
    sent_at: datetime | None  # senton
    sender: CrmParty | None = None
    to: tuple[CrmParty, ...] = ()
    cc: tuple[CrmParty, ...] = ()
    bcc: tuple[CrmParty, ...] = ()
    message_id: str | None = None  # messageid = the internet message id
    conversation_id: str | None = None  # conversationtrackingid
    in_reply_to: str | None = None
    is_draft: bool = False
    regarding: RecordRef | None = None


@dataclass(frozen=True, slots=True)
class CrmAppointment:
    """A Dataverse `appointment` activity."""

    activity_id: str
    start: datetime | None  # scheduledstart
    end: datetime | None  # scheduledend
    organizer: CrmParty | None = None
    required: tuple[CrmParty, ...] = ()
    optional: tuple[CrmParty, ...] = ()
    global_object_id: str | None = None
    is_all_day: bool = False
    is_cancelled: bool = False
    regarding: RecordRef | None = None


class CallState(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PhoneCall:
    """A Dataverse `phonecall` activity."""

    activity_id: str
    outgoing: bool  # directioncode: true = made
    from_parties: tuple[CrmParty, ...] = ()
    to_parties: tuple[CrmParty, ...] = ()
    actual_end: datetime | None = None
    scheduled_end: datetime | None = None
    duration_minutes: float | None = None  # actualdurationminutes
    state: CallState = CallState.COMPLETED
    regarding: RecordRef | None = None
