"""In-memory state of the sandbox tenant: directory, mailboxes, calendars, a clock and a change log.

Every create/update/move/delete of a folder, message or event takes the next global sequence number;
delta rounds are computed from those numbers (see `delta.py`), so any mutation made here, by a test,
the generator or the admin endpoint, is what the next incremental round reports.

All public methods take `self.lock`: the HTTPS server runs in another thread.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from . import ids

# Well-known folders of a fresh Exchange Online mailbox (name, displayName, parent well-known name).
WELL_KNOWN_FOLDERS: list[tuple[str, str, str | None]] = [
    ("msgfolderroot", "Top of Information Store", None),
    ("archive", "Archive", "msgfolderroot"),
    ("conversationhistory", "Conversation History", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "msgfolderroot"),
    ("drafts", "Drafts", "msgfolderroot"),
    ("inbox", "Inbox", "msgfolderroot"),
    ("junkemail", "Junk Email", "msgfolderroot"),
    ("outbox", "Outbox", "msgfolderroot"),
    ("sentitems", "Sent Items", "msgfolderroot"),
    ("syncissues", "Sync Issues", "msgfolderroot"),
    ("conflicts", "Conflicts", "syncissues"),
    ("localfailures", "Local Failures", "syncissues"),
    ("serverfailures", "Server Failures", "syncissues"),
]
# Mirrors relinsights.config.DEFAULT_EXCLUDED_FOLDERS: folders a daemon skips by default.
DEFAULT_EXCLUDED_FOLDERS = ("deleteditems", "junkemail", "drafts", "outbox", "syncissues")
PARTIAL_FIELDS = frozenset({"isRead"})  # changes Graph may report as partial updates (id + changed fields)
RESPONSES = ("none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded")


class SandboxError(ValueError):
    """A mutation referred to something that does not exist or is not allowed."""


class SandboxClock:
    """The tenant's notion of now: settable and advanceable, always timezone-aware UTC."""

    def __init__(self, start: datetime) -> None:
        self._now = _utc(start)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = _utc(when)

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise SandboxError("the sandbox clock only moves forward")
        self._now += delta
        return self._now


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# ---------------------------------------------------------------- directory


@dataclass(slots=True, eq=False)
class User:
    id: str
    display_name: str
    given_name: str | None
    surname: str | None
    user_principal_name: str
    mail: str | None
    proxy_addresses: list[str]
    account_enabled: bool = True
    has_mailbox: bool = True
    job_title: str | None = None
    department: str | None = None
    office_location: str | None = None
    business_phones: list[str] = field(default_factory=list)
    mobile_phone: str | None = None
    preferred_language: str | None = "en-US"
    usage_location: str | None = "US"
    created: datetime | None = None
    role: str = "staff"  # sandbox-only: seller, manager, staff, admin
    manager_id: str | None = None

    @property
    def mail_nickname(self) -> str:
        return self.user_principal_name.split("@")[0]

    def addresses(self) -> list[str]:
        """Every SMTP address the user receives mail at, lower-case."""
        out = [p.split(":", 1)[1].lower() for p in self.proxy_addresses if p.lower().startswith("smtp:")]
        if self.mail and self.mail.lower() not in out:
            out.append(self.mail.lower())
        return out


@dataclass(slots=True, eq=False)
class Group:
    id: str
    display_name: str
    mail_nickname: str
    member_ids: list[str]  # users or groups (nesting)
    description: str | None = None
    mail: str | None = None
    mail_enabled: bool = False
    security_enabled: bool = True
    created: datetime | None = None


@dataclass(slots=True)
class Domain:
    name: str
    is_default: bool = False
    is_initial: bool = False
    is_verified: bool = True
    supported_services: list[str] = field(default_factory=lambda: ["Email", "OfficeCommunicationsOnline"])


# ---------------------------------------------------------------- change tracking


@dataclass(slots=True, eq=False)
class Tracked:
    """Change-log bookkeeping shared by folders, messages and events.

    history: (seq, container) placements; container None = deleted (a tombstone stays for delta).
    full_seq: last change a delta must report as a full item; field_seqs: last seq of each partial field.
    """

    seq: int = 0
    full_seq: int = 0
    history: list[tuple[int, str | None]] = field(default_factory=list)
    field_seqs: dict[str, int] = field(default_factory=dict)

    @property
    def container(self) -> str | None:
        return self.history[-1][1] if self.history else None

    @property
    def deleted(self) -> bool:
        return self.container is None

    def container_at(self, seq: int) -> str | None:
        """Where the item was once change `seq` had been applied (None: absent)."""
        i = bisect.bisect_right(self.history, seq, key=lambda h: h[0])
        return self.history[i - 1][1] if i else None

    def changed_fields_since(self, seq: int) -> set[str]:
        return {f for f, s in self.field_seqs.items() if s > seq}


@dataclass(slots=True, eq=False)
class Folder(Tracked):
    id: str = ""
    mailbox: str = ""
    display_name: str = ""
    well_known: str | None = None
    is_hidden: bool = False


@dataclass(slots=True, eq=False)
class MessageContent:
    """What every copy of one email shares (one internetMessageId across mailboxes)."""

    internet_message_id: str
    conversation_id: str
    conversation_index: str
    subject: str
    sender: tuple[str, str]  # (name, address)
    from_: tuple[str, str]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    sent: datetime
    has_attachments: bool = False
    importance: str = "normal"
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Message(Tracked):
    """One copy of an email in one mailbox; `id` is the immutable id (stable across moves)."""

    id: str = ""
    mailbox: str = ""
    content: MessageContent | None = None
    received: datetime | None = None
    created: datetime | None = None
    modified: datetime | None = None
    is_read: bool = False
    is_draft: bool = False
    is_sender_copy: bool = False
    inference: str = "focused"

    @property
    def folder_id(self) -> str | None:
        return self.container


