"""Delta sync of one mailbox: its folder tree, the messages of every synced folder, its calendar window.

Per delta stream (a folder's messages, a folder level, the calendar) the state machine is:

    no cursor -> full round (initial request, nextLinks...) -> deltaLink stored -> incremental rounds
    any round --410 / SyncStateNotFound--> new full round (round + 1), rows it does not see are dropped

Each page and its next link commit together (store.apply_page), so a crash resumes exactly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from sqlalchemy import Engine, delete, insert, select, update

from relinsights.config import TenantConfig
from relinsights.db.models import Mailbox, SyncCursor
from relinsights.graph.client import (
    AuthFailed,
    CursorExpired,
    GraphClient,
    GraphError,
    MailboxNotEnabled,
    NotFound,
    PermissionDenied,
    ThrottledTooLong,
)
from relinsights.graph.parse import FOLDER_SELECT, MESSAGE_SELECT
from relinsights.graph.store import (
    EVENTS,
    MESSAGES,
    CursorAdvance,
    ItemKind,
    PageResult,
    apply_page,
    cursor_t,
    delete_folder_data,
    folder_t,
    get_or_create_cursor,
    start_full_round,
)

log = structlog.get_logger(__name__)

# How far the calendar window may lag behind `now - lookback_days` before a new window is started.
CALENDAR_REWINDOW = timedelta(days=1)
MAX_RESYNCS_PER_ROUND = 2
KNOWN_FOLDERS = (
    "inbox",
    "sentitems",
    "deleteditems",
    "junkemail",
    "drafts",
    "outbox",
    "syncissues",
    "archive",
)


FATAL_FOR_MAILBOX = (AuthFailed, PermissionDenied, MailboxNotEnabled, ThrottledTooLong)


class Stopping(Exception):
    """The daemon is shutting down; the current page is committed, the rest waits for the next start."""


@dataclass
class MailboxSyncResult:
    messages_added: int = 0
    messages_updated: int = 0
    messages_removed: int = 0
    events_added: int = 0
    events_updated: int = 0
    events_removed: int = 0
    folders_synced: int = 0
    resyncs: int = 0
    problems: int = 0
    calendar_error: str | None = None
    failed_folders: list[str] = field(default_factory=list)


@dataclass
class MailboxSync:
    client: GraphClient
    engine: Engine
    tenant: TenantConfig
    mailbox: Mailbox
    on_progress: Callable[[int], None] = lambda n: None
    should_stop: Callable[[], bool] = lambda: False
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    result: MailboxSyncResult = field(default_factory=MailboxSyncResult)

    def __post_init__(self) -> None:
        # Exchange allows 4 concurrent requests per mailbox; more only earns 429 MailboxConcurrency.
        self._sem = asyncio.Semaphore(self.tenant.sync.per_mailbox_concurrency)
        # Folders of one mailbox share rows (a moved message leaves one folder and enters another):
        # their pages are written one at a time so a move never races with its own removal.
        self._write_lock = threading.Lock()
        self._log = log.bind(tenant=self.tenant.name, mailbox=self.mailbox.address)
        self._headers = {
            "Prefer": f'odata.maxpagesize={self.tenant.sync.page_size}, IdType="ImmutableId"',
        }

    @property
    def _pk(self) -> int:
        assert self.mailbox.id is not None
        return self.mailbox.id

    @property
    def _users(self) -> Any:
        return self.client.sdk.users.by_user_id(self.mailbox.user_id)

    async def run(self) -> MailboxSyncResult:
        folders = await self.sync_folders()
        self.result.folders_synced = len(folders)

        async def one(folder_id: str) -> None:
            async with self._sem:
                try:
                    await self.sync_messages(folder_id)
                except NotFound:
                    # Deleted between the folder round and now: the next folder round removes it.
                    self._log.info("sync.folder_vanished", folder=folder_id)
                except FATAL_FOR_MAILBOX:
                    raise
                except GraphError as exc:
                    # One broken folder does not stop the others; the mailbox reports it.
                    self.result.failed_folders.append(f"{folder_id}: {exc}")

        try:
            async with asyncio.TaskGroup() as tg:
                for f in folders:
                    tg.create_task(one(f))
                if self.tenant.sync.calendar:
                    tg.create_task(self._calendar_guarded())
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        if self.result.failed_folders and len(self.result.failed_folders) == len(folders):
            raise GraphError("every folder failed: " + "; ".join(self.result.failed_folders[:3]))
        return self.result

    async def _calendar_guarded(self) -> None:
        async with self._sem:
            try:
                await self.sync_calendar()
            except (AuthFailed, ThrottledTooLong, MailboxNotEnabled):
                raise
            except GraphError as exc:
                # Mail keeps syncing when only the calendar fails (Calendars.Read not granted, say).
                fix = getattr(exc, "fix", "")
                self.result.calendar_error = f"calendar: {exc}; {fix}"

    # ---- delta stream driver ---------------------------------------------------------------------

    async def _follow(
        self,
        cursor_kind: str,
        key: str,
        initial: Callable[[], RequestInformation],
        store: Callable[[list[Any], SyncCursor, str, bool], None],
        context: str,
        window: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Drive one delta stream to its delta link: resume from the stored link, restart a full round on 410.

        The next page is fetched while this one is written (one request in flight per stream, as before):
        the network, the SDK and JSON parsing overlap with SQLite, which releases the GIL while it writes.
        The cursor still only moves with its own page, so a crash or a stop resumes exactly as before.
        """
        cursor = get_or_create_cursor(self.engine, self._pk, cursor_kind, key)
        if cursor.round == 0 or (window is not None and self._needs_new_window(cursor, window)):
            cursor = start_full_round(self.engine, cursor, window=window)
        resyncs = 0
        fetch: asyncio.Task[dict[str, Any]] | None = None
        while True:
            if self.should_stop():
                await _discard(fetch)
                raise Stopping()
            if fetch is None:
                request = self.client.link_request(cursor.link, self._headers) if cursor.link else initial()
                fetch = asyncio.ensure_future(self.client.get_json(request, context=context))
            try:
                page = await fetch
            except CursorExpired:
                if resyncs >= MAX_RESYNCS_PER_ROUND:
                    raise
                resyncs += 1
                self.result.resyncs += 1
                self._log.warning("sync.cursor_expired", stream=cursor_kind, key=key, action="full resync")
                cursor = start_full_round(self.engine, cursor, window=self._window() if window else None, resync=True)
                continue
            finally:
                fetch = None
            next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if not next_link and not delta_link:
                raise GraphError(f"Graph page without nextLink or deltaLink ({context})")
            items = page.get("value")
            link, is_delta = str(next_link or delta_link), not next_link
            if not is_delta and not self.should_stop():
                ahead = self.client.link_request(link, self._headers)
                fetch = asyncio.ensure_future(self.client.get_json(ahead, context=context))
            try:
                await asyncio.to_thread(
                    self._locked, store, items if isinstance(items, list) else [], cursor, link, is_delta
                )
            except BaseException:
                await _discard(fetch)
                raise
            if is_delta:
                return
            cursor = cursor.model_copy(update={"link": link, "is_delta": False})

    async def _run_stream(
        self,
        kind: ItemKind,
        cursor_kind: str,
        key: str,
        initial: Callable[[], RequestInformation],
        container: str | None,
        window: tuple[datetime, datetime] | None = None,
    ) -> None:
        def store(items: list[Any], cursor: SyncCursor, link: str, is_delta: bool) -> None:
            advance = CursorAdvance(cursor.id or 0, link, is_delta, cursor.round, cursor.full_round)
            self._count(kind, apply_page(self.engine, kind, self._pk, container, items, advance))

        await self._follow(cursor_kind, key, initial, store, f"{kind.name} delta {key}", window)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._write_lock:
            return fn(*args)

    def _count(self, kind: ItemKind, res: PageResult) -> None:
        if kind is MESSAGES:
            self.result.messages_added += res.added
            self.result.messages_updated += res.updated
            self.result.messages_removed += res.removed + res.dropped_at_round_end
            self.on_progress(res.added)
        else:
            self.result.events_added += res.added
            self.result.events_updated += res.updated
            self.result.events_removed += res.removed + res.dropped_at_round_end
        for item_id, problem in res.problems[:20]:
            self._log.warning("sync.item_problem", kind=kind.name, item=item_id[:80], problem=problem)
        self.result.problems += len(res.problems)

    # ---- messages --------------------------------------------------------------------------------

    async def sync_messages(self, folder_id: str) -> None:
        def initial() -> RequestInformation:
            builder = self._users.mail_folders.by_mail_folder_id(folder_id).messages.delta
            # Only the lookback window: the filter lives in the delta token, so later rounds keep it, and
            # mail older than the window (pruned daily) does not come back on a full resync.
            since = self.now() - timedelta(days=self.tenant.sync.lookback_days)
            q = builder.DeltaRequestBuilderGetQueryParameters(
                select=MESSAGE_SELECT, filter=f"receivedDateTime ge {since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
            )
            info: RequestInformation = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
            for k, v in self._headers.items():
                info.headers.try_add(k, v)
            return info

        await self._run_stream(MESSAGES, "messages", folder_id, initial, container=folder_id)

    # ---- calendar --------------------------------------------------------------------------------

    def _window(self) -> tuple[datetime, datetime]:
        now = self.now().replace(minute=0, second=0, microsecond=0)
        start = (now - timedelta(days=self.tenant.sync.lookback_days)).replace(hour=0)
        return start, now.replace(hour=0) + timedelta(days=self.tenant.sync.calendar_future_days + 1)

    def _needs_new_window(self, cursor: Any, window: tuple[datetime, datetime]) -> bool:
        """At a round boundary, move the window once it lags by more than a day (or the config changed)."""
        if not cursor.is_delta or cursor.window_start is None or cursor.window_end is None:
            return cursor.window_start is None
        return (
            abs(window[0] - cursor.window_start) > CALENDAR_REWINDOW
            or abs(window[1] - cursor.window_end) > CALENDAR_REWINDOW
        )

    async def sync_calendar(self) -> None:
        cursor = get_or_create_cursor(self.engine, self._pk, "calendar", "calendar")
        window = self._window()
        if cursor.window_start is not None and not self._needs_new_window(cursor, window):
            window = (cursor.window_start, cursor.window_end or window[1])

        def initial() -> RequestInformation:
            c = get_or_create_cursor(self.engine, self._pk, "calendar", "calendar")
            start, end = c.window_start or window[0], c.window_end or window[1]
            builder = self._users.calendar_view.delta
            q = builder.DeltaRequestBuilderGetQueryParameters(
                start_date_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                end_date_time=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            info: RequestInformation = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
            info.headers.try_add("Prefer", f'odata.maxpagesize={self.tenant.sync.page_size}, IdType="ImmutableId"')
            info.headers.add("Prefer", 'outlook.timezone="UTC"')
            return info

        try:
            await self._run_stream(EVENTS, "calendar", "calendar", initial, container=None, window=window)
        except NotFound as exc:
            self.result.calendar_error = str(exc)

    # ---- folders ---------------------------------------------------------------------------------

    async def sync_folders(self) -> list[str]:
        """Follow the folder tree with folder delta; return the ids of the folders whose mail is synced."""
        top = get_or_create_cursor(self.engine, self._pk, "folders", "")
        if top.round == 0 or not self._has_well_known():
            await self._resolve_well_known()
        await self._folder_stream("")
        done: set[str] = {""}
        while True:
            parents = self._parents_with_children() - done
            if not parents:
                break
            for parent in sorted(parents):
                done.add(parent)
                try:
                    await self._folder_stream(parent)
                except NotFound:
                    continue
        return self._apply_folder_selection()

    def _has_well_known(self) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(folder_t.c.id)
                    .where(folder_t.c.mailbox_pk == self._pk, folder_t.c.well_known.is_not(None))
                    .limit(1)
                ).first()
                is not None
            )

    async def _resolve_well_known(self) -> None:
        """Learn the ids of the well-known folders (Graph's folder delta does not name them)."""
        names = set(KNOWN_FOLDERS) | set(self.tenant.sync.exclude_folders)
        if isinstance(self.tenant.sync.folders, list):
            names |= {f.lower() for f in self.tenant.sync.folders if "/" not in f}
        for name in sorted(names):
            builder = self._users.mail_folders.by_mail_folder_id(name)
            q = builder.MailFolderItemRequestBuilderGetQueryParameters(select=FOLDER_SELECT)
            info = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
            info.headers.try_add("Prefer", 'IdType="ImmutableId"')
            try:
                item = await self.client.get_json(info, context=f"GET mailFolders/{name}")
            except NotFound:
                continue  # not every mailbox has every well-known folder (archive, syncissues)
            except GraphError as exc:
                if exc.status == 400:
                    continue  # a well-known name this server does not know
                raise
            if item.get("id"):
                self._upsert_folders([item], well_known=name)

    async def _folder_stream(self, parent: str) -> None:
        def initial() -> RequestInformation:
            mf = self._users.mail_folders
            builder = mf.delta if parent == "" else mf.by_mail_folder_id(parent).child_folders.delta
            q = builder.DeltaRequestBuilderGetQueryParameters(select=FOLDER_SELECT)
            info: RequestInformation = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
            info.headers.try_add("Prefer", 'IdType="ImmutableId"')
            return info

        def store(items: list[Any], cursor: SyncCursor, link: str, is_delta: bool) -> None:
            live = [i for i in items if isinstance(i, dict) and i.get("id")]
            self._store_folder_page(parent, live, cursor, link, is_delta)

        await self._follow("folders", parent, initial, store, f"folder delta {parent or 'top'}")

    def _store_folder_page(
        self, parent: str, items: list[dict[str, Any]], cursor: Any, link: str, is_delta: bool
    ) -> None:
        removed = [str(i["id"]) for i in items if "@removed" in i]
        self._upsert_folders([i for i in items if "@removed" not in i], level=parent, seen_round=cursor.round)
        if is_delta and cursor.full_round:
            # A full round of this level saw every folder still there; the others are gone.
            with self.engine.connect() as conn:
                removed += (
                    conn.execute(
                        select(folder_t.c.graph_id).where(
                            folder_t.c.mailbox_pk == self._pk,
                            folder_t.c.level_key == parent,
                            folder_t.c.seen_round < cursor.round,
                        )
                    )
                    .scalars()
                    .all()
                )
        if removed:
            self._remove_folders(removed)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                update(cursor_t)
                .where(cursor_t.c.id == cursor.id)
                .values(
                    link=link,
                    is_delta=is_delta,
                    full_round=cursor.full_round and not is_delta,
                    updated_at=now,
                    **({"completed_at": now} if is_delta else {}),
                )
            )

    def _upsert_folders(
        self,
        items: list[dict[str, Any]],
        well_known: str | None = None,
        level: str | None = None,
        seen_round: int = 0,
    ) -> None:
        with self.engine.begin() as conn:
            for item in items:
                gid = str(item["id"])
                values: dict[str, Any] = {}
                if "displayName" in item:
                    values["display_name"] = str(item.get("displayName") or "")[:512]
                if "parentFolderId" in item:
                    values["parent_graph_id"] = item.get("parentFolderId")
                if "childFolderCount" in item:
                    values["child_folder_count"] = int(item.get("childFolderCount") or 0)
                if well_known:
                    values["well_known"] = well_known
                if level is not None:
                    values["level_key"], values["seen_round"] = level, seen_round
                found = conn.execute(
                    select(folder_t.c.id).where(folder_t.c.mailbox_pk == self._pk, folder_t.c.graph_id == gid)
                ).scalar()
                if found is None:
                    conn.execute(insert(folder_t).values(mailbox_pk=self._pk, graph_id=gid, **values))
                elif values:
                    conn.execute(update(folder_t).where(folder_t.c.id == found).values(**values))

    def _remove_folders(self, graph_ids: list[str]) -> None:
        delete_folder_data(self.engine, self._pk, graph_ids)
        with self.engine.begin() as conn:
            conn.execute(delete(folder_t).where(folder_t.c.mailbox_pk == self._pk, folder_t.c.graph_id.in_(graph_ids)))
            conn.execute(
                delete(cursor_t).where(
                    cursor_t.c.mailbox_pk == self._pk,
                    cursor_t.c.kind == "folders",
                    cursor_t.c.key.in_(graph_ids),
                )
            )

    def _parents_with_children(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(folder_t.c.graph_id).where(
                        folder_t.c.mailbox_pk == self._pk, folder_t.c.child_folder_count > 0
                    )
                ).scalars()
            )

    def _apply_folder_selection(self) -> list[str]:
        """Mark which folders are synced; drop the data of folders that no longer are."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    folder_t.c.graph_id,
                    folder_t.c.parent_graph_id,
                    folder_t.c.display_name,
                    folder_t.c.well_known,
                    folder_t.c.synced,
                ).where(folder_t.c.mailbox_pk == self._pk)
            ).all()
        folders = {r.graph_id: r for r in rows}
        selected = select_folders(
            {gid: (r.parent_graph_id, r.display_name, r.well_known) for gid, r in folders.items()},
            self.tenant.sync.folders,
            self.tenant.sync.exclude_folders,
        )
        dropped = [gid for gid, r in folders.items() if r.synced and gid not in selected]
        if dropped:
            n = delete_folder_data(self.engine, self._pk, dropped)
            self._log.info("sync.folders_unselected", folders=len(dropped), messages_dropped=n)
        with self.engine.begin() as conn:
            conn.execute(update(folder_t).where(folder_t.c.mailbox_pk == self._pk).values(synced=False))
            for gid in selected:
                conn.execute(
                    update(folder_t)
                    .where(folder_t.c.mailbox_pk == self._pk, folder_t.c.graph_id == gid)
                    .values(synced=True)
                )
        return sorted(selected)


async def _discard(fetch: asyncio.Task[Any] | None) -> None:
    """Cancel a page fetched ahead that will not be stored (its cursor has not moved: it is fetched again)."""
    if fetch is not None:
        fetch.cancel()
        await asyncio.gather(fetch, return_exceptions=True)


def select_folders(
    folders: dict[str, tuple[str | None, str, str | None]],
    wanted: str | list[str],
    excluded: list[str],
) -> set[str]:
    """Folder ids to sync. folders: id -> (parent id, display name, well-known name).

    'all' means every folder except the excluded well-known ones and everything below them. A list names
    well-known folders ('inbox') or display paths from the top ('Inbox/Customers'); subfolders come along.
    """
    excluded_l = {e.lower() for e in excluded}

    def ancestry(gid: str) -> list[str]:
        chain, seen = [], set()
        cur: str | None = gid
        while cur in folders and cur not in seen:
            seen.add(cur)
            chain.append(cur)
            cur = folders[cur][0]
        return chain

    def path(gid: str) -> str:
        return "/".join(folders[g][1] for g in reversed(ancestry(gid))).lower()

    out = set()
    for gid in folders:
        chain = ancestry(gid)
        if any((folders[g][2] or "") in excluded_l for g in chain):
            continue
        if wanted == "all":
            out.add(gid)
            continue
        names = {w.lower() for w in wanted}
        p = path(gid)
        if any((folders[g][2] or "") in names for g in chain) or any(p == n or p.startswith(n + "/") for n in names):
            out.add(gid)
    return out
