"""Microsoft Graph v1.0 routes the daemon uses, answered from the `Org`.

Every route goes through `GraphApi._serve`: bearer token (401), app permissions (403), injected faults
(429/503/slow/drop/410), mailbox resolution (404) and Exchange's 4-concurrent-requests-per-mailbox
limit (429 MailboxConcurrency), then the handler computes the answer under the org lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import ids
from . import representations as rep
from .delta import RoundCache, RoundItems, RoundKey, calendar_round, folder_round, message_round
from .faults import FaultInjector
from .identity import GRAPH_APP_ID, GRAPH_AUDIENCE, Identity, TokenError
from .model import Folder, Mailbox, Message, Org, User, event_in_window
from .odata import (
    GraphError,
    JSONResponse,
    TokenCodec,
    bad_request,
    graph_error_response,
    parse_datetime,
    parse_prefer,
    parse_select,
    parse_top,
    query_options,
)

# Application permissions that satisfy each route family (any one of them).
PERM_USERS = {
    "User.Read.All",
    "User.ReadBasic.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
}
PERM_GROUPS = {"GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All"}
PERM_DOMAINS = {"Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All"}
PERM_ORG = {"Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All"}
PERM_MAIL = {"Mail.ReadBasic.All", "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"}
PERM_MAIL_FULL = {"Mail.Read", "Mail.ReadWrite"}
PERM_CAL = {"Calendars.ReadBasic", "Calendars.Read", "Calendars.ReadWrite"}
PERM_CAL_FULL = {"Calendars.Read", "Calendars.ReadWrite"}
_DIRECTORY = (PERM_USERS, PERM_GROUPS, PERM_DOMAINS, PERM_ORG)

_SEGMENTS = {
    s.lower(): s
    for s in (
        "users",
        "groups",
        "domains",
        "organization",
        "mailFolders",
        "childFolders",
        "messages",
        "delta",
        "calendarView",
        "transitiveMembers",
        "microsoft.graph.user",
        "microsoft.graph.group",
        "me",
    )
}
_PAREN_KEY = re.compile(r"^([A-Za-z]+)\('([^']*)'\)$")
MAX_WINDOW_DAYS = 1825


@dataclass
class GraphSettings:
    default_page_size: int = 10  # Outlook delta default
    max_page_size: int = 1000
    mailbox_concurrency: int = 4
    concurrency_retry_after: int = 1
    user_page_size: int = 100
    user_page_max: int = 999


@dataclass
class Ctx:
    """Per-request context the handlers receive."""

    request: Request
    roles: set[str]
    prefer: dict[str, str]
    opts: dict[str, str]
    gone_fault: bool = False
    user: User | None = None
    mailbox: Mailbox | None = None
    applied: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        root = self.request.scope.get("root_path", "")
        return f"{self.request.url.scheme}://{self.request.url.netloc}{root}"

    @property
    def immutable(self) -> bool:
        return self.prefer.get("idtype", "").lower() == "immutableid"


Handler = Callable[[Ctx], Response | dict[str, Any]]


class DroppedResponse(Response):
    """Sends the status line, headers and half of the body, then hangs up (a connection dropped mid-body)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        # Returning without finishing makes the server close the connection.


