"""Writes: create (POST), update and upsert (PATCH with If-Match / If-None-Match), single-column PUT and
DELETE, lookup references (`$ref`), delete, and the bulk actions CreateMultiple, UpdateMultiple and
UpsertMultiple.

Payloads are checked the way Dataverse's OData layer checks them: unknown properties, lookups written
as values instead of `<navigation property>@odata.bind` (whose names are case-sensitive: a wrong case is
"an undeclared property"), values of the wrong type, strings over their maximum length and numbers out
of range are refused with Dataverse's codes and messages. Stricter than Dataverse, on purpose: writing a
read-only column (created/modified stamps, full names, the `*_calculated` KPI columns) is refused with
0x80048d19 instead of being ignored, so a client that writes them is caught.

The caller wraps each request in a store transaction: a failing bulk action leaves nothing behind.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from .dataverse_http import DataverseError, DvRequest, DvResponse, annotation_filter, bad_request, entity_url, not_found
from .dataverse_query import GUID_RE, Renderer, context_fragment, parse_select
from .dataverse_schema import BY_SET, Column, Entity, Ref

if TYPE_CHECKING:
    from .dataverse_api import DataverseApi

DUPLICATE = ("0x80040237", "A record with matching key values already exists.")


def _wrong_literal(value: Any, col: Column) -> DataverseError:
    return bad_request(f"Cannot convert the literal '{value}' to the expected type '{col.edm}'.")


def _out_of_range(e: Entity, col: Column, value: Any) -> DataverseError:
    accepted = ",".join(str(k) for k in col.options) if col.options else f"{col.minimum:g} to {col.maximum:g}"
    return DataverseError(
        400,
        "0x80044331",
        f"A validation error occurred.  The value {value} of '{col.name}' on record of type '{e.logical}' is "
        f"outside the valid range. Accepted Values: {accepted}",
    )


def convert(e: Entity, col: Column, value: Any) -> Any:
    """A JSON value as the column stores it, or Dataverse's error."""
    if value is None:
        return None
    kind = col.kind
    if kind == "string":
        if not isinstance(value, str):
            raise _wrong_literal(value, col)
        if col.max_length is not None and len(value) > col.max_length:
            raise DataverseError(
                400,
                "0x80044331",
                f"A validation error occurred.  The length of the '{col.name}' attribute of the '{e.logical}' entity "
                f"exceeded the maximum allowed length of '{col.max_length}'.",
            )
        return value
    if kind in ("int", "bigint", "choice"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_literal(value, col)
        if col.options is not None and value not in col.options:
            raise _out_of_range(e, col, value)
        if (col.minimum is not None and value < col.minimum) or (col.maximum is not None and value > col.maximum):
            raise _out_of_range(e, col, value)
        return value
    if kind in ("decimal", "money"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _wrong_literal(value, col) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_literal(value, col)
        if (col.minimum is not None and value < col.minimum) or (col.maximum is not None and value > col.maximum):
            raise _out_of_range(e, col, value)
        return round(float(value), col.precision)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _wrong_literal(value, col)
        return value
    if kind == "datetime":
        if not isinstance(value, str) or not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})", value
        ):
            raise _wrong_literal(value, col)
        from .odata import parse_datetime

        try:
            return parse_datetime(value).replace(microsecond=0)
        except ValueError:
            raise _wrong_literal(value, col) from None
    if kind == "date":
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise _wrong_literal(value, col)
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise _wrong_literal(value, col) from None
    if kind == "guid":
        if not isinstance(value, str) or not GUID_RE.match(value):
            raise _wrong_literal(value, col)
        return value.lower()
    raise _wrong_literal(value, col)


def _undeclared(nav: str) -> DataverseError:
    return bad_request(
        f"An undeclared property '{nav}' which only has property annotations in the payload but no property value "
        "was found in the payload. In OData, only declared navigation properties and declared named streams can be "
        "represented as properties without values."
    )


def _read_only(e: Entity, col: Column) -> DataverseError:
    why = "it is calculated by Dataverse" if col.calculated else "it is maintained by Dataverse"
    return bad_request(
        f"Error identified in Payload provided by the user for Entity :'{e.set_name}'. Field '{col.name}' is "
        f"read-only: {why}.",
        "0x80048d19",
    )