@dataclass(slots=True)
class Attendee:
    name: str
    address: str
    type: str = "required"  # required, optional, resource
    response: str = "none"
    response_time: datetime | None = None


@dataclass(slots=True)
class Recurrence:
    """A recurrence as Graph describes it; weekly and daily patterns, end date always set."""

    pattern: str  # "weekly" | "daily"
    interval: int
    days_of_week: tuple[str, ...]
    start_date: date
    end_date: date
    time_zone: str = "UTC"

    def starts(self, first: datetime) -> list[datetime]:
        out: list[datetime] = []
        day = self.start_date
        week0 = self.start_date - timedelta(days=self.start_date.weekday())
        names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        while day <= self.end_date:
            if self.pattern == "daily":
                ok = (day - self.start_date).days % self.interval == 0
            else:
                weeks = ((day - timedelta(days=day.weekday())) - week0).days // 7
                ok = weeks % self.interval == 0 and names[day.weekday()] in self.days_of_week
            if ok:
                out.append(datetime.combine(day, first.timetz()).replace(tzinfo=UTC))
            day += timedelta(days=1)
        return out

    def to_graph(self) -> dict[str, Any]:
        return {
            "pattern": {
                "type": self.pattern,
                "interval": self.interval,
                "month": 0,
                "dayOfMonth": 0,
                "daysOfWeek": list(self.days_of_week),
                "firstDayOfWeek": "sunday",
                "index": "first",
            },
            "range": {
                "type": "endDate",
                "startDate": self.start_date.isoformat(),
                "endDate": self.end_date.isoformat(),
                "recurrenceTimeZone": self.time_zone,
                "numberOfOccurrences": 0,
            },
        }


@dataclass(slots=True, eq=False)
class Meeting:
    """A meeting (single or series) as the organizer created it; each calendar holds its own copies."""

    uid: str  # iCalUId of the single event or the series master
    organizer: tuple[str, str]
    attendees: list[Attendee]
    subject: str
    start: datetime
    end: datetime
    is_all_day: bool = False
    is_online: bool = False
    location: str | None = None
    recurrence: Recurrence | None = None
    cancelled: bool = False
    # mailbox -> {original start (None for single/master) -> event id}
    copies: dict[str, dict[datetime | None, str]] = field(default_factory=dict)
    # original start -> (start, end, subject) of modified occurrences (exceptions)
    exceptions: dict[datetime, tuple[datetime, datetime, str]] = field(default_factory=dict)
    cancelled_occurrences: set[datetime] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class Event(Tracked):
    """One event instance in one calendar: singleInstance, occurrence, exception or seriesMaster."""

    id: str = ""
    mailbox: str = ""
    meeting: Meeting | None = None
    type: str = "singleInstance"
    series_master_id: str | None = None
    ical_uid: str = ""
    original_start: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    subject: str = ""
    is_cancelled: bool = False
    is_organizer: bool = False
    attendees: list[Attendee] = field(default_factory=list)
    response: str = "none"
    response_time: datetime | None = None
    created: datetime | None = None
    modified: datetime | None = None


@dataclass(slots=True, eq=False)
class Mailbox:
    user_id: str
    folders: dict[str, Folder] = field(default_factory=dict)
    well_known: dict[str, str] = field(default_factory=dict)  # name -> folder id
    messages: dict[str, Message] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    # per-container live membership, insertion-ordered
    folder_items: dict[str, dict[str, None]] = field(default_factory=dict)
    # change logs (seq, id), appended in seq order
    folder_log: list[tuple[int, str]] = field(default_factory=list)
    message_log: list[tuple[int, str]] = field(default_factory=list)
    event_log: list[tuple[int, str]] = field(default_factory=list)


# ---------------------------------------------------------------- CRM seeds (what the Dataverse tables start from)


@dataclass(slots=True, eq=False)
class Contact:
    id: str
    first_name: str
    last_name: str
    email: str
    company_id: str | None
    job_title: str | None = None
    phone: str | None = None
    is_lead: bool = False

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(slots=True, eq=False)
class Company:
    id: str
    name: str
    domain: str
    industry: str
    city: str
    country: str
    owner_id: str  # Entra user id of the account owner (a seller)
    relationship: str  # healthy, cooling, one_sided, new, dormant
    contact_ids: list[str] = field(default_factory=list)
    team_ids: list[str] = field(default_factory=list)  # other internal users on the account
    is_customer: bool = True


@dataclass(slots=True, eq=False)
class Opportunity:
    id: str
    name: str
    company_id: str
    owner_id: str
    state: str  # open, won, lost
    estimated_value: float
    close_date: date
    created: datetime
    team_ids: list[str] = field(default_factory=list)
    stakeholder_ids: list[str] = field(default_factory=list)  # contact ids


@dataclass(slots=True, eq=False)
class Lead:
    id: str
    contact_id: str
    owner_id: str | None
    topic: str
    created: datetime
    state: str = "open"  # open, qualified, disqualified


@dataclass(slots=True, eq=False)
class PhoneCall:
    id: str
    user_id: str
    contact_id: str
    start: datetime
    duration_minutes: int
    direction: str  # outgoing, incoming
    subject: str


