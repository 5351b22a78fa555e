"""Mutations the importer and the scenario loader need that `Org`'s public API does not offer (yet).

Each function says which model change would replace it. They run before the org is served (no delta
round has seen the items yet), and keep the model's own bookkeeping: sequence numbers, change logs and
`copies_of`.

- `file_copy`: put one copy of an email in a given folder of a given mailbox. `deliver_message` decides
  the mailboxes itself (the sender's Sent Items, each internal recipient's Inbox), while an archive
  already records where each copy was; and Exchange allows several copies of one email in one mailbox
  (one per folder it was filed or copied to), which `_add_copy` collapses.
  Wanted in model.py: `Org.file_copy(user, content, folder, *, received, is_read, sender_copy)`.
- `set_conversation`: a given conversation id (a scenario's "X") on a just-delivered email.
  Wanted: a `conversation` argument to `deliver_message`.
- `make_external_organizer`: a meeting organised outside the tenant (an invitation from a customer).
  Wanted: `create_event` accepting an organizer address that is not a user.
"""

from __future__ import annotations

from datetime import datetime

from . import ids
from .model import Attendee, Meeting, Message, MessageContent, Org


def file_copy(
    org: Org,
    user_id: str,
    content: MessageContent,
    folder_id: str,
    *,
    received: datetime,
    sender_copy: bool,
    is_read: bool = True,
    ordinal: int = 0,
) -> Message:
    """One copy of `content` in folder `folder_id` of `user_id`'s mailbox.

    ordinal: 0 for the first copy of this email in this mailbox (same immutable id as `deliver_message`
    would give it), 1, 2, ... for further copies in other folders of the same mailbox.
    """
    with org.lock:
        return org._add_copy(
            user_id, content, folder_id, received, is_read=is_read, sender_copy=sender_copy, ordinal=ordinal
        )


MAX_THREAD_DEPTH = 30  # the conversation index grows 5 bytes per reply; no real thread is deeper


def conversation_start(seed: int, key: str, first_sent: datetime) -> tuple[str, bytes]:
    """(conversationId, the 22-byte index header) of conversation `key` begun at `first_sent`.

    Exchange derives the id from the thread's first index header, so every message (and every copy)
    of one conversation shares both.
    """
    return ids.conversation_id(seed, "topic", key), ids.conversation_header(seed, first_sent, "topic", key)


def conversation_index(header: bytes, position: int, sent: datetime) -> str:
    """The index of the `position`-th message (0: the first) of a conversation."""
    return ids.conversation_index(header, min(position, MAX_THREAD_DEPTH), sent)


def set_conversation(org: Org, content: MessageContent, key: str, first_sent: datetime, position: int) -> None:
    """Give a just-delivered email the conversation named `key`, as its `position`-th message."""
    with org.lock:
        content.conversation_id, header = conversation_start(org.seed, key, first_sent)
        content.conversation_index = conversation_index(header, position, content.sent)


def make_external_organizer(org: Org, meeting: Meeting, organizer: tuple[str, str]) -> None:
    """Turn a meeting created by an internal host into one organised by `organizer` (name, address),
    an outsider: every internal calendar then holds an attendee's copy, as an invitation from outside
    leaves it (the host must be one of the meeting's attendees)."""
    with org.lock:
        meeting.organizer = organizer
        for user_id, copies in meeting.copies.items():
            mb = org.mailboxes[user_id]
            addresses = org.users[user_id].addresses()
            own = next((a for a in meeting.attendees if a.address.lower() in addresses), None)
            for event_id in copies.values():
                ev = mb.events[event_id]
                ev.is_organizer = False
                ev.response = own.response if own else "none"
                ev.response_time = own.response_time if own else None
                # Attendees' copies do not carry the others' responses (only the organizer's does).
                ev.attendees = [Attendee(a.name, a.address, a.type, "none", None) for a in meeting.attendees]