def entity_path(value: str, content_ids: dict[str, str]) -> str:
    """'/contacts(id)', 'contacts(id)', an absolute URL or '$1' (a $batch Content-ID) -> 'contacts(id)'."""
    path = value.strip()
    if path.startswith("$"):
        ref, sep, rest = path[1:].partition("/")
        if ref not in content_ids:
            raise bad_request(f"Content-ID Reference: '${ref}' does not exist in the batch context.")
        path = content_ids[ref] + (sep + rest if sep else "")
    m = re.search(r"/api/data/v9\.\d/", path)
    if m is not None:
        path = path[m.end() :]
    return path.lstrip("/")


def parse_key(e: Entity, key: str) -> str:
    key = key.strip()
    if "=" in key:
        name, _, value = key.partition("=")
        if name.strip() != e.pk:
            raise bad_request(
                f"The key '{name.strip()}' is not an alternate key of '{e.logical}': the sandbox defines none.",
                "0x80060891",
            )
        key = value.strip()
    if not GUID_RE.match(key):
        raise bad_request("Bad Request - Error in query syntax.")
    return key.lower()


class Writer:
    def __init__(self, api: DataverseApi, req: DvRequest) -> None:
        self.api, self.req, self.store = api, req, api.store
        self.rows_written = 0

    # ------------------------------------------------------------ payloads

    def _bind(self, e: Entity, nav: str, value: Any) -> tuple[Column, Ref | None]:
        col = e.navs.get(nav)
        if col is None:
            raise _undeclared(nav)
        if not col.writable:
            raise _read_only(e, col)
        if value is None:
            return col, None
        if not isinstance(value, str):
            raise bad_request(f"The value of '{nav}@odata.bind' must be a URL of the related record.")
        path = entity_path(value, self.req.content_ids)
        m = re.fullmatch(r"(\w+)\(([^)]*)\)", path)
        if m is None or m.group(1) not in BY_SET:
            raise bad_request(f"Resource not found for the segment '{path}'.", "0x8006088a")
        target = BY_SET[m.group(1)]
        wanted = (col.navs or {})[nav]
        if target.logical != wanted:
            raise bad_request(
                f"An entity of type '{target.type_name}' cannot be bound to the navigation property '{nav}' "
                f"of type 'Microsoft.Dynamics.CRM.{wanted}'."
            )
        rid = parse_key(target, m.group(2))
        if self.store.get(target.logical, rid) is None:
            raise not_found(target.logical, rid)
        return col, Ref(target.logical, rid)

    def values(self, e: Entity, body: Any) -> dict[str, Any]:
        """The columns a JSON entity body sets (lookups from @odata.bind), checked."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object describing one record.")
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key.startswith("@"):
                if key == "@odata.type" and str(value).lstrip("#") != e.type_name:
                    raise bad_request(f"The @odata.type '{value}' does not match the entity set '{e.set_name}'.")
                continue
            if "@" in key:
                prop, _, annotation = key.partition("@")
                if annotation == "odata.bind":
                    bound, ref = self._bind(e, prop, value)
                    out[bound.name] = ref
                continue  # other annotations on a property (formatted values sent back) are ignored
            col = e.by_web_name.get(key)
            if col is None:
                if key in e.navs or key in e.collections:
                    if isinstance(value, dict | list):
                        raise bad_request(f"Deep insert through '{key}' is not supported by the sandbox.")
                    raise bad_request(
                        "A 'PrimitiveValue' node with non-null value was found when trying to read the value of a "
                        "navigation property; however, a 'StartArray' node, a 'StartObject' node, or a "
                        "'PrimitiveValue' node with null value was expected."
                    )
                raise bad_request(
                    f"The property '{key}' does not exist on type '{e.type_name}'. Make sure to only use property "
                    "names that are defined by the type."
                )
            if col.kind == "lookup":
                raise bad_request(
                    f"The property '{key}' does not exist on type '{e.type_name}'. Make sure to only use property "
                    "names that are defined by the type."
                )
            if not col.writable:
                raise _read_only(e, col)
            out[col.name] = convert(e, col, value)
        return out

    def _check_privilege(self, action: str, e: Entity) -> None:
        name = f"prv{action}{e.logical}"
        if name in self.api.settings.missing_privileges:
            user = self.req.principal.user_id
            raise DataverseError(
                403,
                "0x80040220",
                f"Principal user (Id={user}, type=8, roleCount=1, accessMode=4), is missing {name} privilege on "
                f"OTC={e.object_type_code} for entity '{e.logical}'. context.Caller={user}. Consider assigning a role "
                "with the required privilege.",
            )

    # ------------------------------------------------------------ single rows

    def _create(self, e: Entity, values: dict[str, Any], row_id: str | None) -> dict[str, Any]:
        self._check_privilege("Create", e)
        rid = row_id or values.pop(e.pk, None) or self.store.new_id()
        values.pop(e.pk, None)
        if self.store.get(e.logical, rid) is not None:
            raise DataverseError(412, *DUPLICATE)
        self.rows_written += 1
        self.store.written[e.set_name] = self.store.written.get(e.set_name, 0) + 1
        return self.store.insert(e.logical, values, row_id=rid, by=self.req.principal.user_id)

    def _update(self, e: Entity, row_id: str, values: dict[str, Any]) -> dict[str, Any]:
        self._check_privilege("Write", e)
        values.pop(e.pk, None)
        self.rows_written += 1
        self.store.written[e.set_name] = self.store.written.get(e.set_name, 0) + 1
        return self.store.update(e.logical, row_id, values, by=self.req.principal.user_id)

    def _answer(self, e: Entity, row: dict[str, Any], created: bool) -> DvResponse:
        url = entity_url(self.req.api_base, e.set_name, row[e.pk])
        headers = {"Location": url, "OData-EntityId": url}  # as the documented $batch answers show
        if self.req.prefer.get("return") == "representation":
            annotations = self.req.prefer.get("odata.include-annotations")
            select = parse_select(self.req.opt("$select"), e)
            render = Renderer(self.store, annotation_filter(annotations))
            applied = ["return=representation"]
            if annotations is not None:
                applied.append(f'odata.include-annotations="{annotations}"')
            body = {
                "@odata.context": f"{self.req.api_base}/$metadata#{context_fragment(e, select, [])}/$entity",
                **render.row(e, row, select),
            }
            return DvResponse.json(201 if created else 200, body, {**headers, "Preference-Applied": ", ".join(applied)})
        return DvResponse(204, headers={"OData-Version": "4.0", **headers})

    def post(self, e: Entity) -> DvResponse:
        values = self.values(e, self.req.json_body())
        row = self._create(e, values, None)
        return self._answer(e, row, True)

    def patch(self, e: Entity, row_id: str) -> DvResponse:
        values = self.values(e, self.req.json_body())
        if e.pk in values and values[e.pk] != row_id:
            raise bad_request(f"The value of '{e.pk}' in the payload does not match the key in the URL.")
        if_match = self.req.headers.get("if-match")
        if_none = self.req.headers.get("if-none-match")
        if_none = None if if_none in (None, "null") else if_none
        row = self.store.get(e.logical, row_id)
        if if_none is not None:
            if if_none != "*":
                raise bad_request("If-None-Match supports only '*' on updates.")
            if row is not None:
                raise DataverseError(412, *DUPLICATE)
            return self._answer(e, self._create(e, values, row_id), True)
        if if_match is not None:
            if row is None:
                raise not_found(e.logical, row_id)
            if if_match != "*" and if_match != f'W/"{row["versionnumber"]}"':
                raise DataverseError(
                    412,
                    "0x80060882",
                    "The version of the existing record doesn't match the RowVersion property provided.",
                )
            return self._answer(e, self._update(e, row_id, values), False)
        if row is None:  # upsert: create with the id the client chose
            return self._answer(e, self._create(e, values, row_id), True)
        return self._answer(e, self._update(e, row_id, values), False)

    def put_property(self, e: Entity, row_id: str, prop: str) -> DvResponse:
        if self.store.get(e.logical, row_id) is None:
            raise not_found(e.logical, row_id)
        body = self.req.json_body()
        if not isinstance(body, dict) or "value" not in body:
            raise bad_request('A single-property update takes {"value": ...}.')
        values = self.values(e, {prop: body["value"]})
        self._update(e, row_id, values)
        return DvResponse(204, headers={"OData-Version": "4.0"})

    def set_reference(self, e: Entity, row_id: str, nav: str, delete: bool) -> DvResponse:
        if self.store.get(e.logical, row_id) is None:
            raise not_found(e.logical, row_id)
        if delete:
            col = e.navs.get(nav)
            if col is None:
                raise _undeclared(nav)
            self._update(e, row_id, {col.name: None})
        else:
            body = self.req.json_body()
            if not isinstance(body, dict) or "@odata.id" not in body:
                raise bad_request('Setting a reference takes {"@odata.id": "<entity URL>"}.')
            col, ref = self._bind(e, nav, body["@odata.id"])
            self._update(e, row_id, {col.name: ref})
        return DvResponse(204, headers={"OData-Version": "4.0"})

    def delete(self, e: Entity, row_id: str, prop: str | None = None) -> DvResponse:
        row = self.store.get(e.logical, row_id)
        if row is None:
            raise not_found(e.logical, row_id)
        if prop is not None:  # DELETE set(id)/column clears it
            col = e.by_web_name.get(prop)
            if col is None or col.kind == "lookup":
                raise bad_request(f"The property '{prop}' does not exist on type '{e.type_name}'.")
            if not col.writable:
                raise _read_only(e, col)
            self._update(e, row_id, {col.name: None})
            return DvResponse(204, headers={"OData-Version": "4.0"})
        if_match = self.req.headers.get("if-match")
        if if_match not in (None, "*") and if_match != f'W/"{row["versionnumber"]}"':
            raise DataverseError(
                412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
            )
        self._check_privilege("Delete", e)
        self.store.delete(e.logical, row_id)
        return DvResponse(204, headers={"OData-Version": "4.0"})

    # ------------------------------------------------------------ bulk

    def bulk(self, e: Entity, action: str) -> DvResponse:
        body = self.req.json_body()
        targets = body.get("Targets") if isinstance(body, dict) else None
        if not isinstance(targets, list) or not targets:
            raise bad_request(f"{action} expects a non-empty 'Targets' collection.")
        parsed: list[tuple[str | None, dict[str, Any]]] = []
        for n, t in enumerate(targets):
            if not isinstance(t, dict):
                raise bad_request(f"Targets[{n}] is not an entity.")
            odata_type = t.get("@odata.type")
            if odata_type is None:
                raise bad_request(
                    f"Targets[{n}]: the @odata.type annotation is required for every item of Targets.", "0x80048d19"
                )
            if str(odata_type).lstrip("#") != e.type_name:
                raise bad_request(f"Targets[{n}]: @odata.type '{odata_type}' does not match '{e.type_name}'.")
            key: str | None = None
            if "@odata.id" in t:
                m = re.fullmatch(r"(\w+)\(([^)]*)\)", entity_path(str(t["@odata.id"]), self.req.content_ids))
                if m is None or m.group(1) != e.set_name:
                    raise bad_request(f"Targets[{n}]: @odata.id '{t['@odata.id']}' is not a record of {e.set_name}.")
                key = parse_key(e, m.group(2))
            values = self.values(e, {k: v for k, v in t.items() if k not in ("@odata.id",)})
            if e.pk in values:
                if key is not None and values[e.pk] != key:
                    raise bad_request(f"Targets[{n}]: the key in @odata.id and '{e.pk}' differ.")
                key = values.pop(e.pk)
            parsed.append((key, values))
        keys = [k for k, _ in parsed if k is not None]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if action == "CreateMultiple":
            if duplicates:
                raise DataverseError(400, "0x80040237", f"Cannot insert duplicate key: {e.pk} = {duplicates[0]}.")
            created = [self._create(e, values, key)[e.pk] for key, values in parsed]
            self.rows_written = len(created)
            return DvResponse.json(
                200,
                {
                    "@odata.context": f"{self.req.api_base}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                    "Ids": created,
                },
            )
        if action == "UpdateMultiple":
            seen: set[str] = set()
            for n, (key, values) in enumerate(parsed):
                if key is None:
                    raise bad_request(f"Targets[{n}]: UpdateMultiple needs the primary key '{e.pk}' of every record.")
                if key in seen:
                    continue  # as documented: later records with the same key are ignored
                seen.add(key)
                if self.store.get(e.logical, key) is None:
                    raise not_found(e.logical, key)
                self._update(e, key, values)
            return DvResponse(204, headers={"OData-Version": "4.0"})
        if duplicates:  # UpsertMultiple
            raise bad_request(
                f"UpsertMultiple does not accept several records with the same key ({e.pk} = {duplicates[0]}).",
                "0x80040237",
            )
        for key, values in parsed:
            if key is not None and self.store.get(e.logical, key) is not None:
                self._update(e, key, values)
            else:
                self._create(e, values, key)
        return DvResponse(204, headers={"OData-Version": "4.0"})
