"""A thin async Dataverse Web API client on httpx (docs: dataverse.md says why not Microsoft's SDK).

What it adds to plain HTTP: the OData headers, paging with `odata.maxpagesize`, change tracking links,
one shared pause per tenant when Dataverse answers 429 (waiting the whole Retry-After, since retrying
early prolongs the penalty), parallelism bounded by the server's `x-ms-dop-hint`, a fresh token after a
401, and errors that name the fix.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import structlog

from relinsights.auth import TokenSource
from relinsights.config import TenantConfig
from relinsights.graph.client import retry_after_seconds, ssl_context

log = structlog.get_logger(__name__)

API_PATH = "/api/data/v9.2/"
MAX_PAGE_SIZE = 5000
TRANSIENT = {500, 502, 503, 504}
MAX_TRANSIENT_RETRIES = 6

Sleep = Callable[[float], Awaitable[None]]


class DataverseError(Exception):
    fix = "see the error; `relinsights status` keeps it per tenant"

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class ChangeTrackingExpired(DataverseError):
    fix = "the change-tracking link expired; the table is read in full again"


class DataversePermissionDenied(DataverseError):
    fix = (
        "give the application user a security role that reads contact, account, lead, opportunity, systemuser "
        "and the activity tables and writes the KPI tables"
    )


class DataverseNotFound(DataverseError):
    fix = "the table or row does not exist in this environment (check the write-back mapping)"


class ThrottledTooLong(DataverseError):
    fix = "Dataverse service protection kept refusing past sync.max_throttle_wait_seconds; the next run resumes"


def _expired(code: str, message: str) -> bool:
    low = f"{code} {message}".lower()
    return "0x80044352" in low or ("expired" in low and ("token" in low or "version" in low or "delta" in low))


@dataclass
class Page:
    rows: list[dict[str, Any]]
    deleted: list[str]  # ids of rows deleted since the last change-tracking link
    next_link: str | None
    delta_link: str | None


@dataclass
class _Limiter:
    """Parallelism that follows the server's x-ms-dop-hint (never above our own ceiling)."""

    ceiling: int
    limit: int = 0
    active: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.limit = self.ceiling

    async def __aenter__(self) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def hint(self, value: str | None) -> None:
        if value and value.isdigit():
            self.limit = max(1, min(self.ceiling, int(value)))


