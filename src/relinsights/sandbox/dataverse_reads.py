"""GET requests: collections with paging, single rows, related rows, `$count`, change tracking, and the
small metadata the daemon's checks use (`WhoAmI`, `EntityDefinitions`).

Paging follows Dataverse: `Prefer: odata.maxpagesize=N` (default and maximum 5000), `@odata.nextLink`
after `value` with a `$skiptoken` holding a URL-encoded paging cookie
(`<cookie pagenumber="2" pagingcookie="..." istracking="False" />`), no `$skip`. Without `$orderby` pages
continue after the last primary key of the previous page (stable while rows change); with `$orderby` they
continue by position.

Change tracking: `Prefer: odata.track-changes` on a collection read returns every row and, on the last
page, `@odata.deltaLink` with `$deltatoken=<row version>!<MM/dd/yyyy HH:mm:ss>`. Following it returns the
rows created or changed since (with the same `$select`) and `$deletedEntity` entries for deleted rows,
then a new deltaLink. `$filter`, `$orderby`, `$expand` and `$top` are refused in this mode; tables
without change tracking (activity parties, team memberships) refuse it; a token older than the retention
(7 days of sandbox time by default) gets 0x80044352 "Version stamp associated with the client has
expired. Please perform a full sync."
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from .dataverse_http import DataverseError, DvRequest, DvResponse, annotation_filter, bad_request, not_found
from .dataverse_query import (
    GUID_RE,
    Renderer,
    context_fragment,
    parse_expand,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_rows,
)
from .dataverse_schema import ENTITIES, Entity, to_json

if TYPE_CHECKING:
    from .dataverse_api import DataverseApi

KNOWN_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$expand", "$count", "$skiptoken", "$deltatoken"}
TOKEN_TIME = "%m/%d/%Y %H:%M:%S"
EXPIRED = (
    "0x80044352",
    "Version stamp associated with the client has expired. Please perform a full sync.",
)


def _quote_lower(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(text, safe=""))


def make_cookie(page: int, pk: str, first: str | None, last: str | None, tracking: bool, **extra: Any) -> str:
    attrs = "".join(f' {k}="{v}"' for k, v in extra.items())
    keys = f'<{pk} last="{{{(last or "").upper()}}}" first="{{{(first or "").upper()}}}" />' if last else ""
    inner = f'<cookie page="{page - 1}"{attrs}>{keys}</cookie>'
    return f'<cookie pagenumber="{page}" pagingcookie="{_quote_lower(inner)}" istracking="{tracking}" />'


def parse_cookie(raw: str) -> dict[str, Any]:
    m = re.fullmatch(r'\s*<cookie pagenumber="(\d+)" pagingcookie="([^"]*)" istracking="(True|False)" />\s*', raw)
    if m is None:
        raise bad_request("The $skiptoken is not a valid paging cookie.")
    out: dict[str, Any] = {"page": int(m.group(1)), "tracking": m.group(3) == "True"}
    inner = unquote(m.group(2))
    for k, v in re.findall(r'(\w+)="([^"]*)"', inner):
        if k == "last":
            out["last"] = v.strip("{}").lower()
        elif k not in ("page", "first"):
            out[k] = v
    return out


def _link(req: DvRequest, set_name: str, params: list[tuple[str, str]]) -> str:
    query = "&".join(f"{k}={v}" for k, v in params)
    return f"{req.api_base}/{set_name}?{query}" if query else f"{req.api_base}/{set_name}"


def _passthrough(req: DvRequest, drop: set[str]) -> list[tuple[str, str]]:
    """The request's query options again (for nextLinks), URL-encoded as Dataverse writes them."""
    return [(k, quote(v, safe="=,()'$:@/")) for k, v in req.query if k not in drop]


