"""OData plumbing shared by the Graph routes: JSON responses, Graph's error envelope, query options,
Prefer headers, and signed opaque paging tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GraphError(Exception):
    """Raised anywhere in a Graph route; rendered as {"error": {"code", "message", "innerError"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.inner = inner or {}


def graph_error_response(request: Request | None, err: GraphError) -> JSONResponse:
    request_id = str(uuid.uuid4())
    client_request_id = (request.headers.get("client-request-id") if request else None) or request_id
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id,
        **err.inner,
    }
    body = {"error": {"code": err.code, "message": err.message, "innerError": inner}}
    headers = {"request-id": request_id, "client-request-id": client_request_id, **err.headers}
    return JSONResponse(body, status_code=err.status, headers=headers)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


# ---------------------------------------------------------------- query options


def query_options(request: Request) -> dict[str, str]:
    """System query options by lower-case name without '$' (Graph accepts $select and select alike)."""
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        out[k.lower().lstrip("$")] = v
    return out


def parse_select(raw: str | None, known: set[str], type_name: str, code: str = "BadRequest") -> list[str] | None:
    if raw is None or raw.strip() == "":
        return None
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    lower = {k.lower(): k for k in known}
    out = []
    for f in fields:
        if f == "*":
            return None
        canon = lower.get(f.lower())
        if canon is None:
            raise bad_request(f"Could not find a property named '{f}' on type '{type_name}'.", code)
        if canon not in out:
            out.append(canon)
    return out


def parse_top(raw: str | None, maximum: int, default: int) -> int:
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum}.") from None
    if not 1 <= n <= maximum:
        raise GraphError(
            400,
            "Request_BadRequest",
            f"Invalid page size specified: '{n}'. Must be between 1 and {maximum} inclusive.",
        )
    return n


_PREFER_ITEM = re.compile(r'\s*([A-Za-z.\-]+)\s*(?:=\s*("[^"]*"|[^,;\s]+))?\s*')


def parse_prefer(request: Request) -> dict[str, str]:
    """Prefer header(s) -> {lower-case name: value without quotes}."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            m = _PREFER_ITEM.fullmatch(part)
            if m:
                out[m.group(1).lower()] = (m.group(2) or "").strip('"')
    return out


def graph_datetime(dt: datetime | None) -> str | None:
    """Outlook's DateTimeOffset rendering: '2026-03-05T10:00:00Z'."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(raw: str) -> datetime:
    s = raw.strip().replace(" ", "+")
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    # Graph accepts 7-digit fractions; Python takes at most 6.
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ---------------------------------------------------------------- opaque tokens


class TokenCodec:
    """Skip/delta tokens carry their state (signed, so clients cannot forge them) like Graph's opaque ones.

    Being self-contained, any link can be replayed, as Graph allows.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, state: dict[str, Any]) -> str:
        body = zlib.compress(orjson.dumps(state), 9)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:10]
        return base64.urlsafe_b64encode(mac + body).decode("ascii").rstrip("=")

    def decode(self, token: str) -> dict[str, Any] | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        mac, body = raw[:10], raw[10:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()[:10]):
            return None
        try:
            state = orjson.loads(zlib.decompress(body))
        except (orjson.JSONDecodeError, zlib.error):
            return None
        return state if isinstance(state, dict) else None
