"""Raw Graph JSON items -> table rows. Tolerant: what is valid is kept, each problem is reported.

A delta update may carry only the changed fields, so the row builders return only the columns whose
source keys are present; the store merges them into the existing row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import idna

MESSAGE_SELECT = [
    "id",
    "internetMessageId",
    "conversationId",
    "conversationIndex",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "sentDateTime",
    "receivedDateTime",
    "isDraft",
    "isRead",
    "parentFolderId",
]
FOLDER_SELECT = ["id", "displayName", "parentFolderId", "childFolderCount"]
USER_SELECT = ["id", "displayName", "mail", "userPrincipalName", "proxyAddresses", "accountEnabled"]

# A message participant's raw_address and name are "" when absent (the raw form when it equals the canonical
# one): the store writes NULL for them (store.MESSAGES.child_blank_is_null), and sqlite3 binds "" faster.
MESSAGE_PARTY_COLUMNS = ("role", "address", "raw_address", "name")
EVENT_PARTY_COLUMNS = ("role", "address", "raw_address", "name", "response")
MAX_ADDRESS = 320
MAX_NAME = 256
MAX_MESSAGE_ID = 998
# A message's participant rows: its recipients. From and sender are columns of the message row (its
# canonical address, the raw one when it differs, the name), not participant rows (migration 0008).
_RECIPIENT_ROLES = (("toRecipients", "to"), ("ccRecipients", "cc"), ("bccRecipients", "bcc"))
_ORIGINATORS = (
    ("from", "from_address", "from_raw_address", "from_name"),
    ("sender", "sender_address", "sender_raw_address", "sender_name"),
)
_ATTENDEE_TYPES = frozenset({"required", "optional", "resource"})
_ALL_MESSAGE_ROLES = frozenset(role for _, role in _RECIPIENT_ROLES)
# Every column parse_message can fill, in the order of the row a complete item gets (ParsedItem.complete).
MESSAGE_COLUMNS = (
    "internet_message_id",
    "conversation_id",
    "conversation_index",
    "subject",
    "from_address",
    "from_raw_address",
    "from_name",
    "sender_address",
    "sender_raw_address",
    "sender_name",
    "sent_at",
    "received_at",
    "is_draft",
    "is_read",
    "in_reply_to",
)
# The keys of a complete message (what a first sync's pages carry for every message): the fast path.
_COMPLETE_MESSAGE = frozenset(MESSAGE_SELECT) - {"id", "parentFolderId"}
_ABSENT = object()  # a key that is missing, as opposed to present with null


@lru_cache(maxsize=65536)
def _domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def canonical_address(raw: Any) -> str | None:
    """Trimmed, lower case, IDNA domain; None when it is not an SMTP address at all."""
    if type(raw) is not str:
        return None
    value = raw.strip().lower()
    if value[:1] == "<" or value[-1:] == ">":
        value = value.strip("<>").strip()
    at = value.rfind("@")
    if at <= 0 or at == len(value) - 1 or " " in value:
        return None
    domain = value[at + 1 :]
    if domain.isascii() and domain[-1] != ".":
        return value  # the common case, without a call per address (this runs for every participant)
    return value[: at + 1] + _domain(domain.rstrip("."))


# A mailbox writes to the same few thousand addresses over and over: each is canonicalised once.
_canonical_cached = lru_cache(maxsize=16384)(canonical_address)


@lru_cache(maxsize=16384)
def _message_address(raw: str) -> tuple[str | None, str | None]:
    """(canonical, raw) of a message's address, the raw form None when it equals the canonical one."""
    addr = canonical_address(raw)
    raw = raw[:MAX_ADDRESS]
    return addr, None if raw == addr else raw


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 instant from Graph as an aware UTC datetime; None when missing or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is UTC:  # Graph's usual "...Z"
        return dt
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_graph_datetime(value: Any) -> tuple[datetime | None, str | None]:
    """A Graph dateTimeTimeZone ({"dateTime", "timeZone"}) in UTC, with a problem text when it is odd."""
    if not isinstance(value, dict):
        return None, "missing dateTimeTimeZone" if value is None else "dateTimeTimeZone is not an object"
    local = value.get("dateTime")
    if not isinstance(local, str):
        return None, "dateTime missing"
    try:
        dt = datetime.fromisoformat(local)
    except ValueError:
        return None, f"invalid dateTime {local[:40]!r}"
    if dt.tzinfo is not None:
        return dt.astimezone(UTC), None
    zone = value.get("timeZone") or "UTC"
    if zone in ("UTC", "Etc/UTC", "tzone://Microsoft/Utc"):
        return dt.replace(tzinfo=UTC), None
    try:
        return dt.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC), None
    except (ZoneInfoNotFoundError, ValueError):
        # We ask for UTC (Prefer: outlook.timezone); a Windows zone name means the header was ignored.
        return dt.replace(tzinfo=UTC), f"time zone {zone!r} not understood, read as UTC"