class CanonicalPaths:
    """ASGI wrapper: Graph's path segments are case-insensitive and accept the key form mailFolders('id')."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parts = []
            for seg in scope["path"].split("/"):
                m = _PAREN_KEY.match(seg)
                if m:
                    parts += [_SEGMENTS.get(m.group(1).lower(), m.group(1)), m.group(2)]
                else:
                    seg = seg.removesuffix("()")  # function calls: msgraph-sdk sends delta()
                    parts.append(_SEGMENTS.get(seg.lower(), seg))
            path = "/".join(parts)
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": quote(path).encode()}
        await self.app(scope, receive, send)


class GraphApi:
    def __init__(
        self,
        org: Org,
        identity: Identity,
        faults: FaultInjector,
        settings: GraphSettings | None = None,
    ) -> None:
        self.org = org
        self.identity = identity
        self.faults = faults
        self.settings = settings or GraphSettings()
        self.codec = TokenCodec(secrets.token_bytes(32))
        self.rounds = RoundCache()
        self.inflight: dict[str, int] = {}
        self.requests = 0

    # ------------------------------------------------------------ routing

    def routes(self) -> list[BaseRoute]:
        r = self._route
        return [
            r("/users", self.list_users, PERM_USERS),
            r("/users/$count", self.count_users, PERM_USERS),
            r("/users/{uid}", self.get_user, PERM_USERS),
            r("/users/{uid}/mailFolders", self.list_folders, PERM_MAIL, mailbox=True),
            r("/users/{uid}/mailFolders/delta", self.folder_delta, PERM_MAIL, mailbox=True),
            r("/users/{uid}/mailFolders/{fid}", self.get_folder, PERM_MAIL, mailbox=True),
            r("/users/{uid}/mailFolders/{fid}/childFolders", self.list_child_folders, PERM_MAIL, mailbox=True),
            r("/users/{uid}/mailFolders/{fid}/childFolders/delta", self.folder_delta, PERM_MAIL, mailbox=True),
            r("/users/{uid}/mailFolders/{fid}/messages/delta", self.message_delta, PERM_MAIL, mailbox=True),
            r("/users/{uid}/calendarView/delta", self.calendar_delta, PERM_CAL, mailbox=True),
            r("/groups/{gid}", self.get_group, PERM_GROUPS),
            r("/groups/{gid}/transitiveMembers", self.transitive_members, PERM_GROUPS),
            r("/groups/{gid}/transitiveMembers/$count", self.count_members, PERM_GROUPS),
            r("/groups/{gid}/transitiveMembers/{cast}", self.transitive_members, PERM_GROUPS),
            r("/domains", self.list_domains, PERM_DOMAINS),
            r("/domains/{name}", self.get_domain, PERM_DOMAINS),
            r("/organization", self.list_organization, PERM_ORG),
            r("/organization/{oid}", self.get_organization, PERM_ORG),
            Route("/me", self.me),
            Route("/me/{rest:path}", self.me),
            Route("/{rest:path}", self.unknown_segment),
        ]

    def _route(self, path: str, handler: Handler, perms: set[str], *, mailbox: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self._serve(request, handler, perms, mailbox)

        return Route(path, endpoint, methods=["GET"])

    async def me(self, request: Request) -> Response:
        return graph_error_response(
            request, bad_request("/me request is only valid with delegated authentication flow.")
        )

    async def unknown_segment(self, request: Request) -> Response:
        seg = request.path_params["rest"].split("/")[0]
        return graph_error_response(request, bad_request(f"Resource not found for the segment '{seg}'."))

    # ------------------------------------------------------------ the request pipeline

    async def _serve(self, request: Request, handler: Handler, perms: set[str], mailbox: bool) -> Response:
        self.requests += 1
        try:
            try:
                claims = self.identity.validate(request.headers.get("authorization"), GRAPH_AUDIENCE)
            except TokenError as exc:
                raise GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    exc.message,
                    headers={
                        "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                        f'common/oauth2/authorize", client_id="{GRAPH_APP_ID}"'
                    },
                ) from None
            roles = set(claims.get("roles", []))
            if not roles & perms:
                if any(perms is p for p in _DIRECTORY):
                    raise GraphError(
                        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                    )
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            ctx = Ctx(request, roles, parse_prefer(request), query_options(request))
            self._inject_front_faults()
            ctx.gone_fault = self._has_sync_token(ctx) and self.faults.roll("gone")
            if not mailbox:
                return await self._run(ctx, handler)
            with self.org.lock:
                ctx.user, ctx.mailbox = self._resolve_mailbox(request.path_params["uid"])
            uid = ctx.user.id
            if self.inflight.get(uid, 0) >= self.settings.mailbox_concurrency:
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers={"Retry-After": str(self.settings.concurrency_retry_after)},
                )
            self.inflight[uid] = self.inflight.get(uid, 0) + 1
            try:
                return await self._run(ctx, handler)
            finally:
                self.inflight[uid] -= 1
        except GraphError as err:
            return graph_error_response(request, err)

    @staticmethod
    def _has_sync_token(ctx: Ctx) -> bool:
        return bool(ctx.opts.get("skiptoken") or ctx.opts.get("deltatoken"))

    def _inject_front_faults(self) -> None:
        spec = self.faults.spec
        if self.faults.roll("throttle"):
            raise GraphError(
                429,
                "TooManyRequests",
                "Please retry again later.",
                headers={"Retry-After": f"{spec.throttle_retry_after:g}"},
                inner={"code": "429", "message": "Please retry after", "status": "429"},
            )
        if self.faults.roll("unavailable"):
            raise GraphError(
                503,
                "ServiceUnavailable",
                "Service unavailable, retry later.",
                headers={"Retry-After": f"{spec.unavailable_retry_after:g}"},
            )

    async def _run(self, ctx: Ctx, handler: Handler) -> Response:
        if self.faults.roll("slow"):
            await asyncio.sleep(self.faults.spec.slow_seconds)
        with self.org.lock:
            result = handler(ctx)
        response = result if isinstance(result, Response) else JSONResponse(result)
        response.headers["request-id"] = response.headers.get("request-id", _rid())
        response.headers["client-request-id"] = ctx.request.headers.get(
            "client-request-id", response.headers["request-id"]
        )
        if ctx.applied:
            response.headers["Preference-Applied"] = ", ".join(ctx.applied)
        if self.faults.roll("drop"):
            return DroppedResponse(response.body, status_code=response.status_code, headers=dict(response.headers))
        return response

    def _resolve_mailbox(self, key: str) -> tuple[User, Mailbox]:
        u = self.org.find_user(key)
        if u is None or (key not in (u.id, u.user_principal_name) and key.lower() != u.user_principal_name.lower()):
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
        mb = self.org.mailboxes.get(u.id)
        if mb is None or not u.has_mailbox:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        return u, mb

    # ------------------------------------------------------------ directory

    def _directory_user(self, key: str) -> User:
        u = self.org.find_user(key)
        if u is None or (key != u.id and key.lower() != u.user_principal_name.lower()):
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        return u

    def list_users(self, ctx: Ctx) -> dict[str, Any]:
        select = parse_select(ctx.opts.get("select"), rep.USER_PROPERTIES, "microsoft.graph.user", "Request_BadRequest")
        pred = _user_filter(ctx.opts.get("filter"))
        users = [u for u in self.org.users.values() if pred(u)]
        return self._paged(ctx, "users", users, lambda u: rep.user_json(u, select), select)

    @staticmethod
    def _count_text(ctx: Ctx, n: int) -> Response:
        if ctx.request.headers.get("consistencylevel", "").lower() != "eventual":
            raise GraphError(
                400, "Request_BadRequest", "Count is not currently supported without ConsistencyLevel: eventual."
            )
        return Response(str(n), media_type="text/plain")

    def count_users(self, ctx: Ctx) -> Response:
        pred = _user_filter(ctx.opts.get("filter"))
        return self._count_text(ctx, sum(1 for u in self.org.users.values() if pred(u)))

    def count_members(self, ctx: Ctx) -> Response:
        return self._count_text(ctx, len(self.org.transitive_members(self._group(ctx.request.path_params["gid"]).id)))

    def get_user(self, ctx: Ctx) -> dict[str, Any]:
        select = parse_select(ctx.opts.get("select"), rep.USER_PROPERTIES, "microsoft.graph.user", "Request_BadRequest")
        u = self._directory_user(ctx.request.path_params["uid"])
        ctx_name = f"users({','.join(select)})/$entity" if select else "users/$entity"
        return {"@odata.context": f"{ctx.base}/$metadata#{ctx_name}", **rep.user_json(u, select)}

    def get_group(self, ctx: Ctx) -> dict[str, Any]:
        g = self._group(ctx.request.path_params["gid"])
        select = parse_select(
            ctx.opts.get("select"), rep.GROUP_PROPERTIES, "microsoft.graph.group", "Request_BadRequest"
        )
        return {"@odata.context": f"{ctx.base}/$metadata#groups/$entity", **rep.group_json(g, select)}

    def _group(self, gid: str) -> Any:
        g = self.org.groups.get(gid)
        if g is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{gid}' does not exist or one of its queried reference-property objects are not present.",
            )
        return g

    def transitive_members(self, ctx: Ctx) -> dict[str, Any]:
        g = self._group(ctx.request.path_params["gid"])
        cast = ctx.request.path_params.get("cast")
        if cast not in (None, "microsoft.graph.user", "microsoft.graph.group"):
            raise bad_request(f"Resource not found for the segment '{cast}'.")
        members = self.org.transitive_members(g.id)
        if cast == "microsoft.graph.group":
            groups = [self.org.groups[m] for m in members if m in self.org.groups]
            select = parse_select(
                ctx.opts.get("select"), rep.GROUP_PROPERTIES, "microsoft.graph.group", "Request_BadRequest"
            )
            return self._paged(ctx, "groups", groups, lambda x: rep.group_json(x, select), select)
        if cast == "microsoft.graph.user":
            users = [self.org.users[m] for m in members if m in self.org.users]
            select = parse_select(
                ctx.opts.get("select"), rep.USER_PROPERTIES, "microsoft.graph.user", "Request_BadRequest"
            )
            pred = _user_filter(ctx.opts.get("filter"))
            return self._paged(ctx, "users", [u for u in users if pred(u)], lambda u: rep.user_json(u, select), select)
        select = parse_select(
            ctx.opts.get("select"),
            rep.USER_PROPERTIES | rep.GROUP_PROPERTIES,
            "microsoft.graph.directoryObject",
            "Request_BadRequest",
        )

        def render(m: str) -> dict[str, Any]:
            if m in self.org.users:
                return {"@odata.type": "#microsoft.graph.user", **rep.user_json(self.org.users[m], select)}
            return {"@odata.type": "#microsoft.graph.group", **rep.group_json(self.org.groups[m], select)}

        return self._paged(ctx, "directoryObjects", members, render, select)

    def _paged(
        self, ctx: Ctx, entity: str, items: list[Any], render: Callable[[Any], dict[str, Any]], select: list[str] | None
    ) -> dict[str, Any]:
        """Directory paging: $top is the page size; the nextLink keeps the query and adds $skiptoken."""
        top = parse_top(ctx.opts.get("top"), self.settings.user_page_max, self.settings.user_page_size)
        offset = 0
        if ctx.opts.get("skiptoken"):
            state = self.codec.decode(ctx.opts["skiptoken"])
            if state is None or state.get("k") != "dir":
                raise GraphError(400, "Request_BadRequest", "Invalid skip token.")
            offset = int(state["o"])
        count = ctx.opts.get("count", "").lower() == "true"
        if count and ctx.request.headers.get("consistencylevel", "").lower() != "eventual":
            raise GraphError(
                400, "Request_BadRequest", "$count is not currently supported without ConsistencyLevel: eventual."
            )
        name = f"{entity}({','.join(select)})" if select else entity
        out: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#{name}"}
        if count and offset == 0:
            out["@odata.count"] = len(items)
        page = items[offset : offset + top]
        if offset + top < len(items):
            params = [(k, v) for k, v in ctx.request.query_params.multi_items() if k.lower().lstrip("$") != "skiptoken"]
            params.append(("$skiptoken", self.codec.encode({"k": "dir", "o": offset + top})))
            out["@odata.nextLink"] = (
                f"{ctx.base}{ctx.request.url.path.removeprefix(ctx.request.scope.get('root_path', ''))}?{urlencode(params, safe='$,()')}"
            )
        out["value"] = [render(x) for x in page]
        return out

    def list_domains(self, ctx: Ctx) -> dict[str, Any]:
        return {
            "@odata.context": f"{ctx.base}/$metadata#domains",
            "value": [rep.domain_json(d) for d in self.org.domains],
        }

    def get_domain(self, ctx: Ctx) -> dict[str, Any]:
        name = ctx.request.path_params["name"].lower()
        for d in self.org.domains:
            if d.name == name:
                return {"@odata.context": f"{ctx.base}/$metadata#domains/$entity", **rep.domain_json(d)}
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{name}' does not exist or one of its queried reference-property objects are not present.",
        )

    def list_organization(self, ctx: Ctx) -> dict[str, Any]:
        return {"@odata.context": f"{ctx.base}/$metadata#organization", "value": [rep.organization_json(self.org)]}

    def get_organization(self, ctx: Ctx) -> dict[str, Any]:
        if ctx.request.path_params["oid"] != self.org.tenant_id:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{ctx.request.path_params['oid']}' does not "
                "exist or one of its queried reference-property objects are not present.",
            )
        return {"@odata.context": f"{ctx.base}/$metadata#organization/$entity", **rep.organization_json(self.org)}

    # ------------------------------------------------------------ mail folders

    def _folder(self, ctx: Ctx, key: str) -> Folder:
        mb = ctx.mailbox
        assert mb is not None
        fid = mb.well_known.get(key.lower(), key)
        f = mb.folders.get(fid)
        if f is None or f.deleted:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return f

    def _folder_select(self, ctx: Ctx) -> list[str] | None:
        return parse_select(
            ctx.opts.get("select"),
            rep.FOLDER_PROPERTIES,
            "Microsoft.OutlookServices.MailFolder",
            "RequestBroker--ParseUri",
        )

    def get_folder(self, ctx: Ctx) -> dict[str, Any]:
        f = self._folder(ctx, ctx.request.path_params["fid"])
        assert ctx.user and ctx.mailbox
        return {
            "@odata.context": f"{ctx.base}/$metadata#users('{ctx.user.id}')/mailFolders/$entity",
            **rep.folder_json(self.org, ctx.mailbox, f, self._folder_select(ctx)),
        }

    def list_folders(self, ctx: Ctx) -> dict[str, Any]:
        assert ctx.mailbox
        return self._folder_list(ctx, ctx.mailbox.well_known["msgfolderroot"])

    def list_child_folders(self, ctx: Ctx) -> dict[str, Any]:
        return self._folder_list(ctx, self._folder(ctx, ctx.request.path_params["fid"]).id)

    def _folder_list(self, ctx: Ctx, parent: str) -> dict[str, Any]:
        assert ctx.user and ctx.mailbox
        select = self._folder_select(ctx)
        mb = ctx.mailbox
        folders = [f for f in self.org.child_folders(mb, parent) if not f.is_hidden]
        folders.sort(key=lambda f: f.display_name.lower())
        return self._paged(
            ctx,
            f"users('{ctx.user.id}')/mailFolders",
            folders,
            lambda f: rep.folder_json(self.org, mb, f, select),
            select,
        )

    def folder_delta(self, ctx: Ctx) -> Response | dict[str, Any]:
        """mailFolders/delta: the top-level folders only (as Graph); childFolders/delta for each level below."""
        mb = ctx.mailbox
        assert mb is not None and ctx.user is not None
        fid = ctx.request.path_params.get("fid")
        parent = self._folder(ctx, fid).id if fid else mb.well_known["msgfolderroot"]
        path = (
            f"/users/{ctx.user.id}/mailFolders/{fid}/childFolders/delta"
            if fid
            else f"/users/{ctx.user.id}/mailFolders/delta"
        )
        state = self._delta_state(ctx, "fld", f"fld:{parent}", path)
        if state.get("new"):
            state["sel"] = self._folder_select(ctx)
        select = state["sel"]

        def render(item_id: str, mode: str) -> dict[str, Any]:
            f = mb.folders[item_id]
            if mode == "removed" or f.container != parent:
                return rep.removed_json("mailFolder", f.id)
            return {"@odata.type": "#microsoft.graph.mailFolder", **rep.folder_json(self.org, mb, f, select)}

        return self._delta_page(
            ctx,
            state,
            path,
            "mailFolder",
            RoundKey("fld", mb.user_id, parent, state["f"], state["t"]),
            lambda: folder_round(mb, parent, state["f"], state["t"]),
            render,
        )

    # ------------------------------------------------------------ message delta

    def message_delta(self, ctx: Ctx) -> Response | dict[str, Any]:
        mb = ctx.mailbox
        assert mb is not None and ctx.user is not None
        folder = self._folder(ctx, ctx.request.path_params["fid"])
        path = f"/users/{ctx.user.id}/mailFolders/{folder.id}/messages/delta"
        state = self._delta_state(ctx, "msg", folder.id, path)
        if state.get("new"):
            state["sel"] = parse_select(
                ctx.opts.get("select"),
                rep.MESSAGE_PROPERTIES,
                "Microsoft.OutlookServices.Message",
                "RequestBroker--ParseUri",
            )
            state["flt"] = ctx.opts.get("filter")
            state["ct"] = ctx.opts.get("changetype")
            state["top"] = int(ctx.opts["top"]) if ctx.opts.get("top", "").isdigit() else None
            if state["ct"] not in (None, "created", "updated", "deleted"):
                raise bad_request(f"Invalid changeType '{state['ct']}'; use created, updated or deleted.")
            orderby = ctx.opts.get("orderby")
            if orderby and orderby.replace("%20", " ").lower() not in ("receiveddatetime desc", "receiveddatetime"):
                raise bad_request(
                    "The only $orderby supported on message delta is receivedDateTime desc.", "ErrorInvalidUrlQuery"
                )
        select: list[str] | None = state["sel"]
        if select and set(select) & rep.MESSAGE_RESTRICTED and not ctx.roles & PERM_MAIL_FULL:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if select is None and ctx.roles & PERM_MAIL_FULL:
            select = [*rep.MESSAGE_DEFAULT, "body", "bodyPreview"]  # Mail.Read's default set has bodies
        accept = _message_filter(state.get("flt"))
        change_types = [state["ct"]] if state.get("ct") else ["created", "updated", "deleted"]
        immutable = ctx.immutable
        if immutable:
            ctx.applied.append('IdType="ImmutableId"')

        def render(item_id: str, mode: str) -> dict[str, Any]:
            m = mb.messages[item_id]
            present = m.container == folder.id and accept(m)
            if mode == "removed" or not present:
                return rep.removed_json("message", m.id if immutable else _rest_id_in(m, folder.id))
            if mode == "partial":
                fields = m.changed_fields_since(state["f"] or 0)
                return rep.message_partial_json(m, fields, select, immutable=immutable)
            return rep.message_json(m, select, immutable=immutable)

        extra = f"{state.get('flt')}|{state.get('ct')}|{state.get('top') if state['f'] is None else ''}"
        return self._delta_page(
            ctx,
            state,
            path,
            "message",
            RoundKey("msg", mb.user_id, folder.id, state["f"], state["t"], extra),
            lambda: message_round(
                mb,
                folder.id,
                state["f"],
                state["t"],
                accept=accept,
                change_types=change_types,
                top=state.get("top") if state["f"] is None else None,
            ),
            render,
        )

    # ------------------------------------------------------------ calendar delta

    def calendar_delta(self, ctx: Ctx) -> Response | dict[str, Any]:
        mb = ctx.mailbox
        assert mb is not None and ctx.user is not None
        path = f"/users/{ctx.user.id}/calendarView/delta"
        state = self._delta_state(ctx, "cal", "calendar", path)
        if state.get("new"):
            if ctx.opts.get("select") or ctx.opts.get("filter"):
                raise bad_request(
                    "The query parameters $select and $filter are not supported with calendarView delta.",
                    "ErrorInvalidUrlQuery",
                )
            raw_s, raw_e = ctx.opts.get("startdatetime"), ctx.opts.get("enddatetime")
            if not raw_s or not raw_e:
                raise bad_request(
                    "This request requires a time window specified by the query string parameters "
                    "StartDateTime and EndDateTime.",
                    "ErrorInvalidParameter",
                )
            try:
                start, end = parse_datetime(raw_s), parse_datetime(raw_e)
            except ValueError:
                raise bad_request(
                    "The value of StartDateTime or EndDateTime is not a valid date and time.", "ErrorInvalidParameter"
                ) from None
            if end <= start:
                raise bad_request("EndDateTime must be after StartDateTime.", "ErrorInvalidParameter")
            if end - start > timedelta(days=MAX_WINDOW_DAYS):
                raise bad_request(f"The time window must not exceed {MAX_WINDOW_DAYS} days.", "ErrorInvalidParameter")
            state["ws"], state["we"] = start.isoformat(), end.isoformat()
        start, end = datetime.fromisoformat(state["ws"]), datetime.fromisoformat(state["we"])
        zone_name, zone = rep.resolve_zone(ctx.prefer.get("outlook.timezone"))
        if "outlook.timezone" in ctx.prefer:
            ctx.applied.append(f'outlook.timezone="{zone_name}"')
        basic = not ctx.roles & PERM_CAL_FULL

        def render(item_id: str, mode: str) -> dict[str, Any]:
            e = mb.events[item_id]
            if mode == "removed" or not event_in_window(e, start, end):
                return rep.removed_json("event", e.id)
            return rep.event_json(e, zone_name, zone, basic=basic)

        return self._delta_page(
            ctx,
            state,
            path,
            "event",
            RoundKey("cal", mb.user_id, f"{state['ws']}|{state['we']}", state["f"], state["t"]),
            lambda: calendar_round(mb, start, end, state["f"], state["t"]),
            render,
        )

    # ------------------------------------------------------------ delta plumbing

    def _delta_state(self, ctx: Ctx, kind: str, scope: str, path: str) -> dict[str, Any]:
        """The round state from $skiptoken/$deltatoken (410 if the sync state is gone), or a new round's."""
        assert ctx.user is not None
        token = ctx.opts.get("skiptoken") or ctx.opts.get("deltatoken")
        gen_scope = scope
        if not token:
            return {
                "new": True,
                "k": kind,
                "u": ctx.user.id,
                "s": scope,
                "f": None,
                "t": self.org.seq,
                "o": 0,
                "g": self.org.sync_generation(ctx.user.id, gen_scope),
                "iat": self.org.now().timestamp(),
                "sel": None,
            }
        state = self.codec.decode(token)
        if state is None or state.get("k") != kind or state.get("u") != ctx.user.id or state.get("s") != scope:
            raise bad_request("The delta or skip token is not valid for this request.", "ErrorInvalidSyncStateData")
        if ctx.gone_fault:
            self.org.expire_scope(ctx.user.id, gen_scope)
        age = self.org.delta_token_max_age
        expired = age is not None and self.org.now().timestamp() - float(state["iat"]) > age.total_seconds()
        if expired or state["g"] != self.org.sync_generation(ctx.user.id, gen_scope):
            initial = dict(state)
            raise GraphError(
                410,
                "SyncStateNotFound",
                "The sync state generation is not found. The delta token "
                "is expired and data must be synchronized again.",
                headers={"Location": self._initial_link(ctx, path, initial)},
            )
        if ctx.opts.get("deltatoken"):  # a new round from where the last one ended
            state.update({"t": self.org.seq, "o": 0})
        return state

    def _initial_link(self, ctx: Ctx, path: str, state: dict[str, Any]) -> str:
        params: list[tuple[str, str]] = []
        if state.get("sel"):
            params.append(("$select", ",".join(state["sel"])))
        if state.get("flt"):
            params.append(("$filter", state["flt"]))
        if state.get("ws"):
            params += [("startDateTime", state["ws"]), ("endDateTime", state["we"])]
        params.append(("$deltatoken", ""))
        return f"{ctx.base}{path}?{urlencode(params, safe='$,:')}"

    def _delta_page(
        self,
        ctx: Ctx,
        state: dict[str, Any],
        path: str,
        entity: str,
        key: RoundKey,
        compute: Callable[[], RoundItems],
        render: Callable[[str, str], dict[str, Any]],
    ) -> dict[str, Any]:
        assert ctx.user is not None
        size = self.settings.default_page_size
        if "odata.maxpagesize" in ctx.prefer:
            with contextlib.suppress(ValueError):
                size = max(1, min(int(ctx.prefer["odata.maxpagesize"]), self.settings.max_page_size))
            ctx.applied.insert(0, f"odata.maxpagesize={size}")
        items = self.rounds.get(key, compute)
        offset = int(state["o"])
        chunk = items[offset : offset + size]
        if chunk and offset + len(chunk) < len(items) and self.faults.roll("empty_page"):
            chunk = []
        persist = {k: v for k, v in state.items() if k != "new"}
        out: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#Collection({entity})"}
        end = offset + len(chunk)
        if end < len(items) or (not chunk and offset < len(items)):
            nxt = {**persist, "o": end}
            out["@odata.nextLink"] = f"{ctx.base}{path}?$skiptoken={self.codec.encode(nxt)}"
        else:
            done = {**persist, "f": state["t"], "t": None, "o": 0, "iat": self.org.now().timestamp()}
            out["@odata.deltaLink"] = f"{ctx.base}{path}?$deltatoken={self.codec.encode(done)}"
        out["value"] = [render(item_id, mode) for item_id, mode in chunk]
        return out


