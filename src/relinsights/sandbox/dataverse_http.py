"""Plumbing of the Dataverse Web API emulator: one request as the handlers see it (also for the parts of a
`$batch`), the response they build, Dataverse's error envelope, and the Prefer header.

Error codes are Dataverse's hexadecimal ones (`0x80060888` for OData-level problems, `0x80040217` for a
missing record, `0x80040237` for a duplicate, `0x80044331` for validation, `0x80044352` for an expired
change-tracking token, `0x8007232x` for service protection); with `Prefer: odata.include-annotations`
covering `Microsoft.PowerApps.CDS.*` the error also carries the `@Microsoft.PowerApps.CDS.*` details.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import orjson

JSON_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true"
ERROR_TYPE = "application/json; odata.metadata=minimal"
HELP_LINK = "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a{code}&client=platform"


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def bad_request(message: str, code: str = "0x80060888") -> DataverseError:
    return DataverseError(400, code, message)


def not_found(logical: str, row_id: str) -> DataverseError:
    return DataverseError(404, "0x80040217", f"Entity '{logical}' With Id = {row_id} Does Not Exist")


@dataclass
class Principal:
    """Who calls: the application user behind the token."""

    key: str  # the token's oid (service principal): service protection limits are per user
    user_id: str | None  # systemuserid of the application user


@dataclass
class DvRequest:
    method: str
    path: str  # after /api/data/v9.x/, percent-decoded
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    api_base: str  # https://host:port/dataverse/api/data/v9.2
    principal: Principal
    content_ids: dict[str, str] = field(default_factory=dict)  # $batch: "1" -> "contacts(<id>)"
    prefer: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prefer:
            self.prefer = parse_prefer(self.headers.get("prefer", ""))

    def opt(self, name: str) -> str | None:
        """A system query option, e.g. opt("$select"); Dataverse names them with the '$', case-sensitively."""
        for k, v in self.query:
            if k == name:
                return v
        return None

    def json_body(self) -> Any:
        if not self.body.strip():
            raise bad_request("The request body is empty; a JSON payload was expected.")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"Invalid JSON. {exc}") from None


@dataclass
class DvResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> DvResponse:
        return cls(
            status, orjson.dumps(payload), {"Content-Type": JSON_TYPE, "OData-Version": "4.0", **(headers or {})}
        )

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"


def error_response(err: DataverseError, prefer: dict[str, str] | None = None) -> DvResponse:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if annotation_filter((prefer or {}).get("odata.include-annotations"))("Microsoft.PowerApps.CDS.HelpLink"):
        body.update(
            {
                "@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus": "0",
                "@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode": str(int(err.code, 16) - (1 << 32))
                if err.code.startswith("0x")
                else "0",
                "@Microsoft.PowerApps.CDS.HelpLink": HELP_LINK.format(code=err.code.removeprefix("0x")),
                "@Microsoft.PowerApps.CDS.TraceText": "",
                "@Microsoft.PowerApps.CDS.InnerError.Message": err.message,
            }
        )
    headers = {"Content-Type": ERROR_TYPE, "OData-Version": "4.0", **err.headers}
    return DvResponse(err.status, orjson.dumps({"error": body}), headers)


# ---------------------------------------------------------------- Prefer


_PREFER_PART = re.compile(r'\s*([A-Za-z][\w.\-]*)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,;]*))?\s*(?:;[^,]*)?\s*(?:,|$)')


def parse_prefer(header: str) -> dict[str, str]:
    """Prefer -> {lower-case name: value without quotes}; quoted values may hold commas."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(header):
        m = _PREFER_PART.match(header, pos)
        if m is None or m.end() == pos:
            nxt = header.find(",", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        out[m.group(1).lower()] = (m.group(2) or "").strip().strip('"')
        pos = m.end()
    return out


def annotation_filter(value: str | None) -> Any:
    """odata.include-annotations="*" | "ns.term,ns.*,-ns.term" -> predicate(annotation name)."""
    if not value:
        return lambda name: False
    patterns = [p.strip() for p in value.split(",") if p.strip()]

    def match(pattern: str, name: str) -> bool:
        if pattern == "*":
            return True
        if pattern.endswith(".*"):
            return name.startswith(pattern[:-1])
        return name == pattern

    def accept(name: str) -> bool:
        if any(match(p[1:], name) for p in patterns if p.startswith("-")):
            return False
        return any(match(p, name) for p in patterns if not p.startswith("-"))

    return accept


# ---------------------------------------------------------------- misc


def request_id() -> str:
    return str(uuid.uuid4())


def entity_url(api_base: str, set_name: str, row_id: str) -> str:
    return f"{api_base}/{set_name}({row_id})"


def quote_query(value: str) -> str:
    return quote(value, safe="=,/()'$:")