def _trim(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    return value[:limit]


def _email_address(obj: Any) -> tuple[str | None, str | None, str | None]:
    """(canonical, raw, name) of a Graph recipient {"emailAddress": {"address", "name"}}."""
    ea = obj.get("emailAddress") if type(obj) is dict else None
    if type(ea) is not dict:
        return None, None, None
    raw = ea.get("address")
    name = ea.get("name")
    if type(raw) is not str:
        return None, None, name[:MAX_NAME] if type(name) is str else None
    return (
        _canonical_cached(raw),
        raw[:MAX_ADDRESS],
        name[:MAX_NAME] if type(name) is str else None,
    )


@dataclass(slots=True)
class ParsedItem:
    graph_id: str
    row: dict[str, Any]
    # Tuples in the participant table's column order (MESSAGE_PARTY_COLUMNS / EVENT_PARTY_COLUMNS).
    # None: the item did not carry these keys (a partial update); keep what is stored.
    participants: list[tuple[Any, ...]] | None
    problems: list[str] = field(default_factory=list)
    # The participant roles this item speaks for; stored participants of other roles are kept.
    roles: frozenset[str] = frozenset()
    # The row holds every column the parser fills, in its kind's column order (MESSAGE_COLUMNS).
    complete: bool = False


def _originator(v: Any, key: str, problems: list[str]) -> tuple[str | None, str | None, str | None]:
    """(canonical, raw when it differs, name) of a message's from or sender."""
    ea = v.get("emailAddress") if type(v) is dict else None
    if type(ea) is not dict:
        if v is not None:
            problems.append(f"{key}: no usable address ('None')")
        return None, None, None
    raw = ea.get("address")
    name = ea.get("name")
    addr, raw_kept = _message_address(raw) if type(raw) is str else (None, None)
    if addr is None:
        problems.append(f"{key}: no usable address ({str(raw)[:60]!r})")
    return addr, raw_kept, name[:MAX_NAME] if type(name) is str and name else None


def _recipients(item: dict[str, Any], key: str, role: str, out: list[tuple[Any, ...]], problems: list[str]) -> None:
    value = item.get(key)
    if value is None:
        return
    if type(value) is not list:
        problems.append(f"{key} is not a list")
        return
    append = out.append
    for rec in value:
        ea = rec.get("emailAddress") if type(rec) is dict else None
        raw = ea.get("address") if type(ea) is dict else None
        if type(raw) is str:
            addr, raw_kept = _message_address(raw)
            if addr:
                name = ea.get("name")  # type: ignore[union-attr]  # a dict: it gave raw
                append((role, addr, raw_kept or "", name[:MAX_NAME] if type(name) is str else ""))
                continue
        problems.append(f"{key}: no usable address ({str(raw)[:60]!r})")


def _parse_complete_message(item: dict[str, Any]) -> ParsedItem:
    """A message carrying every selected field (a first sync's pages): one row literal, no key checks."""
    problems: list[str] = []
    v = item["internetMessageId"]
    imid = v[:MAX_MESSAGE_ID] if type(v) is str else None
    v = item["conversationId"]
    conversation = v[:255] if type(v) is str else None
    v = item["conversationIndex"]
    index = v[:4096] if type(v) is str else None
    v = item["subject"]
    subject = v[:4096] if type(v) is str else None
    from_, from_raw, from_name = _originator(item["from"], "from", problems)
    sender, sender_raw, sender_name = _originator(item["sender"], "sender", problems)
    v = item["sentDateTime"]
    sent = parse_time(v)
    if sent is None and v is not None:
        problems.append(f"invalid sentDateTime {str(v)[:40]!r}")
    received = parse_time(item["receivedDateTime"])
    v = item["isDraft"]
    draft = v if type(v) is bool else _as_bool(v, False)
    v = item["isRead"]
    read = v if type(v) is bool else _as_bool(v, None)
    participants: list[tuple[Any, ...]] = []
    for key, role in _RECIPIENT_ROLES:
        _recipients(item, key, role, participants, problems)
    row = {  # MESSAGE_COLUMNS' order
        "internet_message_id": imid,
        "conversation_id": conversation,
        "conversation_index": index,
        "subject": subject,
        "from_address": from_,
        "from_raw_address": from_raw,
        "from_name": from_name,
        "sender_address": sender,
        "sender_raw_address": sender_raw,
        "sender_name": sender_name,
        "sent_at": sent,
        "received_at": received,
        "is_draft": draft,
        "is_read": read,
        "in_reply_to": None,
    }
    return ParsedItem(str(item["id"]), row, participants, problems, _ALL_MESSAGE_ROLES, True)


def parse_message(item: dict[str, Any]) -> ParsedItem:
    # Runs for every message of a first sync: those carry every field and take the fast path.
    if item.keys() >= _COMPLETE_MESSAGE and "internetMessageHeaders" not in item:
        return _parse_complete_message(item)
    problems: list[str] = []
    row: dict[str, Any] = {}
    g = item.get
    v = g("internetMessageId", _ABSENT)
    if v is not _ABSENT:
        row["internet_message_id"] = v[:MAX_MESSAGE_ID] if type(v) is str else None
    v = g("conversationId", _ABSENT)
    if v is not _ABSENT:
        row["conversation_id"] = v[:255] if type(v) is str else None
    v = g("conversationIndex", _ABSENT)
    if v is not _ABSENT:
        row["conversation_index"] = v[:4096] if type(v) is str else None
    v = g("subject", _ABSENT)
    if v is not _ABSENT:
        row["subject"] = v[:4096] if type(v) is str else None
    v = g("sentDateTime", _ABSENT)
    if v is not _ABSENT:
        row["sent_at"] = sent = parse_time(v)
        if sent is None and v is not None:
            problems.append(f"invalid sentDateTime {str(v)[:40]!r}")
    v = g("receivedDateTime", _ABSENT)
    if v is not _ABSENT:
        row["received_at"] = parse_time(v)
    v = g("isDraft", _ABSENT)
    if v is not _ABSENT:
        row["is_draft"] = v if type(v) is bool else _as_bool(v, False)
    v = g("isRead", _ABSENT)
    if v is not _ABSENT:
        row["is_read"] = v if type(v) is bool else _as_bool(v, None)
    headers = g("internetMessageHeaders")
    if isinstance(headers, list):
        for h in headers:
            if isinstance(h, dict) and str(h.get("name", "")).lower() == "in-reply-to":
                row["in_reply_to"] = _trim(h.get("value"), MAX_MESSAGE_ID)

    for key, column, raw_column, name_column in _ORIGINATORS:
        if key in item:
            row[column], row[raw_column], row[name_column] = _originator(item[key], key, problems)

    participants: list[tuple[Any, ...]] | None = None
    roles = frozenset(role for key, role in _RECIPIENT_ROLES if key in item)
    if roles:
        participants = []
        for key, role in _RECIPIENT_ROLES:
            _recipients(item, key, role, participants, problems)
    return ParsedItem(str(item["id"]), row, participants, problems, roles)


def parse_event(item: dict[str, Any]) -> ParsedItem:
    problems: list[str] = []
    row: dict[str, Any] = {}
    g = item.get
    if "iCalUId" in item:
        row["ical_uid"] = _trim(g("iCalUId"), 1024)
    if "seriesMasterId" in item:
        row["series_master_id"] = _trim(g("seriesMasterId"), 255)
    if "type" in item:
        row["event_type"] = _trim(g("type"), 32)
    if "subject" in item:
        row["subject"] = _trim(g("subject"), 4096)
    for key, col in (("start", "start"), ("end", "end")):
        if key in item:
            row[col], problem = parse_graph_datetime(g(key))
            if problem:
                problems.append(f"{key}: {problem}")
    for key, col in (
        ("isAllDay", "is_all_day"),
        ("isCancelled", "is_cancelled"),
        ("isOnlineMeeting", "is_online_meeting"),
    ):
        if key in item:
            row[col] = _as_bool(g(key), False)

    participants: list[tuple[Any, ...]] | None = None
    if "organizer" in item or "attendees" in item:
        participants = []
        organizer = None
        if "organizer" in item:
            organizer, raw, name = _email_address(g("organizer"))
            row["organizer_address"] = organizer
            if organizer:
                participants.append(("organizer", organizer, raw, name, "organizer"))
        attendees = g("attendees")
        if isinstance(attendees, list):
            for att in attendees:
                addr, raw, name = _email_address(att)
                if not addr:
                    problems.append(f"attendee without a usable address ({str(raw)[:60]!r})")
                    continue
                if addr == organizer:
                    continue  # the organizer is often listed among attendees too
                kind = att.get("type") if isinstance(att.get("type"), str) else "required"
                status = att.get("status")
                response = status.get("response") if isinstance(status, dict) else None
                role = kind if kind in _ATTENDEE_TYPES else "required"
                participants.append((role, addr, raw, name, _trim(response, 32)))
        elif attendees is not None:
            problems.append("attendees is not a list")
    roles = (frozenset({"organizer"}) if "organizer" in item else frozenset()) | (
        _ATTENDEE_TYPES if "attendees" in item else frozenset()
    )
    return ParsedItem(str(item["id"]), row, participants, problems, roles)


def _as_bool(value: Any, default: bool | None) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):  # Microsoft's own docs show "isRead": "true"
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
    return default
