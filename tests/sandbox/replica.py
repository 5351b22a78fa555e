"""A minimal client that does what the daemon must: replicate folders, messages and a calendar window
through delta, merging partial updates and honouring @removed. Used to check the sandbox's truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from relinsights.sandbox import SandboxServer

PREFER = 'odata.maxpagesize=40, IdType="ImmutableId"'
EXCLUDED = {"deleteditems", "junkemail", "drafts", "outbox", "syncissues"}


def follow(c: httpx.Client, url: str, **kw: Any) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    r = c.get(url, **kw)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        r = c.get(body["@odata.nextLink"], headers=kw.get("headers"))


class Replica:
    def __init__(self, sb: SandboxServer, user_id: str, window: tuple[datetime, datetime]) -> None:
        self.sb, self.user = sb, user_id
        self.base = f"{sb.graph_url}/users/{user_id}"
        self.folders: dict[str, dict[str, Any]] = {}
        self.folder_links: dict[str, str] = {}  # parent ("" = top) -> deltaLink
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}  # folder -> id -> item
        self.message_links: dict[str, str] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.event_link: str | None = None
        self.window = window
        self.excluded: set[str] = set()

    def client(self) -> httpx.Client:
        return httpx.Client(
            verify=self.sb.ssl_context(),
            timeout=30,
            headers={"Authorization": f"Bearer {self.sb.access_token()}", "Prefer": PREFER},
        )

    def sync(self) -> None:
        with self.client() as c:
            self._sync_folders(c, "", f"{self.base}/mailFolders/delta")
            self.excluded = set()
            for name in EXCLUDED:
                r = c.get(f"{self.base}/mailFolders/{name}", params={"$select": "id"})
                self.excluded.add(r.json()["id"])
            for fid in self.synced_folders():
                self._sync_messages(c, fid)
            items, self.event_link = follow(
                c,
                self.event_link or f"{self.base}/calendarView/delta",
                params=None
                if self.event_link
                else {"startDateTime": self.window[0].isoformat(), "endDateTime": self.window[1].isoformat()},
                headers={"Prefer": 'outlook.timezone="UTC", odata.maxpagesize=7'},
            )
            for e in items:
                assert e.get("type") != "seriesMaster"
                if "@removed" in e:
                    self.events.pop(e["id"], None)
                else:
                    self.events[e["id"]] = e

    def _sync_folders(self, c: httpx.Client, parent: str, initial: str) -> None:
        """Top level through mailFolders/delta, then each level through its childFolders/delta."""
        self._folder_round(c, parent, initial)
        done: set[str] = set()
        queue = list(self.folders)
        while queue:
            fid = queue.pop(0)
            if fid in done or fid not in self.folders:
                continue
            done.add(fid)
            self._folder_round(c, fid, f"{self.base}/mailFolders/{fid}/childFolders/delta")
            queue += [x for x in self.folders if x not in done]

    def _folder_round(self, c: httpx.Client, parent: str, initial: str) -> None:
        items, self.folder_links[parent] = follow(c, self.folder_links.get(parent, initial))
        for f in items:
            if "@removed" in f:
                self.folders.pop(f["id"], None)
                self.messages.pop(f["id"], None)
                self.message_links.pop(f["id"], None)
            else:
                self.folders[f["id"]] = f

    def synced_folders(self) -> list[str]:
        out = []
        for fid in self.folders:
            node: str | None = fid
            while node in self.folders:
                if node in self.excluded:
                    break
                node = self.folders[node]["parentFolderId"]
            else:
                out.append(fid)
        return out

    def _sync_messages(self, c: httpx.Client, fid: str) -> None:
        url = self.message_links.get(fid) or f"{self.base}/mailFolders/{fid}/messages/delta"
        params = None if fid in self.message_links else {"$select": "subject,from,isRead,parentFolderId,conversationId"}
        items, self.message_links[fid] = follow(c, url, params=params)
        box = self.messages.setdefault(fid, {})
        for m in items:
            if "@removed" in m:
                box.pop(m["id"], None)
            else:
                box.setdefault(m["id"], {}).update(m)  # partial updates merge

    def message_pairs(self) -> set[tuple[str, str]]:
        return {(mid, fid) for fid in self.synced_folders() for mid in self.messages.get(fid, {})}
