"""The Dataverse Web API subset the daemon uses, served at `{SandboxServer.dataverse_url}/api/data/v9.2/`
(v9.0 and v9.1 answer too) from the org's CRM tables (`crm_seed`, `crm_store`).

Tokens must be for the Dataverse audience (`https://sandbox.crm.dynamics.com`): a Graph token gets 401
with `WWW-Authenticate` (and an empty body, as Dataverse answers), and so does a Dataverse token on Graph.

Entity sets (see `dataverse_schema` for their columns): systemusers, businessunits, teams, teammemberships,
teamtemplates, accounts, contacts, leads, opportunities, connections, connectionroles, phonecalls, emails,
appointments, activityparties, and the relationship-analytics tables (msdyn_{contact,account,lead,
opportunity}kpiitems, msdyn_daily*kpiitems, msdyn_mostcontacteds, msdyn_mostcontactedbies,
msdyn_wkwcolleaguesforcontacts, msdyn_wkwcolleaguesforcompanies).

Opportunity sales team: the documented access-team model. Each opportunity with a team has a team of
type Access (`teamtype` 1) made from the "Sales Team Template", `_regardingobjectid_value` = the
opportunity; its members come from `teams(id)/teammembership_association` (or
`$expand=teammembership_association($select=systemuserid)`, or the `teammemberships` intersect set).
Stakeholders: `connections` whose `_record2roleid_value` is the "Stakeholder" connection role with the
opportunity as record 1, each with its reciprocal row (record 1 = the contact, `_record1roleid_value` =
Stakeholder), as Dataverse creates them.

Routes (relative to /api/data/v9.2):
    GET    set, set/$count, set(id), set(id)/<collection or single navigation or column>
    POST   set, set/Microsoft.Dynamics.CRM.{CreateMultiple,UpdateMultiple,UpsertMultiple}, $batch
    PATCH  set(id)                       (upsert; If-Match: * update only; If-None-Match: * create only)
    PUT    set(id)/column, set(id)/nav/$ref
    DELETE set(id), set(id)/column, set(id)/nav/$ref
    GET    WhoAmI, EntityDefinitions[(LogicalName='x')[/Attributes]]
Admin (loopback, no token): GET/POST /_sandbox/dataverse (settings, limits, stats; POST
{"settings": {...}, "expire_change_tracking": true, "reset_limits": true}), GET /_sandbox/dataverse/truth
(?set=contacts,accounts; default every table), GET /_sandbox/dataverse/kpis.

Faults from `faults.py` apply: 429 (Dataverse's service-protection body and Retry-After), 503, slow,
drop, and 410, which here makes a request carrying a `$deltatoken` find its token expired (0x80044352).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .admin import _loopback
from .crm_store import CrmStore
from .dataverse_batch import BatchRunner, parse_batch
from .dataverse_http import (
    DataverseError,
    DvRequest,
    DvResponse,
    Principal,
    bad_request,
    error_response,
    parse_prefer,
    request_id,
)
from .dataverse_limits import DataverseSettings, ServiceProtection
from .dataverse_reads import Reader
from .dataverse_schema import BY_SET, Entity
from .dataverse_writes import Writer, parse_key
from .faults import FaultInjector
from .graph_api import DroppedResponse
from .identity import DATAVERSE_AUDIENCE, Identity, TokenError
from .model import Org

API_PREFIX = re.compile(r"^/api/data/(v9\.[0-2])(?:/(.*))?$")
ACTIONS = {"CreateMultiple", "UpdateMultiple", "UpsertMultiple"}


class DataverseApi:
    def __init__(
        self,
        org: Org,
        identity: Identity,
        faults: FaultInjector,
        store: CrmStore,
        settings: DataverseSettings | None = None,
    ) -> None:
        self.org, self.identity, self.faults, self.store = org, identity, faults, store
        self.settings = settings or DataverseSettings()
        self.protection = ServiceProtection(self.settings)
        self.tokens_expired_below = 0  # delta tokens with a lower row version are expired (admin)
        self.requests = 0

    # ------------------------------------------------------------ routing

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        return [Route("/{rest:path}", self.endpoint, methods=methods)]

    def admin_routes(self) -> list[Route]:
        return [
            Route("/_sandbox/dataverse", self.admin_state, methods=["GET", "POST"]),
            Route("/_sandbox/dataverse/truth", self.admin_truth, methods=["GET"]),
            Route("/_sandbox/dataverse/kpis", self.admin_kpis, methods=["GET"]),
        ]

    def delta_token_expired(self, version: int, issued: datetime) -> bool:
        if self.faults.roll("gone") or version < self.tokens_expired_below:
            return True
        return self.org.now() - issued > self.settings.change_tracking_retention

    def expire_change_tracking(self) -> None:
        """Every delta link issued so far answers 0x80044352 (a full sync is needed)."""
        with self.org.lock:
            self.store.version += 1
            self.tokens_expired_below = self.store.version

    # ------------------------------------------------------------ the HTTP pipeline

    async def endpoint(self, request: Request) -> Response:
        self.requests += 1
        rid = request_id()
        root = request.scope.get("root_path", "")
        path = request.scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :]
        m = API_PREFIX.match(path)
        if m is None:
            return self._send(
                error_response(bad_request(f"Resource not found for the segment '{path.strip('/')}'.", "0x8006088a")),
                rid,
            )
        try:
            claims = self.identity.validate(request.headers.get("authorization"), DATAVERSE_AUDIENCE)
        except TokenError:
            authority = f"{request.url.scheme}://{request.url.netloc}"  # the sandbox's Entra endpoint
            auth = (
                f"Bearer authorization_uri={authority}/{self.org.tenant_id}/oauth2/authorize, "
                f"resource_id={DATAVERSE_AUDIENCE}/"
            )
            return self._send(DvResponse(401, b"", {"WWW-Authenticate": auth}), rid)
        if not self.settings.application_user:
            return self._send(
                error_response(DataverseError(403, "0x80072560", "The user is not a member of the organization.")),
                rid,
            )
        key = str(claims.get("oid") or claims.get("appid"))
        prefer = parse_prefer(", ".join(request.headers.getlist("prefer")))
        try:
            self._front_faults()
            entry = self.protection.admit(key)
        except DataverseError as err:
            return self._send(error_response(err, prefer), rid, key)
        started = time.perf_counter()
        rows = 0
        try:
            body = await request.body()
            if self.faults.roll("slow"):
                await asyncio.sleep(self.faults.spec.slow_seconds)
            if self.settings.latency_seconds:
                await asyncio.sleep(self.settings.latency_seconds)
            req = DvRequest(
                method=request.method,
                path=unquote(m.group(2) or ""),
                query=parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                api_base=f"{request.url.scheme}://{request.url.netloc}{root}/api/data/{m.group(1)}",
                principal=Principal(key, self.store.app_user_id),
                prefer=prefer,
            )
            with self.org.lock:
                resp, rows = self._execute_top(req)
        finally:
            spent = time.perf_counter() - started
            self.protection.release(key, entry, spent + rows * self.settings.row_cost_seconds)
        out = self._send(resp, rid, key)
        if self.faults.roll("drop"):
            return DroppedResponse(out.body, status_code=out.status_code, headers=dict(out.headers))
        return out

    def _front_faults(self) -> None:
        spec = self.faults.spec
        if self.faults.roll("throttle"):
            raise DataverseError(
                429,
                "0x80072322",
                f"Number of requests exceeded the limit of {self.settings.max_requests} over time window of "
                f"{self.settings.window_seconds:g} seconds.",
                headers={"Retry-After": f"{max(1, round(spec.throttle_retry_after))}"},
            )
        if self.faults.roll("unavailable"):
            raise DataverseError(
                503,
                "",
                "The service is temporarily unavailable. Please retry later.",
                headers={"Retry-After": f"{spec.unavailable_retry_after:g}"},
            )

    def _send(self, resp: DvResponse, rid: str, key: str | None = None) -> Response:
        headers = {**resp.headers, "REQ_ID": rid, "x-ms-service-request-id": rid}
        if key is not None:
            headers.update(self.protection.headers(key))
        media = headers.pop("Content-Type", None)
        return Response(resp.body, status_code=resp.status, headers=headers, media_type=media)

    def _execute_top(self, req: DvRequest) -> tuple[DvResponse, int]:
        """A request from the wire: a $batch is charged one request per inner request."""
        if req.path == "$batch" and req.method == "POST":
            try:
                items = parse_batch(req)
                runner = BatchRunner(self, req)
                n = runner.count(items)
                if n > self.settings.batch_limit:
                    raise bad_request(
                        f"The number of requests in a batch ({n}) exceeds the limit of {self.settings.batch_limit}."
                    )
                self.protection.charge(req.principal.key, n - 1)
                self._rows = 0
                resp = runner.run(items)
                return resp, self._rows
            except DataverseError as err:
                return error_response(err, req.prefer), 0
        self._rows = 0
        resp = self.execute(req)
        return resp, self._rows

    _rows = 0

    def execute(self, req: DvRequest) -> DvResponse:
        """One request (also one part of a $batch), all or nothing. Callers hold org.lock."""
        tx = self.store.begin()
        try:
            resp = self._dispatch(req)
        except DataverseError as err:
            self.store.rollback(tx)
            return error_response(err, req.prefer)
        except Exception:
            self.store.rollback(tx)
            raise
        if resp.status >= 400:
            self.store.rollback(tx)
        else:
            self.store.commit(tx)
        return resp

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, req: DvRequest) -> DvResponse:
        path = req.path.strip("/")
        method = req.method
        if path == "$batch":
            raise bad_request("A $batch cannot contain another $batch.")
        if path in ("WhoAmI", "WhoAmI()") and method == "GET":
            return Reader(self, req).who_am_i()
        m = re.fullmatch(r"EntityDefinitions(?:\((.*?)\))?(/Attributes)?", path)
        if m is not None and method == "GET":
            return Reader(self, req).entity_definitions(m.group(1), bool(m.group(2)))
        segments = path.split("/")
        head = segments[0]
        km = re.fullmatch(r"([A-Za-z_]\w*)(?:\((.*)\))?", head)
        if km is None or km.group(1) not in BY_SET:
            raise DataverseError(
                404, "0x8006088a", f"Resource not found for the segment '{km.group(1) if km else head}'."
            )
        e = BY_SET[km.group(1)]
        if km.group(2) is None:
            return self._on_set(req, e, segments[1:])
        row_id = parse_key(e, km.group(2))
        return self._on_row(req, e, row_id, segments[1:])

    def _on_set(self, req: DvRequest, e: Entity, rest: list[str]) -> DvResponse:
        method = req.method
        self._privilege_to_read(req, e, method)
        if not rest:
            if method == "GET":
                return Reader(self, req).collection(e)
            if method == "POST":
                return self._write(req, lambda w: w.post(e))
            raise self._method_not_allowed(method, e.set_name)
        if rest == ["$count"] and method == "GET":
            return Reader(self, req).count(e)
        if len(rest) == 1 and rest[0].startswith("Microsoft.Dynamics.CRM.") and method == "POST":
            action = rest[0].removeprefix("Microsoft.Dynamics.CRM.")
            if action in ACTIONS:
                return self._write(req, lambda w: w.bulk(e, action))
        raise DataverseError(404, "0x8006088a", f"Resource not found for the segment '{rest[0]}'.")

    def _on_row(self, req: DvRequest, e: Entity, row_id: str, rest: list[str]) -> DvResponse:
        method = req.method
        self._privilege_to_read(req, e, method)
        if not rest:
            if method == "GET":
                return Reader(self, req).entity(e, row_id)
            if method == "PATCH":
                return self._write(req, lambda w: w.patch(e, row_id))
            if method == "DELETE":
                return self._write(req, lambda w: w.delete(e, row_id))
            raise self._method_not_allowed(method, e.set_name)
        name = rest[0]
        if len(rest) == 2 and rest[1] == "$ref" and method in ("PUT", "DELETE"):
            return self._write(req, lambda w: w.set_reference(e, row_id, name, method == "DELETE"))
        if len(rest) == 1:
            if method == "GET":
                return Reader(self, req).related(e, row_id, name)
            if method == "PUT":
                return self._write(req, lambda w: w.put_property(e, row_id, name))
            if method == "DELETE":
                return self._write(req, lambda w: w.delete(e, row_id, name))
        raise DataverseError(404, "0x8006088a", f"Resource not found for the segment '{'/'.join(rest)}'.")

    def _write(self, req: DvRequest, action: Any) -> DvResponse:
        w = Writer(self, req)
        resp: DvResponse = action(w)
        self._rows += w.rows_written
        return resp

    def _privilege_to_read(self, req: DvRequest, e: Entity, method: str) -> None:
        if method == "GET" and f"prvRead{e.logical}" in self.settings.missing_privileges:
            user = req.principal.user_id
            raise DataverseError(
                403,
                "0x80040220",
                f"Principal user (Id={user}, type=8, roleCount=1, accessMode=4), is missing prvRead{e.logical} "
                f"privilege on OTC={e.object_type_code} for entity '{e.logical}'.",
            )

    @staticmethod
    def _method_not_allowed(method: str, set_name: str) -> DataverseError:
        return DataverseError(405, "0x80060888", f"The HTTP method '{method}' is not allowed on '{set_name}'.")

    # ------------------------------------------------------------ admin

    async def admin_state(self, request: Request) -> Response:
        if not _loopback(request):
            return _admin_problem(403, "admin endpoints answer loopback clients only")
        if request.method == "POST":
            try:
                raw = await request.body()
                data = orjson.loads(raw) if raw.strip() else {}
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                self.settings.update(data.get("settings", {}))
                if data.get("expire_change_tracking"):
                    self.expire_change_tracking()
                if data.get("reset_limits"):
                    self.protection.reset()
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return _admin_problem(400, str(exc))
        with self.org.lock:
            stats = self.store.stats()
        return _admin_json(
            {
                "settings": self.settings.to_json(),
                "throttled": dict(self.protection.throttled),
                "requests": self.requests,
                "applicationUserId": self.store.app_user_id,
                **stats,
            }
        )

    async def admin_truth(self, request: Request) -> Response:
        if not _loopback(request):
            return _admin_problem(403, "admin endpoints answer loopback clients only")
        sets = [s for s in request.query_params.get("set", "").split(",") if s]
        unknown = [s for s in sets if s not in BY_SET]
        if unknown:
            return _admin_problem(400, f"unknown entity sets: {', '.join(unknown)}")
        with self.org.lock:
            return _admin_json(
                {"clock": self.org.now().isoformat(), "version": self.store.version, **self.store.truth(sets or None)}
            )

    async def admin_kpis(self, request: Request) -> Response:
        if not _loopback(request):
            return _admin_problem(403, "admin endpoints answer loopback clients only")
        with self.org.lock:
            return _admin_json(self.store.kpi_rows())


def _admin_json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _admin_problem(status: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": {"code": "SandboxAdmin", "message": message}}), status, media_type="application/json"
    )
