"""A scripted Graph behind respx: just enough state to drive delta rounds page by page.

It keeps a change log per folder (and for the calendar), so a delta round returns exactly the items that
changed since the token's position, paged by `Prefer: odata.maxpagesize`. Tests mutate it between rounds
and can queue faults (429, 410, dropped connections) for the next matching requests.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

BASE = "https://graph.test/v1.0"
_MAXPAGE = re.compile(r"odata\.maxpagesize=(\d+)")


def message(mid: str, folder: str, sender: str, to: list[str], sent: str, **extra: Any) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.message",
        "id": mid,
        "internetMessageId": f"<{mid}@example>",
        "conversationId": extra.pop("conversation", f"conv-{mid}"),
        "subject": extra.pop("subject", f"subject {mid}"),
        "from": {"emailAddress": {"address": sender, "name": sender.split("@")[0]}},
        "sender": {"emailAddress": {"address": sender, "name": sender.split("@")[0]}},
        "toRecipients": [{"emailAddress": {"address": a, "name": a}} for a in to],
        "ccRecipients": [],
        "bccRecipients": [],
        "sentDateTime": sent,
        "receivedDateTime": sent,
        "isDraft": False,
        "isRead": False,
        "parentFolderId": folder,
        **extra,
    }


def event(eid: str, organizer: str, attendees: list[tuple[str, str]], start: str, end: str, **extra: Any) -> dict:
    return {
        "id": eid,
        "iCalUId": extra.pop("ical", f"ical-{eid}"),
        "type": "singleInstance",
        "subject": f"meeting {eid}",
        "isAllDay": False,
        "isCancelled": False,
        "isOnlineMeeting": True,
        "start": {"dateTime": start, "timeZone": "UTC"},
        "end": {"dateTime": end, "timeZone": "UTC"},
        "organizer": {"emailAddress": {"address": organizer, "name": organizer}},
        "attendees": [
            {
                "type": "required",
                "status": {"response": resp, "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {"address": a, "name": a},
            }
            for a, resp in attendees
        ],
        **extra,
    }


@dataclass
class Stream:
    """A change log: (seq, item id, payload or None for removed)."""

    log: list[tuple[int, str, dict[str, Any] | None]] = field(default_factory=list)
    min_valid_seq: int = 0  # tokens older than this are expired (410)


class FakeGraph:
    def __init__(self, user_id: str = "u1", address: str = "seller@contoso.com"):
        self.user_id = user_id
        self.address = address
        self.seq = 0
        self.folders: dict[str, dict[str, Any]] = {
            "inbox-id": {"id": "inbox-id", "displayName": "Inbox", "parentFolderId": "root", "childFolderCount": 1},
            "sent-id": {"id": "sent-id", "displayName": "Sent Items", "parentFolderId": "root", "childFolderCount": 0},
            "deleted-id": {
                "id": "deleted-id",
                "displayName": "Deleted Items",
                "parentFolderId": "root",
                "childFolderCount": 0,
            },
            "cust-id": {
                "id": "cust-id",
                "displayName": "Customers",
                "parentFolderId": "inbox-id",
                "childFolderCount": 0,
            },
        }
        self.well_known = {"inbox": "inbox-id", "sentitems": "sent-id", "deleteditems": "deleted-id"}
        self.streams: dict[str, Stream] = defaultdict(Stream)
        self.state: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # stream -> id -> item
        self.faults: list[list[Any]] = []  # [url part, response or exception, matching requests to let pass]
        self.requests: list[httpx.Request] = []
        self.no_mailbox: set[str] = set()

    # ---- mutations ----
    def put(self, stream: str, item: dict[str, Any], partial: dict[str, Any] | None = None) -> None:
        self.seq += 1
        key = item.get("id") or f"(no id {self.seq})"  # Graph never sends this; the client must cope anyway
        self.state[stream][key] = item
        self.streams[stream].log.append((self.seq, key, partial if partial is not None else item))

    def remove(self, stream: str, item_id: str) -> None:
        self.seq += 1
        self.state[stream].pop(item_id, None)
        self.streams[stream].log.append((self.seq, item_id, None))

    def mark_read(self, stream: str, item_id: str) -> None:
        item = {**self.state[stream][item_id], "isRead": True}
        self.put(stream, item, partial={"id": item_id, "isRead": True})

    def expire_tokens(self, stream: str) -> None:
        self.seq += 1  # a new generation: tokens issued from now on are valid
        self.streams[stream].min_valid_seq = self.seq

    def fail(self, path_part: str, response: httpx.Response | Exception, after: int = 0) -> None:
        self.faults.append([path_part, response, after])

    # ---- HTTP ----
    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        for i, (part, resp, after) in enumerate(self.faults):
            if part in url:
                if after:
                    self.faults[i][2] -= 1
                    break
                del self.faults[i]
                if isinstance(resp, Exception):
                    raise resp
                return resp
        path = urlsplit(url).path.removeprefix("/v1.0").replace("()", "")  # the SDK sends delta()
        qs = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        if path == "/domains":
            return _json(
                {
                    "value": [
                        {"id": "contoso.com", "isVerified": True},
                        {"id": "contoso.onmicrosoft.com", "isVerified": True},
                    ]
                }
            )
        if path == "/users":
            return _json(
                {
                    "value": [
                        {
                            "id": self.user_id,
                            "mail": self.address,
                            "displayName": "Seller",
                            "userPrincipalName": self.address,
                            "accountEnabled": True,
                            "proxyAddresses": [f"SMTP:{self.address}", "smtp:alias@contoso.com"],
                        }
                    ]
                }
            )
        m = re.fullmatch(r"/users/([^/]+)/(.*)", path)
        if not m:
            return _error(404, "Request_ResourceNotFound", "no route")
        if m.group(1) in self.no_mailbox:
            return _error(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        rest = m.group(2)
        page = (
            int(_MAXPAGE.search(request.headers.get("Prefer", "")).group(1))
            if _MAXPAGE.search(request.headers.get("Prefer", ""))
            else 10
        )
        if rest == "mailFolders/delta":
            return _json(
                {
                    "value": [f for f in self.folders.values() if f["parentFolderId"] == "root"],
                    "@odata.deltaLink": f"{BASE}/users/{self.user_id}/mailFolders/delta?$deltatoken=f",
                }
            )
        cm = re.fullmatch(r"mailFolders/([^/]+)/childFolders/delta", rest)
        if cm:
            return _json(
                {
                    "value": [f for f in self.folders.values() if f["parentFolderId"] == cm.group(1)],
                    "@odata.deltaLink": f"{BASE}/users/{self.user_id}/mailFolders/{cm.group(1)}/childFolders/delta?$deltatoken=c",
                }
            )
        fm = re.fullmatch(r"mailFolders/([^/]+)", rest)
        if fm:
            fid = self.well_known.get(fm.group(1), fm.group(1))
            if fid not in self.folders:
                return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            return _json(self.folders[fid])
        mm = re.fullmatch(r"mailFolders/([^/]+)/messages/delta", rest)
        if mm:
            return self._delta(f"mail:{mm.group(1)}", qs, page, url.split("?")[0])
        if rest == "calendarView/delta":
            return self._delta("calendar", qs, page, url.split("?")[0])
        return _error(404, "Request_ResourceNotFound", rest)

    def _delta(self, stream_name: str, qs: dict[str, str], page: int, base: str) -> httpx.Response:
        stream = self.streams[stream_name]
        if "$deltatoken" in qs or "$skiptoken" in qs:
            since, upto, offset = (int(x) for x in (qs.get("$skiptoken") or qs["$deltatoken"]).split("."))
            if upto < stream.min_valid_seq:
                return _error(410, "SyncStateNotFound", "The sync state generation is not found.")
            if "$deltatoken" in qs:
                upto = self.seq  # a new round covers every change made since the last one
        else:
            since, upto, offset = 0, self.seq, 0
        if since == 0 and "$deltatoken" not in qs:
            items = list(self.state[stream_name].values())  # initial round: the current state
        else:
            latest: dict[str, dict[str, Any] | None] = {}
            for seq, iid, payload in stream.log:
                if since < seq <= upto:
                    prev = latest.get(iid)
                    partial = payload is not None and "subject" not in payload and "start" not in payload
                    latest[iid] = {**prev, **payload} if prev and partial and payload else payload
            items = [p if p is not None else {"id": i, "@removed": {"reason": "deleted"}} for i, p in latest.items()]
        chunk = items[offset : offset + page]
        body: dict[str, Any] = {"@odata.context": f"{BASE}/$metadata#Collection(message)", "value": chunk}
        if offset + page < len(items):
            body["@odata.nextLink"] = f"{base}?$skiptoken={since}.{upto}.{offset + page}"
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={upto}.{upto}.0"
        return _json(body)


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return _json(
        {"error": {"code": code, "message": message, "innerError": {"request-id": "r", "date": "2026-01-01T00:00:00"}}},
        status,
        headers,
    )


def throttled(retry_after: str = "0") -> httpx.Response:
    return _error(
        429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", {"Retry-After": retry_after}
    )


def unavailable() -> httpx.Response:
    return _error(503, "ServiceUnavailable", "Service unavailable", {"Retry-After": "0"})
