"""Graph requests through msgraph-sdk (auth, middleware, error mapping), pages parsed as raw JSON.

The SDK builds and sends every request; we ask its adapter for the raw bytes and parse them with orjson,
because the SDK's per-message model parsing costs milliseconds per message (docs: graph.md). Throttling
(429/503/504) is retried here, honouring Retry-After without a retry cap, so a busy mailbox waits instead
of failing; everything else becomes a typed error the sync turns into a visible status.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import structlog
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_core import GraphClientFactory

from relinsights.auth import CredentialError, TokenSource
from relinsights.config import TenantConfig

log = structlog.get_logger(__name__)

ERROR_MAP: dict[str, Any] = {"XXX": ODataError}
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
MAX_NETWORK_RETRIES = 6

Sleep = Callable[[float], Awaitable[None]]


class GraphError(Exception):
    """A Graph request failed for a reason the sync names in the mailbox status."""

    fix = "see the error; `relinsights status` keeps it per mailbox"

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class MailboxNotEnabled(GraphError):
    fix = "the user has no Exchange Online mailbox; nothing to sync (assign a licence with Exchange, or ignore)"


class CursorExpired(GraphError):
    fix = "the delta token expired; the folder is fully resynced"


class PermissionDenied(GraphError):
    pass


class AuthFailed(GraphError):
    fix = "the token was refused; check the app registration (client id, credential, admin consent)"


class NotFound(GraphError):
    fix = "the object no longer exists"


class ThrottledTooLong(GraphError):
    fix = "Graph kept throttling past sync.max_throttle_wait_seconds; the next round resumes from the cursor"


class NetworkError(GraphError):
    fix = "check network access to Graph (proxy, firewall, DNS); the next round resumes from the cursor"


def permission_fix(context: str) -> str:
    """The least-privileged application permission that a failing request (its context) needs."""
    c = context.lower()
    if "calendar" in c or "event" in c:
        need = "Calendars.Read"
    elif "message" in c or "folder" in c:
        need = "Mail.ReadBasic.All"
    elif "group" in c or "transitivemembers" in c:
        need = "GroupMember.Read.All"
    elif "domain" in c:
        need = "Domain.Read.All"
    else:
        need = "User.Read.All"
    return (
        f"grant the application permission {need} to the app registration and admin-consent it "
        "(or, with Exchange RBAC for Applications, add this mailbox to the app's management scope)"
    )


class _MsalTokenProvider(AccessTokenProvider):
    def __init__(self, source: TokenSource, host: str):
        self._source = source
        self._validator = AllowedHostsValidator([host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        if not self._validator.is_url_host_valid(uri):
            return ""  # never send the token to another host (a nextLink pointing elsewhere)
        return await self._source.token()

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()


def retry_after_seconds(headers: Any, attempt: int) -> float:
    """Seconds to wait: Retry-After (seconds, fractional, or an HTTP date) else exponential backoff."""
    raw = None
    if headers is not None:
        try:
            raw = headers.get("Retry-After") or headers.get("retry-after")
        except AttributeError:
            raw = None
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                from datetime import UTC, datetime

                return max(0.0, (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError):
                pass
    return min(60.0, 2.0**attempt) + random.uniform(0, 1)


class GraphClient:
    """One tenant's Graph access: the SDK client, its token source and the request limits."""

    def __init__(
        self,
        tenant: TenantConfig,
        tokens: TokenSource,
        *,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.tenant = tenant
        self.tokens = tokens
        self._sleep = sleep
        self.max_throttle_wait = float(tenant.sync.max_throttle_wait_seconds)
        self._sem = asyncio.Semaphore(tenant.sync.max_concurrent_requests)
        host = urlsplit(tenant.graph_url).hostname or ""
        http = httpx.AsyncClient(
            verify=ssl_context(str(tenant.ca_bundle) if tenant.ca_bundle else None),
            timeout=httpx.Timeout(60.0, connect=15.0),
            limits=httpx.Limits(max_connections=tenant.sync.max_concurrent_requests + 4),
            transport=transport,
            follow_redirects=False,
        )
        self._http = GraphClientFactory.create_with_default_middleware(client=http)
        adapter = GraphRequestAdapter(
            BaseBearerTokenAuthenticationProvider(_MsalTokenProvider(tokens, host)), self._http
        )
        adapter.base_url = tenant.graph_url
        self.adapter = adapter
        self.sdk = GraphServiceClient(request_adapter=adapter)
        self.requests_sent = 0
        self.throttled = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_json(self, request: RequestInformation, *, context: str = "") -> dict[str, Any]:
        """Send one request and return its JSON body, waiting out throttling and retrying transient faults."""
        # Our loop does the retrying, so it can wait as long as Retry-After says and log it once.
        request.add_request_options([RetryHandlerOption(max_retries=0, should_retry=False)])
        waited = 0.0
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            # The auth provider only adds a token when none is there; a retry must carry a fresh one.
            request.headers.remove("Authorization")
            try:
                async with self._sem:
                    self.requests_sent += 1
                    body = await self.adapter.send_primitive_async(request, "bytes", ERROR_MAP)
                if not body:
                    return {}
                parsed = orjson.loads(body)
                if not isinstance(parsed, dict):
                    raise GraphError(f"unexpected JSON from Graph ({type(parsed).__name__}) for {context}")
                return parsed
            except APIError as exc:
                status = exc.response_status_code or 0
                code = _error_code(exc)
                message = _error_message(exc)
                if status in TRANSIENT_STATUS:
                    delay = retry_after_seconds(exc.response_headers, attempt)
                    if waited + delay > self.max_throttle_wait:
                        raise ThrottledTooLong(
                            f"throttled ({status} {code}) for {waited:.0f}s on {context}", status, code
                        ) from None
                    if status == 429:
                        self.throttled += 1
                    log.info("graph.retry", status=status, code=code, wait_s=round(delay, 2), context=context)
                    await self._sleep(delay)
                    waited += delay
                    continue
                if status == 401 and not refreshed:
                    self.tokens.invalidate()
                    refreshed = True
                    continue
                raise classify(status, code, message, context) from None
            except (httpx.TransportError, orjson.JSONDecodeError) as exc:
                # A dropped connection or a body cut mid-way: the same request is safe to send again.
                if attempt > MAX_NETWORK_RETRIES:
                    raise NetworkError(f"{type(exc).__name__} talking to Graph for {context}: {exc}") from None
                delay = min(30.0, 0.5 * 2**attempt)
                log.info("graph.retry", error=type(exc).__name__, wait_s=delay, context=context)
                await self._sleep(delay)
                waited += delay
            except CredentialError:
                raise

    def link_request(self, link: str, headers: dict[str, str] | None = None) -> RequestInformation:
        """A GET of a stored nextLink/deltaLink, through the SDK's pipeline."""
        from kiota_abstractions.method import Method

        info = RequestInformation(Method.GET, link)
        info.headers.try_add("Accept", "application/json")
        for k, v in (headers or {}).items():
            info.headers.try_add(k, v)
        return info


def _error_code(exc: APIError) -> str:
    if isinstance(exc, ODataError) and exc.error is not None and exc.error.code:
        return str(exc.error.code)
    return ""


def _error_message(exc: APIError) -> str:
    if isinstance(exc, ODataError) and exc.error is not None and exc.error.message:
        return str(exc.error.message)
    return str(exc.message or exc)


def classify(status: int, code: str, message: str, context: str) -> GraphError:
    text = f"{status} {code or 'error'}: {message} ({context})"
    lowered = code.lower()
    if status == 410 or lowered in {"syncstatenotfound", "resyncrequired", "syncstateinvalid"}:
        return CursorExpired(text, status, code)
    if lowered == "mailboxnotenabledforrestapi" or lowered == "mailboxnotsupportedforrestapi":
        return MailboxNotEnabled(text, status, code)
    if status == 401:
        return AuthFailed(text, status, code)
    if status == 403:
        err = PermissionDenied(text, status, code)
        err.fix = permission_fix(context)
        return err
    if status == 404:
        return NotFound(text, status, code)
    return GraphError(text, status, code)