def _rest_id_in(m: Message, folder_id: str) -> str:
    return ids.exchange_id(m.mailbox, "msg", m.id, folder_id)


def _rid() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- $filter subsets

_USER_CLAUSE = re.compile(
    r"^\s*(accountEnabled)\s+eq\s+(true|false)\s*$|^\s*(mail|userPrincipalName)\s+eq\s+'((?:[^']|'')*)'\s*$",
    re.IGNORECASE,
)
_FUNC_CLAUSE = re.compile(r"^\s*(startswith|endswith)\s*\(\s*(\w+)\s*,\s*'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)


def _enabled_is(want: bool, u: User) -> bool:
    return u.account_enabled == want


def _mail_is(value: str, u: User) -> bool:
    return (u.mail or "").lower() == value


def _upn_is(value: str, u: User) -> bool:
    return u.user_principal_name.lower() == value


def _user_filter(raw: str | None) -> Callable[[User], bool]:
    """The subset the daemon needs: accountEnabled eq bool, mail/userPrincipalName eq '...', joined by 'and'."""
    if not raw or not raw.strip():
        return lambda u: True
    preds: list[Callable[[User], bool]] = []
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
        m = _USER_CLAUSE.match(clause)
        if m is None:
            fm = _FUNC_CLAUSE.match(clause)
            lead = re.match(r"\s*(\w+)", clause)
            prop = fm.group(2) if fm else (lead.group(1) if lead else clause.strip())
            if clause.count("'") % 2 or clause.count("(") != clause.count(")") or lead is None:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: syntax error in '{clause.strip()}'.")
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'.",
            )
        if m.group(1):
            want = m.group(2).lower() == "true"
            preds.append(partial(_enabled_is, want))
        else:
            prop, value = m.group(3).lower(), m.group(4).replace("''", "'").lower()
            preds.append(partial(_mail_is if prop == "mail" else _upn_is, value))
    return lambda u: all(p(u) for p in preds)


_MSG_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*$", re.IGNORECASE)


def _message_filter(raw: str | None) -> Callable[[Message], bool]:
    """Message delta supports only receivedDateTime ge|gt <datetime> (as Graph documents)."""
    if not raw:
        return lambda m: True
    m = _MSG_FILTER.match(raw)
    if m is None:
        raise bad_request(
            "The query filter contains one or more invalid nodes. Message delta supports only "
            "receivedDateTime ge|gt <DateTimeOffset>.",
            "ErrorInvalidUrlQueryFilter",
        )
    try:
        when = parse_datetime(m.group(2))
    except ValueError:
        raise bad_request(f"Invalid DateTimeOffset '{m.group(2)}'.", "ErrorInvalidUrlQueryFilter") from None
    if m.group(1).lower() == "ge":
        return lambda msg: msg.received is not None and msg.received >= when
    return lambda msg: msg.received is not None and msg.received > when