class DataverseClient:
    def __init__(
        self,
        tenant: TenantConfig,
        tokens: TokenSource,
        *,
        max_parallel: int = 4,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        if not tenant.dataverse_url:
            raise DataverseError(f"tenant {tenant.name} has no dataverse_url", code="config")
        self.tenant = tenant
        self.tokens = tokens
        self.base_url = tenant.dataverse_url.rstrip("/") + API_PATH
        self._sleep = sleep
        self._limiter = _Limiter(max_parallel)
        self._pause_until = 0.0  # shared by every request of this tenant (service protection is per user)
        self.max_throttle_wait = float(tenant.sync.max_throttle_wait_seconds)
        self.requests_sent = 0
        self.throttled = 0
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            verify=ssl_context(str(tenant.ca_bundle) if tenant.ca_bundle else None),
            timeout=httpx.Timeout(120.0, connect=15.0),
            transport=transport,
            headers={"Accept": "application/json", "OData-Version": "4.0", "OData-MaxVersion": "4.0"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the one request path -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> httpx.Response:
        body = orjson.dumps(json) if json is not None else content
        hdrs = dict(headers or {})
        if json is not None:
            hdrs.setdefault("Content-Type", "application/json")
        waited = 0.0
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                await self._sleep(pause)
                waited += pause
            hdrs["Authorization"] = f"Bearer {await self.tokens.token()}"
            try:
                async with self._limiter:
                    self.requests_sent += 1
                    resp = await self._http.request(method, url, content=body, headers=hdrs)
            except httpx.TransportError as exc:
                if attempt > MAX_TRANSIENT_RETRIES:
                    raise DataverseError(f"{type(exc).__name__} talking to Dataverse ({method} {url}): {exc}") from None
                await self._sleep(min(30.0, 0.5 * 2**attempt))
                continue
            self._limiter.hint(resp.headers.get("x-ms-dop-hint"))
            if resp.status_code in ok:
                return resp
            if resp.status_code == 429:
                self.throttled += 1
                delay = retry_after_seconds(resp.headers, attempt)
                if waited + delay > self.max_throttle_wait:
                    raise ThrottledTooLong(f"429 for {waited:.0f}s on {method} {url}", 429, "throttled")
                # One pause for the whole tenant: every request waits it out, not only this one.
                self._pause_until = max(self._pause_until, time.monotonic() + delay)
                log.info("dataverse.throttled", tenant=self.tenant.name, wait_s=round(delay, 2))
                continue
            if resp.status_code in TRANSIENT and attempt <= MAX_TRANSIENT_RETRIES:
                delay = (
                    retry_after_seconds(resp.headers, attempt)
                    if "Retry-After" in resp.headers
                    else (min(30.0, 0.5 * 2**attempt) + random.uniform(0, 0.5))
                )
                await self._sleep(delay)
                waited += delay
                continue
            if resp.status_code == 401 and not refreshed:
                self.tokens.invalidate()
                refreshed = True
                continue
            raise self._error(resp, f"{method} {url}")

    @staticmethod
    def _error(resp: httpx.Response, context: str) -> DataverseError:
        code, message = "", resp.text[:300]
        try:
            err = orjson.loads(resp.content).get("error", {})
            code, message = str(err.get("code", "")), str(err.get("message", message))
        except (orjson.JSONDecodeError, AttributeError):
            pass
        text = f"{resp.status_code} {code or 'error'}: {message} ({context})"
        if _expired(code, message):
            return ChangeTrackingExpired(text, resp.status_code, code)
        if resp.status_code == 403:
            return DataversePermissionDenied(text, resp.status_code, code)
        if resp.status_code == 404:
            return DataverseNotFound(text, resp.status_code, code)
        return DataverseError(text, resp.status_code, code)

    # ---- reads ----------------------------------------------------------------------------------

    @staticmethod
    def query_url(entity_set: str, select: list[str], filter: str | None = None) -> str:
        parts = ["$select=" + ",".join(select)]
        if filter:
            parts.append("$filter=" + quote(filter, safe=" ()/,'"))
        return f"{entity_set}?{'&'.join(parts)}"

    async def pages(
        self,
        entity_set: str,
        select: list[str],
        *,
        filter: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        track_changes: bool = False,
        link: str | None = None,
    ) -> AsyncIterator[Page]:
        """Every page of a query, or of a change-tracking round when `link` is a stored delta link."""
        prefer = [f"odata.maxpagesize={min(page_size, MAX_PAGE_SIZE)}"]
        if track_changes:
            prefer.append("odata.track-changes")
        headers = {"Prefer": ",".join(prefer)}
        url: str | None = link or self.query_url(entity_set, select, None if track_changes else filter)
        while url:
            resp = await self.request("GET", url, headers=headers)
            data = orjson.loads(resp.content)
            rows, deleted = [], []
            for row in data.get("value", []):
                if not isinstance(row, dict):
                    continue
                if str(row.get("@odata.context", "")).endswith("$deletedEntity") or row.get("reason") == "deleted":
                    deleted.append(str(row.get("id")))
                else:
                    rows.append(row)
            next_link = data.get("@odata.nextLink")
            yield Page(rows, deleted, next_link, data.get("@odata.deltaLink"))
            url = next_link

    async def get(self, entity_set: str, row_id: str, select: list[str]) -> dict[str, Any]:
        resp = await self.request("GET", f"{entity_set}({row_id})?$select={','.join(select)}")
        return dict(orjson.loads(resp.content))

    # ---- writes ---------------------------------------------------------------------------------

    async def upsert(
        self,
        entity_set: str,
        row_id: str,
        payload: dict[str, Any],
        *,
        update_only: bool = False,
        create_only: bool = False,
    ) -> int:
        """PATCH set(id): without conditions an upsert that creates the row with our id. Returns the status."""
        headers = {}
        if update_only:
            headers["If-Match"] = "*"
        if create_only:
            headers["If-None-Match"] = "*"
        resp = await self.request("PATCH", f"{entity_set}({row_id})", json=payload, headers=headers)
        return resp.status_code

    async def upsert_multiple(self, entity_set: str, logical_name: str, targets: list[dict[str, Any]]) -> None:
        """One call for many rows; one bad row fails the whole call (the caller splits to find it)."""
        await self.bulk("UpsertMultiple", entity_set, logical_name, targets)

    async def bulk(self, action: str, entity_set: str, logical_name: str, targets: list[dict[str, Any]]) -> None:
        """A bulk action (UpsertMultiple, UpdateMultiple, CreateMultiple) on one table."""
        await self.request(
            "POST", f"{entity_set}/Microsoft.Dynamics.CRM.{action}", json=multiple_body(logical_name, targets)
        )


def multiple_body(logical_name: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a bulk action: every target typed, as the actions require."""
    return {"Targets": [{"@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}", **t} for t in targets]}