class Reader:
    def __init__(self, api: DataverseApi, req: DvRequest) -> None:
        self.api, self.req, self.store = api, req, api.store
        self.applied: list[str] = []
        annotations = req.prefer.get("odata.include-annotations")
        self.render = Renderer(self.store, annotation_filter(annotations))
        if annotations is not None:
            self.applied.append(f'odata.include-annotations="{annotations}"')

    def respond(self, payload: Any, status: int = 200) -> DvResponse:
        headers = {"Preference-Applied": ", ".join(self.applied)} if self.applied else {}
        return DvResponse.json(status, payload, headers)

    def page_size(self) -> int:
        raw = self.req.prefer.get("odata.maxpagesize")
        limit = self.api.settings.max_page_size
        if raw is None:
            return limit
        try:
            n = int(raw)
        except ValueError:
            raise bad_request(f"Invalid value '{raw}' for odata.maxpagesize.") from None
        if n < 1:
            raise bad_request(f"Invalid value '{raw}' for odata.maxpagesize.")
        self.applied.insert(0, f"odata.maxpagesize={n}")
        return min(n, limit)

    # ------------------------------------------------------------ collections

    def collection(self, e: Entity) -> DvResponse:
        req = self.req
        for k, _ in req.query:
            if k == "$skip":
                raise bad_request("The query parameter $skip is not supported")
            if k.startswith("$") and k not in KNOWN_OPTIONS:
                raise bad_request(f"The query parameter {k} is not supported")
        tracking = "odata.track-changes" in req.prefer or req.opt("$deltatoken") is not None
        cookie = parse_cookie(req.opt("$skiptoken") or "") if req.opt("$skiptoken") else None
        if cookie and cookie["tracking"]:
            tracking = True
        if tracking:
            return self.tracked(e, cookie)
        select = parse_select(req.opt("$select"), e)
        pred = parse_filter(req.opt("$filter"), e)
        order = parse_orderby(req.opt("$orderby"), e)
        expand = parse_expand(req.opt("$expand"), e)
        top = self._top()
        size = self.page_size() if top is None else min(top, self.api.settings.max_page_size)
        rows = [r for r in self.store.rows(e.logical).values() if pred(r)]
        total = len(rows)
        page = cookie["page"] if cookie else 1
        if order:
            rows = sort_rows(rows, e, order)[(page - 1) * size :]
        else:
            rows.sort(key=lambda r: r[e.pk])
            if cookie and cookie.get("last"):
                rows = [r for r in rows if r[e.pk] > cookie["last"]]
        chunk = rows[:size]
        out: dict[str, Any] = {"@odata.context": f"{req.api_base}/$metadata#{context_fragment(e, select, expand)}"}
        if (req.opt("$count") or "").lower() == "true":
            out["@odata.count"] = min(total, 5000)
        out["value"] = [self.render.row(e, r, select, expand) for r in chunk]
        if top is None and len(rows) > size:
            first, last = chunk[0][e.pk], chunk[-1][e.pk]
            token = make_cookie(page + 1, e.pk, first, last, False)
            params = [*_passthrough(req, {"$skiptoken"}), ("$skiptoken", quote(token, safe="="))]
            out["@odata.nextLink"] = _link(req, e.set_name, params)
        return self.respond(out)

    def _top(self) -> int | None:
        raw = self.req.opt("$top")
        if raw is None:
            return None
        if not raw.isdigit() or int(raw) < 0:
            raise bad_request(
                f"Invalid value '{raw}' for $top query option found. The $top query option requires a non-negative integer value."
            )
        return int(raw)

    def count(self, e: Entity) -> DvResponse:
        token = self.req.opt("$deltatoken")
        if token is not None:
            since = self._delta_version(e, token)
            changed, gone = self.store.changed_since(e.logical, since)
            n = len(changed) + len(gone)
        else:
            pred = parse_filter(self.req.opt("$filter"), e)
            n = sum(1 for r in self.store.rows(e.logical).values() if pred(r))
        return DvResponse(200, str(min(n, 5000)).encode(), {"Content-Type": "text/plain", "OData-Version": "4.0"})

    # ------------------------------------------------------------ change tracking

    def _delta_version(self, e: Entity, token: str) -> int:
        m = re.fullmatch(r"(\d+)!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})", token.strip())
        if m is None:
            raise bad_request(f"The delta token '{token}' is not valid.")
        issued = datetime.strptime(m.group(2), TOKEN_TIME).replace(tzinfo=self.api.org.now().tzinfo)
        version = int(m.group(1))
        if self.api.delta_token_expired(version, issued):
            raise DataverseError(400, *EXPIRED)
        return version

    def _delta_link(self, req: DvRequest, e: Entity, version: int) -> str:
        token = f"{version}!{self.api.org.now().strftime(TOKEN_TIME)}"
        params = [(k, quote(v, safe=",")) for k, v in req.query if k == "$select"]
        params.append(("$deltatoken", _quote_lower(token)))
        return _link(req, e.set_name, params)

    def tracked(self, e: Entity, cookie: dict[str, Any] | None) -> DvResponse:
        req = self.req
        if not e.change_tracking:
            raise bad_request(f"The entity '{e.logical}' is not enabled for change tracking.", "0x80044184")
        for opt in ("$filter", "$orderby", "$expand", "$top"):
            if req.opt(opt) is not None:
                raise bad_request(
                    f"The query parameter {opt} is not supported with change tracking (odata.track-changes)."
                )
        select = parse_select(req.opt("$select"), e)
        size = self.page_size()
        if "odata.track-changes" in req.prefer:
            self.applied.append("odata.track-changes")
        token = req.opt("$deltatoken")
        ctx = f"{req.api_base}/$metadata#{context_fragment(e, select, [])}"
        if token is None:  # the initial read: every row, then a deltaLink
            watermark = int(cookie["sbxversion"]) if cookie and "sbxversion" in cookie else self.store.version
            rows = sorted(self.store.rows(e.logical).values(), key=lambda r: r[e.pk])
            if cookie and cookie.get("last"):
                rows = [r for r in rows if r[e.pk] > cookie["last"]]
            chunk = rows[:size]
            out: dict[str, Any] = {"@odata.context": ctx}
            if len(rows) <= size:
                out["@odata.deltaLink"] = self._delta_link(req, e, watermark)
            out["value"] = [self.render.row(e, r, select) for r in chunk]
            if len(rows) > size:
                page = (cookie["page"] if cookie else 1) + 1
                c = make_cookie(page, e.pk, chunk[0][e.pk], chunk[-1][e.pk], True, sbxversion=watermark)
                params = [*_passthrough(req, {"$skiptoken"}), ("$skiptoken", quote(c, safe="="))]
                out["@odata.nextLink"] = _link(req, e.set_name, params)
            return self.respond(out)
        since = self._delta_version(e, token)
        upto = int(cookie["sbxupto"]) if cookie and "sbxupto" in cookie else self.store.version
        changed, gone = self.store.changed_since(e.logical, since)
        phase, last = (cookie.get("sbxphase", "rows"), cookie.get("last", "")) if cookie else ("rows", "")
        items: list[tuple[str, str, dict[str, Any]]] = []
        if phase == "rows":
            items += [("rows", r[e.pk], self.render.row(e, r, select)) for r in changed if r[e.pk] > last]
        deleted_ctx = f"{req.api_base}/$metadata#{e.set_name}/$deletedEntity"
        items += [
            ("gone", i, {"@odata.context": deleted_ctx, "id": i, "reason": "deleted"})
            for i in gone
            if phase == "rows" or i > last
        ]
        batch = items[:size]
        out = {"@odata.context": f"{ctx}/$delta"}
        if len(items) <= size:
            out["@odata.deltaLink"] = self._delta_link(req, e, upto)
        out["value"] = [item for _, _, item in batch]
        if len(items) > size:
            page = (cookie["page"] if cookie else 1) + 1
            kind, key = batch[-1][0], batch[-1][1]
            c = make_cookie(page, e.pk, batch[0][1], key, True, sbxupto=upto, sbxphase=kind)
            params = [*_passthrough(req, {"$skiptoken"}), ("$skiptoken", quote(c, safe="="))]
            out["@odata.nextLink"] = _link(req, e.set_name, params)
        return self.respond(out)

    # ------------------------------------------------------------ single rows and related rows

    def entity(self, e: Entity, row_id: str) -> DvResponse:
        row = self.store.get(e.logical, row_id)
        if row is None:
            raise not_found(e.logical, row_id)
        select = parse_select(self.req.opt("$select"), e)
        expand = parse_expand(self.req.opt("$expand"), e)
        out = {
            "@odata.context": f"{self.req.api_base}/$metadata#{context_fragment(e, select, expand)}/$entity",
            **self.render.row(e, row, select, expand),
        }
        return self.respond(out)

    def related(self, e: Entity, row_id: str, name: str) -> DvResponse:
        row = self.store.get(e.logical, row_id)
        if row is None:
            raise not_found(e.logical, row_id)
        req = self.req
        if name in e.collections:
            coll = e.collections[name]
            target = ENTITIES[coll.target]
            select = parse_select(req.opt("$select"), target)
            pred = parse_filter(req.opt("$filter"), target)
            if coll.via is not None:
                table, mine, other = coll.via
                links = [m[other] for m in self.store.rows(table).values() if m[mine] == row[e.pk]]
                found = [self.store.get(target.logical, i) for i in links]
                rows = [r for r in found if r is not None]
            else:
                fk = coll.fk or ""
                rows = [
                    r for r in self.store.rows(target.logical).values() if r[fk] is not None and r[fk].id == row[e.pk]
                ]
            rows = sorted((r for r in rows if pred(r)), key=lambda r: r[target.pk])
            ctx = f"{req.api_base}/$metadata#{context_fragment(target, select, [])}"
            return self.respond({"@odata.context": ctx, "value": [self.render.row(target, r, select) for r in rows]})
        if name in e.navs:
            col = e.navs[name]
            ref = row.get(col.name)
            target = ENTITIES[(col.navs or {})[name]]
            if ref is None or ref.entity != target.logical:
                return DvResponse(204, headers={"OData-Version": "4.0"})
            return self.entity(target, ref.id)
        column = e.by_web_name.get(name)
        if column is None:
            raise bad_request(f"Resource not found for the segment '{name}'.", "0x8006088a")
        value = to_json(column, row.get(column.name))
        ctx = f"{req.api_base}/$metadata#{e.set_name}({row_id})/{name}"
        return self.respond({"@odata.context": ctx, "value": value})

    # ------------------------------------------------------------ metadata

    def who_am_i(self) -> DvResponse:
        store = self.store
        uid = self.req.principal.user_id or ""
        user = store.get("systemuser", uid)
        bu = user["businessunitid"].id if user and user["businessunitid"] else store.root_business_unit
        return self.respond(
            {
                "@odata.context": f"{self.req.api_base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": bu,
                "UserId": uid,
                "OrganizationId": store.organization_id,
            }
        )

    def entity_definitions(self, key: str | None, attributes: bool) -> DvResponse:
        req = self.req
        if key is None:
            items = [self._definition(e) for e in ENTITIES.values()]
            return self.respond({"@odata.context": f"{req.api_base}/$metadata#EntityDefinitions", "value": items})
        m = re.fullmatch(r"LogicalName='([^']*)'", key) or re.fullmatch(r"([0-9a-fA-F-]{36})", key)
        e = None
        if m is not None:
            e = ENTITIES.get(m.group(1)) or next(
                (x for x in ENTITIES.values() if _meta_id(x) == m.group(1).lower()), None
            )
        if e is None:
            raise DataverseError(404, "0x80040217", f"Could not find entity with name '{key}'.")
        if attributes:
            attrs = [
                {
                    "@odata.type": f"#Microsoft.Dynamics.CRM.{_attribute_type(c.kind)}AttributeMetadata",
                    "LogicalName": c.name,
                    "AttributeType": _attribute_type(c.kind),
                    "IsValidForCreate": c.writable,
                    "IsValidForUpdate": c.writable,
                    "IsValidForRead": True,
                    "MetadataId": _meta_id(e, c.name),
                }
                for c in e.columns.values()
            ]
            ctx = f"{req.api_base}/$metadata#EntityDefinitions('{_meta_id(e)}')/Attributes"
            return self.respond({"@odata.context": ctx, "value": attrs})
        return self.respond(
            {"@odata.context": f"{req.api_base}/$metadata#EntityDefinitions/$entity", **self._definition(e)}
        )

    @staticmethod
    def _definition(e: Entity) -> dict[str, Any]:
        return {
            "MetadataId": _meta_id(e),
            "LogicalName": e.logical,
            "EntitySetName": e.set_name,
            "PrimaryIdAttribute": e.pk,
            "PrimaryNameAttribute": e.primary_name,
            "ObjectTypeCode": e.object_type_code,
            "ChangeTrackingEnabled": e.change_tracking,
            "IsCustomEntity": e.logical.startswith("msdyn_"),
        }


def _attribute_type(kind: str) -> str:
    return {
        "guid": "Uniqueidentifier",
        "string": "String",
        "int": "Integer",
        "bigint": "BigInt",
        "decimal": "Decimal",
        "money": "Money",
        "bool": "Boolean",
        "datetime": "DateTime",
        "date": "DateTime",
        "choice": "Picklist",
        "lookup": "Lookup",
    }[kind]


def _meta_id(e: Entity, *parts: str) -> str:
    from . import ids

    return ids.guid("metadata", e.logical, *parts)


def is_guid(text: str) -> bool:
    return GUID_RE.match(text) is not None