@dataclass(slots=True)
class CrmSeeds:
    companies: dict[str, Company] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    opportunities: dict[str, Opportunity] = field(default_factory=dict)
    leads: dict[str, Lead] = field(default_factory=dict)
    phone_calls: list[PhoneCall] = field(default_factory=list)
    # The live Dataverse tables (crm_store.CrmStore) built from these seeds by `crm_seed.attach_crm`, once a
    # sandbox serves Dataverse; from then on `Org.advance` also changes CRM records.
    dataverse: Any = None


# ---------------------------------------------------------------- the org


ActivityHook = Callable[["Org", datetime, datetime], dict[str, int]]


class Org:
    """The sandbox tenant. Create it empty and fill it with the mutation methods, or use `generator`."""

    def __init__(
        self,
        *,
        seed: int = 1,
        tenant_id: str | None = None,
        name: str = "Contoso",
        now: datetime | None = None,
    ) -> None:
        self.seed = seed
        self.name = name
        self.tenant_id = tenant_id or ids.guid(seed, "tenant")
        self.clock = SandboxClock(now or datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        self.created = self.clock.now() - timedelta(days=3 * 365)
        self.lock = threading.RLock()
        self.seq = 0
        self.domains: list[Domain] = []
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.meetings: dict[str, Meeting] = {}
        self.crm = CrmSeeds()
        self.activity: ActivityHook | None = None  # set by the generator: what happens when time passes
        # Delta-token generations: bumping one kills every older link of that scope (410 SyncStateNotFound).
        self.sync_generations: dict[tuple[str, str], int] = {}
        self.delta_token_max_age: timedelta | None = None  # by the sandbox clock; None: no expiry
        self._by_address: dict[str, str] = {}
        self._by_upn: dict[str, str] = {}
        self._msg_counter = 0
        self._copies: dict[str, list[Message]] = {}  # internetMessageId -> copies, for copies_of()
        self.generator: Any = None  # the Generator that built this org, if any

    # ------------------------------------------------------------ basics

    def now(self) -> datetime:
        return self.clock.now()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @property
    def default_domain(self) -> str:
        return next((d.name for d in self.domains if d.is_default), self.domains[0].name if self.domains else "")

    def verified_domains(self) -> list[str]:
        return [d.name for d in self.domains if d.is_verified]

    def add_domain(self, name: str, **kw: Any) -> Domain:
        with self.lock:
            d = Domain(name=name.lower(), **kw)
            self.domains.append(d)
            return d

    def add_user(self, user: User) -> User:
        with self.lock:
            self.users[user.id] = user
            self._by_upn[user.user_principal_name.lower()] = user.id
            for a in user.addresses():
                self._by_address[a] = user.id
            if user.has_mailbox:
                self._create_mailbox(user.id)
            return user

    def add_group(self, group: Group) -> Group:
        with self.lock:
            self.groups[group.id] = group
            if group.mail:
                self._by_address[group.mail.lower()] = group.id
            return group

    def user(self, key: str) -> User:
        """By object id, userPrincipalName or any SMTP address (case-insensitive)."""
        u = self.find_user(key)
        if u is None:
            raise SandboxError(f"no such user: {key}")
        return u

    def find_user(self, key: str) -> User | None:
        if key in self.users:
            return self.users[key]
        k = key.lower()
        uid = self._by_upn.get(k) or self._by_address.get(k)
        return self.users.get(uid) if uid else None

    def resolve_recipients(self, address: str) -> list[User]:
        """Internal users an address delivers to (a mail-enabled group expands to its members)."""
        oid = self._by_address.get(address.lower())
        if oid is None:
            return []
        if oid in self.users:
            return [self.users[oid]]
        return [self.users[m] for m in self.transitive_members(oid) if m in self.users]

    def transitive_members(self, group_id: str) -> list[str]:
        """Users and groups below a group, each once, in a stable (breadth-first) order."""
        seen: dict[str, None] = {}
        queue = list(self.groups[group_id].member_ids)
        while queue:
            m = queue.pop(0)
            if m in seen:
                continue
            seen[m] = None
            if m in self.groups:
                queue.extend(self.groups[m].member_ids)
        return list(seen)

    def is_internal(self, address: str) -> bool:
        dom = address.rsplit("@", 1)[-1].lower()
        return dom in {d.name for d in self.domains}

    # ------------------------------------------------------------ mailboxes and folders

    def mailbox(self, user_key: str) -> Mailbox:
        u = self.user(user_key)
        mb = self.mailboxes.get(u.id)
        if mb is None:
            raise SandboxError(f"user {u.user_principal_name} has no mailbox")
        return mb

    def _create_mailbox(self, user_id: str) -> None:
        mb = Mailbox(user_id=user_id)
        self.mailboxes[user_id] = mb
        for name, display, parent in WELL_KNOWN_FOLDERS:
            fid = ids.exchange_id(user_id, "folder", name)
            mb.well_known[name] = fid
            parent_id = mb.well_known[parent] if parent else ""
            self._put_folder(mb, Folder(id=fid, mailbox=user_id, display_name=display, well_known=name), parent_id)

    def _put_folder(self, mb: Mailbox, f: Folder, parent_id: str) -> None:
        seq = self._next_seq()
        f.seq = f.full_seq = seq
        f.history.append((seq, parent_id))
        mb.folders[f.id] = f
        mb.folder_items.setdefault(f.id, {})
        mb.folder_log.append((seq, f.id))
        if parent_id in mb.folders:
            self._touch_folder(mb, parent_id)  # its childFolderCount changed

    def _touch_folder(self, mb: Mailbox, folder_id: str) -> None:
        f = mb.folders[folder_id]
        seq = self._next_seq()
        f.seq = f.full_seq = seq
        mb.folder_log.append((seq, folder_id))

    def folder_id(self, user_key: str, name_or_id: str) -> str:
        """A folder id from an id, a well-known name, or a path like 'Inbox/Customers'."""
        mb = self.mailbox(user_key)
        if name_or_id in mb.folders and not mb.folders[name_or_id].deleted:
            return name_or_id
        wk = mb.well_known.get(name_or_id.lower())
        if wk:
            return wk
        if "/" in name_or_id:
            parent = mb.well_known["msgfolderroot"]
            for part in name_or_id.split("/"):
                parent = self._child_by_name(mb, parent, part)
            return parent
        raise SandboxError(f"no folder {name_or_id!r} in {user_key}")

    def _child_by_name(self, mb: Mailbox, parent: str, name: str) -> str:
        for f in mb.folders.values():
            if f.container == parent and f.display_name.lower() == name.lower():
                return f.id
        raise SandboxError(f"no folder {name!r} under {mb.folders[parent].display_name!r}")

    def child_folders(self, mb: Mailbox, parent_id: str) -> list[Folder]:
        return [f for f in mb.folders.values() if f.container == parent_id]

    def create_folder(self, user_key: str, parent: str, display_name: str) -> str:
        with self.lock:
            mb = self.mailbox(user_key)
            parent_id = self.folder_id(user_key, parent)
            for f in self.child_folders(mb, parent_id):
                if f.display_name.lower() == display_name.lower():
                    return f.id
            fid = ids.exchange_id(mb.user_id, "folder", parent_id, display_name.lower())
            self._put_folder(mb, Folder(id=fid, mailbox=mb.user_id, display_name=display_name), parent_id)
            return fid

    def ensure_folder_path(self, user_key: str, path: str) -> str:
        """'Inbox/Customers/Fabrikam' -> the id of the last folder, creating what is missing."""
        parts = path.split("/")
        fid = self.folder_id(user_key, parts[0])
        for p in parts[1:]:
            fid = self.create_folder(user_key, fid, p)
        return fid

    def rename_folder(self, user_key: str, folder: str, display_name: str) -> None:
        with self.lock:
            mb = self.mailbox(user_key)
            fid = self.folder_id(user_key, folder)
            mb.folders[fid].display_name = display_name
            self._touch_folder(mb, fid)

    def delete_folder(self, user_key: str, folder: str) -> None:
        """Hard-delete a user folder, its subfolders and their messages (tombstones for delta)."""
        with self.lock:
            mb = self.mailbox(user_key)
            fid = self.folder_id(user_key, folder)
            if mb.folders[fid].well_known:
                raise SandboxError("well-known folders cannot be deleted")
            for child in self.child_folders(mb, fid):
                self.delete_folder(user_key, child.id)
            for mid in list(mb.folder_items.get(fid, {})):
                self._place_message(mb, mb.messages[mid], None)
            f = mb.folders[fid]
            parent = f.container
            seq = self._next_seq()
            f.seq = f.full_seq = seq
            f.history.append((seq, None))
            mb.folder_log.append((seq, fid))
            if parent:
                self._touch_folder(mb, parent)

    def folder_path(self, mb: Mailbox, folder_id: str) -> str:
        parts = []
        f = mb.folders.get(folder_id)
        while f is not None and f.well_known != "msgfolderroot":
            parts.append(f.display_name)
            f = mb.folders.get(f.container or "")
        return "/".join(reversed(parts))

    def folder_counts(self, mb: Mailbox, folder_id: str) -> tuple[int, int]:
        items = mb.folder_items.get(folder_id, {})
        unread = sum(1 for m in items if not mb.messages[m].is_read)
        return len(items), unread

    # ------------------------------------------------------------ messages

    def _place_message(self, mb: Mailbox, m: Message, folder_id: str | None, *, full: bool = True) -> int:
        seq = self._next_seq()
        old = m.container
        if old is not None:
            mb.folder_items[old].pop(m.id, None)
        if folder_id is not None:
            mb.folder_items.setdefault(folder_id, {})[m.id] = None
        m.history.append((seq, folder_id))
        m.seq = seq
        if full:
            m.full_seq = seq
        mb.message_log.append((seq, m.id))
        return seq

    def deliver_message(
        self,
        sender: str,
        to: Iterable[str] = (),
        cc: Iterable[str] = (),
        bcc: Iterable[str] = (),
        *,
        subject: str,
        sent: datetime | None = None,
        reply_to: MessageContent | None = None,
        has_attachments: bool = False,
        importance: str = "normal",
        names: dict[str, str] | None = None,
        folders: dict[str, str] | None = None,
        read_by: Iterable[str] = (),
        internet_message_id: str | None = None,
        delivery_delay: timedelta = timedelta(seconds=4),
    ) -> MessageContent:
        """Send an email: a copy in the sender's Sent Items (if internal) and one per internal recipient.

        names: address -> display name for external parties. folders: user id -> folder (id, well-known
        name or path) the recipient's copy is filed in (default inbox). read_by: user ids whose copy is
        already read (the sender's own copy always is).
        """
        with self.lock:
            when = _utc(sent or self.now())
            names = names or {}

            def party(addr: str) -> tuple[str, str]:
                u = self.find_user(addr)
                if u is not None:
                    return (u.display_name, addr)
                g = self._by_address.get(addr.lower())
                if g in self.groups:
                    return (self.groups[g].display_name, addr)
                return (names.get(addr.lower(), names.get(addr, addr)), addr)

            to_l, cc_l, bcc_l = [party(a) for a in to], [party(a) for a in cc], [party(a) for a in bcc]
            self._msg_counter += 1
            n = self._msg_counter
            sender_domain = sender.rsplit("@", 1)[-1].lower()
            if reply_to is not None:
                replies = len(_b64decode(reply_to.conversation_index)) // 5 - 4 + 1
                conv_id = reply_to.conversation_id
                conv_idx = ids.conversation_index(_b64decode(reply_to.conversation_index)[:22], replies, when)
                refs = [*reply_to.references, reply_to.internet_message_id][-10:]
                if not subject.lower().startswith(("re:", "fw:", "aw:")):
                    subject = f"RE: {subject}"
            else:
                conv_id = ids.conversation_id(self.seed, n, subject)
                conv_idx = ids.conversation_index(ids.conversation_header(self.seed, when, n), 0, when)
                refs = []
            content = MessageContent(
                internet_message_id=internet_message_id or ids.internet_message_id(self.seed, sender_domain, n),
                conversation_id=conv_id,
                conversation_index=conv_idx,
                subject=subject,
                sender=party(sender),
                from_=party(sender),
                to=to_l,
                cc=cc_l,
                bcc=bcc_l,
                sent=when,
                has_attachments=has_attachments,
                importance=importance,
                in_reply_to=reply_to.internet_message_id if reply_to else None,
                references=refs,
            )
            read = set(read_by)
            folders = folders or {}
            s = self.find_user(sender)
            if s is not None and s.has_mailbox:
                self._add_copy(s.id, content, "sentitems", when, is_read=True, sender_copy=True)
            delivered: set[str] = {s.id} if s is not None else set()
            for addr in [*to, *cc, *bcc]:
                for r in self.resolve_recipients(addr):
                    if r.id in delivered or not r.has_mailbox:
                        continue
                    delivered.add(r.id)
                    self._add_copy(
                        r.id, content, folders.get(r.id, "inbox"), when + delivery_delay, is_read=r.id in read
                    )
            return content

    def _add_copy(
        self,
        user_id: str,
        content: MessageContent,
        folder: str,
        received: datetime,
        *,
        is_read: bool,
        sender_copy: bool = False,
        is_draft: bool = False,
        ordinal: int = 0,
    ) -> Message:
        """One mailbox copy of a message. `ordinal` > 0 files further copies of it in the same mailbox
        (an archive that held the email in several folders); 0 keeps the ids a delivery gives."""
        mb = self.mailboxes[user_id]
        fid = self.ensure_folder_path(user_id, folder) if "/" in folder else self.folder_id(user_id, folder)
        extra = (ordinal,) if ordinal else ()
        mid = ids.immutable_id(user_id, "msg", content.internet_message_id, sender_copy, is_draft, *extra)
        if mid in mb.messages and not mb.messages[mid].deleted:
            return mb.messages[mid]  # same message delivered twice to one mailbox: Exchange dedupes
        m = Message(
            id=mid,
            mailbox=user_id,
            content=content,
            received=received,
            created=received,
            modified=received,
            is_read=is_read,
            is_draft=is_draft,
            is_sender_copy=sender_copy,
        )
        mb.messages[mid] = m
        self._copies.setdefault(content.internet_message_id, []).append(m)
        self._place_message(mb, m, fid)
        return m

    def save_draft(self, user_key: str, to: Iterable[str], *, subject: str, when: datetime | None = None) -> Message:
        with self.lock:
            u = self.user(user_key)
            when = _utc(when or self.now())
            self._msg_counter += 1
            n = self._msg_counter
            addr = u.mail or u.user_principal_name
            content = MessageContent(
                internet_message_id=ids.internet_message_id(self.seed, "draft", n),
                conversation_id=ids.conversation_id(self.seed, n, subject),
                conversation_index=ids.conversation_index(ids.conversation_header(self.seed, when, n), 0, when),
                subject=subject,
                sender=(u.display_name, addr),
                from_=(u.display_name, addr),
                to=[(a, a) for a in to],
                cc=[],
                bcc=[],
                sent=when,
            )
            return self._add_copy(u.id, content, "drafts", when, is_read=True, sender_copy=True, is_draft=True)

    def message(self, user_key: str, message_id: str) -> Message:
        mb = self.mailbox(user_key)
        m = mb.messages.get(message_id)
        if m is None or m.deleted:
            raise SandboxError(f"no message {message_id} in {user_key}")
        return m

    def messages_in(self, user_key: str, folder: str) -> list[Message]:
        mb = self.mailbox(user_key)
        return [mb.messages[i] for i in mb.folder_items.get(self.folder_id(user_key, folder), {})]

    def copies_of(self, internet_message_id: str) -> list[Message]:
        """Every live copy of one email, across mailboxes."""
        return [m for m in self._copies.get(internet_message_id, []) if not m.deleted]

    def mark_read(self, user_key: str, message_id: str, read: bool = True, *, when: datetime | None = None) -> None:
        """A partial update: delta reports only id + isRead."""
        with self.lock:
            mb = self.mailbox(user_key)
            m = self.message(user_key, message_id)
            if m.is_read == read:
                return
            m.is_read = read
            seq = self._next_seq()
            m.seq = seq
            m.field_seqs["isRead"] = seq
            m.modified = _utc(when or self.now())
            mb.message_log.append((seq, m.id))

    def move_message(self, user_key: str, message_id: str, folder: str, *, when: datetime | None = None) -> None:
        with self.lock:
            mb = self.mailbox(user_key)
            m = self.message(user_key, message_id)
            fid = self.ensure_folder_path(user_key, folder) if "/" in folder else self.folder_id(user_key, folder)
            if m.container == fid:
                return
            m.modified = _utc(when or self.now())
            self._place_message(mb, m, fid)

    def delete_message(
        self, user_key: str, message_id: str, *, hard: bool = False, when: datetime | None = None
    ) -> None:
        """Soft delete moves to Deleted Items (as Outlook does); hard delete, or deleting from Deleted
        Items, removes the item for good."""
        with self.lock:
            mb = self.mailbox(user_key)
            m = self.message(user_key, message_id)
            if hard or m.container == mb.well_known["deleteditems"]:
                self._place_message(mb, m, None)
            else:
                self.move_message(user_key, message_id, "deleteditems", when=when)

    # ------------------------------------------------------------ events

    def create_event(
        self,
        organizer: str,
        attendees: Iterable[tuple[str, str] | Attendee] = (),
        *,
        subject: str,
        start: datetime,
        end: datetime,
        is_all_day: bool = False,
        is_online: bool = False,
        location: str | None = None,
        recurrence: Recurrence | None = None,
        responses: dict[str, str] | None = None,
        names: dict[str, str] | None = None,
        created: datetime | None = None,
    ) -> Meeting:
        """A meeting in the organizer's calendar and each internal attendee's (recurring: expanded).

        attendees: (address, type) pairs or Attendee objects; responses: address -> response.
        """
        with self.lock:
            names = names or {}
            responses = {k.lower(): v for k, v in (responses or {}).items()}
            org_user = self.user(organizer)
            org_addr = org_user.mail or org_user.user_principal_name
            people: list[Attendee] = []
            for a in attendees:
                if isinstance(a, Attendee):
                    people.append(a)
                    continue
                addr, kind = a
                u = self.find_user(addr)
                name = u.display_name if u else names.get(addr.lower(), addr)
                resp = responses.get(addr.lower(), "none")
                when = (created or self.now()) if resp not in ("none", "notResponded") else None
                people.append(Attendee(name, addr, kind, resp, when))
            start, end = _utc(start), _utc(end)
            uid = "040000008200E00074C5B7101A82E008" + ids.short_hex(self.seed, "ical", len(self.meetings), size=28)
            meeting = Meeting(
                uid=uid.upper(),
                organizer=(org_user.display_name, org_addr),
                attendees=people,
                subject=subject,
                start=start,
                end=end,
                is_all_day=is_all_day,
                is_online=is_online,
                location=location,
                recurrence=recurrence,
            )
            self.meetings[meeting.uid] = meeting
            calendars = [org_user.id]
            for a in people:
                for u in self.resolve_recipients(a.address):
                    if u.has_mailbox and u.id not in calendars:
                        calendars.append(u.id)
            for cal in calendars:
                if cal in self.mailboxes:
                    self._materialize(meeting, cal, created or self.now())
            return meeting

    def _occurrence_starts(self, meeting: Meeting) -> list[datetime]:
        assert meeting.recurrence is not None
        return [s for s in meeting.recurrence.starts(meeting.start) if s not in meeting.cancelled_occurrences]

    def _materialize(self, meeting: Meeting, user_id: str, created: datetime) -> None:
        mb = self.mailboxes[user_id]
        copies = meeting.copies.setdefault(user_id, {})
        if meeting.recurrence is None:
            copies[None] = self._put_event(mb, meeting, "singleInstance", None, None, created)
            return
        master = self._put_event(mb, meeting, "seriesMaster", None, None, created)
        copies[None] = master
        for s in self._occurrence_starts(meeting):
            kind = "exception" if s in meeting.exceptions else "occurrence"
            copies[s] = self._put_event(mb, meeting, kind, master, s, created)

    def _put_event(
        self,
        mb: Mailbox,
        meeting: Meeting,
        kind: str,
        master_id: str | None,
        original_start: datetime | None,
        created: datetime,
    ) -> str:
        u = self.users[mb.user_id]
        is_org = meeting.organizer[1].lower() in u.addresses()
        eid = ids.exchange_id(mb.user_id, "event", meeting.uid, original_start)
        if original_start is None:
            start, end, subject, ical = meeting.start, meeting.end, meeting.subject, meeting.uid
        else:
            dur = meeting.end - meeting.start
            start, end, subject = meeting.exceptions.get(
                original_start, (original_start, original_start + dur, meeting.subject)
            )
            ical = meeting.uid[:-16] + ids.short_hex(meeting.uid, original_start).upper()
        own = next((a for a in meeting.attendees if a.address.lower() in u.addresses()), None)
        ev = Event(
            id=eid,
            mailbox=mb.user_id,
            meeting=meeting,
            type=kind,
            series_master_id=master_id,
            ical_uid=ical,
            original_start=original_start,
            start=start,
            end=end,
            subject=subject,
            is_organizer=is_org,
            attendees=self._attendee_view(meeting, is_org),
            response="organizer" if is_org else (own.response if own else "none"),
            response_time=None if is_org or own is None else own.response_time,
            created=created,
            modified=created,
        )
        mb.events[eid] = ev
        seq = self._next_seq()
        ev.seq = ev.full_seq = seq
        ev.history.append((seq, "calendar"))
        mb.event_log.append((seq, eid))
        return eid

    @staticmethod
    def _attendee_view(meeting: Meeting, is_organizer: bool) -> list[Attendee]:
        # Exchange tracks responses on the organizer's copy; attendees' copies show 'none' for everyone.
        if is_organizer:
            return [Attendee(a.name, a.address, a.type, a.response, a.response_time) for a in meeting.attendees]
        return [Attendee(a.name, a.address, a.type, "none", None) for a in meeting.attendees]

    def _touch_event(self, mb: Mailbox, ev: Event, *, delete: bool = False) -> None:
        seq = self._next_seq()
        ev.seq = ev.full_seq = seq
        ev.modified = self.now()
        ev.history.append((seq, None if delete else "calendar"))
        mb.event_log.append((seq, ev.id))

    def _meeting_events(self, meeting: Meeting, original_start: datetime | None) -> Iterator[tuple[Mailbox, Event]]:
        for user_id, copies in meeting.copies.items():
            mb = self.mailboxes[user_id]
            keys = list(copies) if original_start is None else [original_start]
            for k in keys:
                eid = copies.get(k)
                if eid and not mb.events[eid].deleted:
                    yield mb, mb.events[eid]

    def meeting(self, uid: str) -> Meeting:
        try:
            return self.meetings[uid]
        except KeyError:
            raise SandboxError(f"no meeting {uid}") from None

    def respond_event(self, uid: str, attendee: str, response: str, when: datetime | None = None) -> None:
        """An attendee accepts/declines/tentatively accepts: their copy and the organizer's change."""
        if response not in RESPONSES:
            raise SandboxError(f"unknown response {response!r}")
        with self.lock:
            m = self.meeting(uid)
            when = _utc(when or self.now())
            a = next((a for a in m.attendees if a.address.lower() == attendee.lower()), None)
            if a is None:
                raise SandboxError(f"{attendee} is not invited to {m.subject!r}")
            a.response, a.response_time = response, when
            attendee_users = {u.id for u in self.resolve_recipients(attendee)}
            for mb, ev in list(self._meeting_events(m, None)):
                if ev.is_organizer:
                    ev.attendees = self._attendee_view(m, True)
                elif mb.user_id in attendee_users:
                    ev.response, ev.response_time = response, when
                else:
                    continue
                self._touch_event(mb, ev)

    def cancel_event(self, uid: str, occurrence_start: datetime | None = None) -> None:
        """The organizer cancels the meeting (or one occurrence).

        As in Exchange: the organizer's copy is deleted; attendees' copies stay, with isCancelled true
        and subject 'Canceled: ...', until they remove them (`delete_event`).
        """
        with self.lock:
            m = self.meeting(uid)
            if occurrence_start is not None:
                occurrence_start = _utc(occurrence_start)
                m.cancelled_occurrences.add(occurrence_start)
            else:
                m.cancelled = True
            for mb, ev in list(self._meeting_events(m, occurrence_start)):
                if ev.is_organizer:
                    self._touch_event(mb, ev, delete=True)
                else:
                    ev.is_cancelled = True
                    if not ev.subject.startswith("Canceled: "):
                        ev.subject = "Canceled: " + ev.subject
                    self._touch_event(mb, ev)

    def delete_event(self, user_key: str, event_id: str) -> None:
        """Remove an event from one calendar (a master removes its whole series there)."""
        with self.lock:
            mb = self.mailbox(user_key)
            ev = mb.events.get(event_id)
            if ev is None or ev.deleted:
                raise SandboxError(f"no event {event_id} in {user_key}")
            victims = [ev]
            if ev.type == "seriesMaster":
                victims += [e for e in mb.events.values() if e.series_master_id == ev.id and not e.deleted]
            for v in victims:
                self._touch_event(mb, v, delete=True)

    def reschedule_event(
        self, uid: str, start: datetime, end: datetime, occurrence_start: datetime | None = None
    ) -> None:
        """Move a single meeting, or one occurrence (which becomes an exception), in every calendar."""
        with self.lock:
            m = self.meeting(uid)
            start, end = _utc(start), _utc(end)
            if occurrence_start is None:
                if m.recurrence is not None:
                    raise SandboxError("moving a whole series is not supported; move occurrences")
                m.start, m.end = start, end
            else:
                occurrence_start = _utc(occurrence_start)
                m.exceptions[occurrence_start] = (start, end, m.subject)
            for mb, ev in list(self._meeting_events(m, occurrence_start)):
                if ev.type == "seriesMaster":
                    continue
                ev.start, ev.end = start, end
                if ev.type == "occurrence":
                    ev.type = "exception"
                self._touch_event(mb, ev)

    def events_in(self, user_key: str, start: datetime, end: datetime) -> list[Event]:
        """Live instances (never series masters) overlapping [start, end), as calendarView returns."""
        mb = self.mailbox(user_key)
        return sorted(
            (e for e in mb.events.values() if event_in_window(e, _utc(start), _utc(end))),
            key=lambda e: (e.start, e.id),
        )

    # ------------------------------------------------------------ time and delta state

    def advance(self, delta: timedelta) -> dict[str, int]:
        """Move the clock; the activity hook (the generator's) fills the elapsed period with work,
        moving the clock along to each action so timestamps are those of the moment it happened."""
        if delta < timedelta(0):
            raise SandboxError("the sandbox clock only moves forward")
        with self.lock:
            start = self.now()
            end = start + delta
            counts = self.activity(self, start, end) if self.activity is not None else {}
            self.clock.set(max(end, self.now()))
            return counts

    def expire_delta_tokens(self, user_key: str | None = None) -> None:
        """Every delta/skip link issued so far (for one mailbox, or all) answers 410 SyncStateNotFound."""
        with self.lock:
            users = [self.user(user_key).id] if user_key else list(self.mailboxes)
            for uid in users:
                self.sync_generations[(uid, "*")] = self.sync_generations.get((uid, "*"), 0) + 1

    def expire_scope(self, user_id: str, scope: str) -> None:
        with self.lock:
            self.sync_generations[(user_id, scope)] = self.sync_generations.get((user_id, scope), 0) + 1

    def sync_generation(self, user_id: str, scope: str) -> int:
        return self.sync_generations.get((user_id, "*"), 0) * 1_000_000 + self.sync_generations.get((user_id, scope), 0)

    # ------------------------------------------------------------ truth

    def synced_folder_ids(self, user_key: str, exclude: Iterable[str] = DEFAULT_EXCLUDED_FOLDERS) -> list[str]:
        """Folders a daemon with this exclude list syncs: all live folders except the excluded
        well-known ones, their descendants, and the root."""
        mb = self.mailbox(user_key)
        excluded = {mb.well_known[n] for n in exclude if n in mb.well_known}
        root = mb.well_known["msgfolderroot"]
        out = []
        for f in mb.folders.values():
            if f.deleted or f.id == root:
                continue
            node: Folder | None = f
            skip = False
            while node is not None and node.id != root:
                if node.id in excluded:
                    skip = True
                    break
                node = mb.folders.get(node.container or "")
            if not skip:
                out.append(f.id)
        return out

    def message_truth(
        self, user_key: str, exclude: Iterable[str] = DEFAULT_EXCLUDED_FOLDERS, *, immutable_ids: bool = True
    ) -> set[tuple[str, str]]:
        """(message id, folder id) of every message in the folders a daemon syncs."""
        with self.lock:
            mb = self.mailbox(user_key)
            out = set()
            for fid in self.synced_folder_ids(user_key, exclude):
                for mid in mb.folder_items.get(fid, {}):
                    m = mb.messages[mid]
                    out.add((m.id if immutable_ids else rest_message_id(m), fid))
            return out

    def event_truth(self, user_key: str, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
        """Events of a calendarView window: id -> the fields a daemon keeps."""
        with self.lock:
            return {
                e.id: {
                    "iCalUId": e.ical_uid,
                    "type": e.type,
                    "seriesMasterId": e.series_master_id,
                    "subject": e.subject,
                    "start": e.start,
                    "end": e.end,
                    "isCancelled": e.is_cancelled,
                    "isAllDay": e.meeting.is_all_day if e.meeting else False,
                    "organizer": e.meeting.organizer[1] if e.meeting else None,
                    "attendees": {a.address.lower(): a.response for a in e.attendees},
                    "responseStatus": e.response,
                }
                for e in self.events_in(user_key, start, end)
            }

    def truth(
        self,
        *,
        user: str | None = None,
        exclude: Iterable[str] = DEFAULT_EXCLUDED_FOLDERS,
        window: tuple[datetime, datetime] | None = None,
    ) -> dict[str, Any]:
        """A JSON-ready snapshot of what a correct daemon database holds (for tests and /_sandbox/truth)."""
        with self.lock:
            exclude = tuple(exclude)
            start, end = window or (self.now() - timedelta(days=365), self.now() + timedelta(days=90))
            users = [self.user(user)] if user else list(self.users.values())
            out: dict[str, Any] = {
                "clock": self.now().isoformat(),
                "seq": self.seq,
                "tenantId": self.tenant_id,
                "window": [start.isoformat(), end.isoformat()],
                "mailboxes": {},
            }
            for u in users:
                if u.id not in self.mailboxes:
                    continue
                mb = self.mailboxes[u.id]
                out["mailboxes"][u.id] = {
                    "userPrincipalName": u.user_principal_name,
                    "folders": {f: self.folder_path(mb, f) for f in self.synced_folder_ids(u.id, exclude)},
                    "messages": sorted([m, f] for m, f in self.message_truth(u.id, exclude)),
                    "events": {
                        k: {**v, "start": v["start"].isoformat(), "end": v["end"].isoformat()}
                        for k, v in self.event_truth(u.id, start, end).items()
                    },
                }
            return out

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "users": len(self.users),
                "mailboxes": len(self.mailboxes),
                "messages": sum(1 for mb in self.mailboxes.values() for m in mb.messages.values() if not m.deleted),
                "events": sum(
                    1
                    for mb in self.mailboxes.values()
                    for e in mb.events.values()
                    if not e.deleted and e.type != "seriesMaster"
                ),
                "companies": len(self.crm.companies),
                "contacts": len(self.crm.contacts),
                "seq": self.seq,
            }


def event_in_window(e: Event, start: datetime, end: datetime) -> bool:
    return (
        not e.deleted
        and e.type != "seriesMaster"
        and e.start is not None
        and e.end is not None
        and e.start < end
        and (e.end > start or (e.end == e.start and e.start >= start))
    )


def rest_message_id(m: Message) -> str:
    """The default (non-immutable) REST id: Exchange derives it from the folder, so it changes on move."""
    return ids.exchange_id(m.mailbox, "msg", m.id, m.container)


def _b64decode(s: str) -> bytes:
    import base64

    return base64.b64decode(s)
