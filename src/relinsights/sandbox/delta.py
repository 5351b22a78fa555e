"""Delta rounds from the change log.

A round is defined by (scope, from_seq, to_seq): from_seq is the sequence number the previous round's
deltaLink captured (None for an initial round), to_seq the org's sequence number when the round began.
The list of (item id, how to report it) is computed once per round and cached; pages slice it, and
each page renders items as they are *now* (an item deleted mid-round is reported removed, an item
changed mid-round is reported again in the next round: both are what Graph's at-least-once delta does).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .model import Event, Folder, Mailbox, Message, Tracked, event_in_window

Mode = Literal["full", "partial", "removed"]
RoundItems = list[tuple[str, Mode]]


@dataclass(frozen=True, slots=True)
class RoundKey:
    kind: str  # "msg" | "cal" | "fld"
    mailbox: str
    scope: str  # folder id, parent folder id, or "start|end" of a calendar window
    from_seq: int | None
    to_seq: int
    extra: str = ""  # filters that change the item list ($filter, changeType, $top)


def _changed_since(log: list[tuple[int, str]], from_seq: int, to_seq: int) -> list[str]:
    lo = bisect.bisect_right(log, from_seq, key=lambda e: e[0])
    hi = bisect.bisect_right(log, to_seq, key=lambda e: e[0])
    seen: dict[str, None] = {}
    for _, item_id in log[lo:hi]:
        seen.pop(item_id, None)
        seen[item_id] = None  # ordered by last change
    return list(seen)


def _classify(obj: Tracked, container: str, from_seq: int, now_in: bool, partial_fields: frozenset[str]) -> Mode | None:
    was_in = obj.container_at(from_seq) == container
    if now_in and not was_in:
        return "full"
    if now_in:
        if obj.full_seq > from_seq:
            return "full"
        changed = obj.changed_fields_since(from_seq)
        return "partial" if changed and changed <= partial_fields else ("full" if changed else None)
    return "removed" if was_in else None


def message_round(
    mb: Mailbox,
    folder_id: str,
    from_seq: int | None,
    to_seq: int,
    *,
    accept: Callable[[Message], bool] = lambda m: True,
    change_types: Iterable[str] = ("created", "updated", "deleted"),
    top: int | None = None,
) -> RoundItems:
    kinds = set(change_types)
    if from_seq is None:
        items = [mb.messages[i] for i in mb.folder_items.get(folder_id, {})]
        items = [m for m in items if accept(m)]
        # Newest first, as Outlook hands out an initial sync.
        items.sort(key=lambda m: (m.received or datetime.min, m.id), reverse=True)
        if top is not None:
            items = items[:top]
        return [(m.id, "full") for m in items] if "created" in kinds else []
    out: RoundItems = []
    for mid in _changed_since(mb.message_log, from_seq, to_seq):
        m = mb.messages[mid]
        now_in = m.container == folder_id and accept(m)
        mode = _classify(m, folder_id, from_seq, now_in, frozenset({"isRead"}))
        if mode is None:
            continue
        kind = "deleted" if mode == "removed" else ("created" if m.container_at(from_seq) != folder_id else "updated")
        if kind in kinds:
            out.append((mid, mode))
    return out


def folder_round(mb: Mailbox, parent_id: str, from_seq: int | None, to_seq: int) -> RoundItems:
    if from_seq is None:
        return [(f.id, "full") for f in mb.folders.values() if f.container == parent_id]
    out: RoundItems = []
    for fid in _changed_since(mb.folder_log, from_seq, to_seq):
        f: Folder = mb.folders[fid]
        mode = _classify(f, parent_id, from_seq, f.container == parent_id, frozenset())
        if mode is not None:
            out.append((fid, mode))
    return out


def calendar_round(mb: Mailbox, start: datetime, end: datetime, from_seq: int | None, to_seq: int) -> RoundItems:
    if from_seq is None:
        evs = [e for e in mb.events.values() if event_in_window(e, start, end)]
        evs.sort(key=lambda e: (e.start or datetime.min, e.id))
        return [(e.id, "full") for e in evs]
    out: RoundItems = []
    for eid in _changed_since(mb.event_log, from_seq, to_seq):
        e: Event = mb.events[eid]
        if e.type == "seriesMaster":
            continue
        if event_in_window(e, start, end):
            out.append((eid, "full"))
        elif e.container_at(from_seq) is not None:
            # Existed before (in or out of the window): report it gone. Harmless if the client never saw it.
            out.append((eid, "removed"))
    return out


class RoundCache:
    """Small LRU of computed rounds, so paging a big folder costs one computation, not one per page."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[RoundKey, RoundItems] = OrderedDict()

    def get(self, key: RoundKey, compute: Callable[[], RoundItems]) -> RoundItems:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        value = compute()
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value
