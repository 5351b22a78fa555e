"""`relinsights doctor`: one line per check, OK or the named problem with its fix.

Permissions are checked by trying the calls the daemon makes, which is the only reliable test: a
permission can be granted but not consented, or removed by Exchange RBAC for Applications.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from sqlalchemy import Engine

from relinsights.auth import CredentialError, TokenSource, load_client_credential
from relinsights.config import Config, ServiceConfig, TenantConfig
from relinsights.crm.client import DataverseClient, DataverseError
from relinsights.crm.writeback_rows import mapped_columns
from relinsights.db.engine import schema_status
from relinsights.graph.client import GraphClient, GraphError, PermissionDenied, ssl_context
from relinsights.graph.directory import resolve_scope, user_from_json

MAX_SKEW = timedelta(minutes=5)
CERT_WARN = timedelta(days=30)
CRM_READS = ["systemusers", "contacts", "accounts", "leads", "opportunities", "phonecalls"]


@dataclass
class Check:
    tenant: str
    name: str
    level: str  # ok | warn | fail
    detail: str = ""

    def line(self) -> str:
        where = f"{self.tenant}: " if self.tenant else ""
        return f"{self.level.upper():<4} {where}{self.name}" + (f": {self.detail}" if self.detail else "")


def check_database(engine: Engine) -> list[Check]:
    try:
        current, head = schema_status(engine)
    except Exception as exc:  # any failure here is the answer
        return [Check("", "database", "fail", f"{type(exc).__name__}: {exc}; check database.url and the server")]
    if current is None:
        return [Check("", "database and migrations", "warn", f"empty database; the schema ({head}) is created on start")]
    if current != head:
        return [Check("", "database and migrations", "warn", f"schema {current}, newest {head}; migrated on start")]
    return [Check("", "database and migrations", "ok", f"schema {current}")]


def check_compute_memory(service: ServiceConfig) -> Check:
    """Whether service.compute_keep_freed_below_mib can take effect (polars' allocator reached, README Sizing)."""
    name, limit = "KPI runs keep freed memory", service.compute_keep_freed_below_mib
    if limit == 0:
        return Check("", name, "ok", "no: returned at once (service.compute_keep_freed_below_mib = 0)")
    from relinsights.compute.jemalloc import polars_jemalloc

    if (jemalloc := polars_jemalloc()) is None:
        return Check(
            "", name, "warn", "polars' allocator cannot be reached in this build: freed memory is returned at once"
            " (slower runs; service.compute_keep_freed_below_mib has no effect)"
        )
    return Check("", name, "ok", f"under {limit} MiB resident (polars' jemalloc {jemalloc.version().split('-')[0]})")


async def check_tenant(tenant: TenantConfig) -> list[Check]:
    out: list[Check] = []

    def add(name: str, level: str, detail: str = "") -> None:
        out.append(Check(tenant.name, name, level, detail))

    try:
        _, cert = load_client_credential(tenant)
    except CredentialError as exc:
        add("credential", "fail", str(exc))
        return out
    if cert:
        left = cert.not_after - datetime.now(UTC)
        level = "warn" if left < CERT_WARN else "ok"
        add("certificate", level, f"{cert.subject}, expires {cert.not_after:%Y-%m-%d} ({left.days} days)")
    else:
        add("credential", "ok", "client secret readable (a certificate is preferred)")
    graph_tokens = TokenSource(tenant, tenant.graph_token_scope)
    try:
        await graph_tokens.token()
        add("token for Graph", "ok", tenant.graph_token_scope)
    except CredentialError as exc:
        add("token for Graph", "fail", str(exc))
        return out
    out += await _clock_skew(tenant)
    client = GraphClient(tenant, graph_tokens)
    try:
        out += await _graph_permissions(client, tenant)
    finally:
        await client.aclose()
    if tenant.dataverse_token_scope:
        out += await _dataverse(tenant)
    return out


async def _clock_skew(tenant: TenantConfig) -> list[Check]:
    try:
        async with httpx.AsyncClient(verify=ssl_context(str(tenant.ca_bundle) if tenant.ca_bundle else None)) as h:
            resp = await h.get(tenant.graph_url + "/$metadata", timeout=15)
        server = parsedate_to_datetime(resp.headers["date"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return [Check(tenant.name, "clock skew", "warn", f"could not read Graph's Date header ({exc})")]
    skew = abs(datetime.now(UTC) - server)
    if skew > MAX_SKEW:
        return [Check(tenant.name, "clock skew", "fail", f"{skew.total_seconds():.0f}s off Graph's clock; run NTP")]
    return [Check(tenant.name, "clock skew", "ok", f"{skew.total_seconds():.0f}s")]


async def _try(client: GraphClient, info: Any, context: str) -> str | None:
    try:
        await client.get_json(info, context=context)
        return None
    except PermissionDenied as exc:
        return f"{exc}; {exc.fix}"
    except GraphError as exc:
        return f"{exc}"


async def _graph_permissions(client: GraphClient, tenant: TenantConfig) -> list[Check]:
    out: list[Check] = []
    sdk = client.sdk
    q = sdk.users.UsersRequestBuilderGetQueryParameters(select=["id", "mail"], top=1)
    problem = await _try(
        client, sdk.users.to_get_request_information(RequestConfiguration(query_parameters=q)), "users"
    )
    out.append(Check(tenant.name, "Graph permission User.Read.All", "fail" if problem else "ok", problem or ""))
    problem = await _try(client, sdk.domains.to_get_request_information(), "domains")
    out.append(
        Check(
            tenant.name,
            "Graph permission Domain.Read.All",
            "warn" if problem else "ok",
            (problem + " (optional: internal_domains is used)") if problem else "",
        )
    )
    try:
        scope = await resolve_scope(client, tenant)
    except GraphError as exc:
        out.append(Check(tenant.name, "mailbox scope", "fail", f"{exc}; {exc.fix}"))
        return out
    out.append(
        Check(
            tenant.name,
            "mailbox scope",
            "ok" if scope.in_scope else "warn",
            f"{len(scope.in_scope)} mailboxes in scope, {len(scope.excluded)} opted out"
            + (f", unknown: {', '.join(scope.unknown)}" if scope.unknown else ""),
        )
    )
    sample = next((u for u in scope.in_scope if u.address), None)
    if sample is None:
        return out
    users = sdk.users.by_user_id(sample.user_id)
    mq = users.mail_folders.by_mail_folder_id("inbox").messages.delta.DeltaRequestBuilderGetQueryParameters(
        select=["id"]
    )
    info = users.mail_folders.by_mail_folder_id("inbox").messages.delta.to_get_request_information(
        RequestConfiguration(query_parameters=mq)
    )
    info.headers.try_add("Prefer", "odata.maxpagesize=1")
    problem = await _try(client, info, "message delta")
    out.append(
        Check(
            tenant.name,
            f"Graph permission Mail.ReadBasic.All ({sample.address})",
            "fail" if problem else "ok",
            problem or "",
        )
    )
    now = datetime.now(UTC)
    cq = users.calendar_view.delta.DeltaRequestBuilderGetQueryParameters(
        start_date_time=now.strftime("%Y-%m-%dT00:00:00Z"),
        end_date_time=(now + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
    )
    info = users.calendar_view.delta.to_get_request_information(RequestConfiguration(query_parameters=cq))
    info.headers.try_add("Prefer", "odata.maxpagesize=1")
    problem = await _try(client, info, "calendar delta")
    out.append(
        Check(
            tenant.name,
            f"Graph permission Calendars.Read ({sample.address})",
            "fail" if problem else "ok",
            problem or "",
        )
    )
    out.append(await _exchange_scoping(client, tenant, {u.user_id for u in scope.in_scope}))
    return out


async def _exchange_scoping(client: GraphClient, tenant: TenantConfig, in_scope: set[str]) -> Check:
    """Least privilege: can the app read a mailbox it does not need? (RBAC for Applications should refuse.)"""
    q = client.sdk.users.UsersRequestBuilderGetQueryParameters(select=["id", "mail"], top=50)
    try:
        page = await client.get_json(
            client.sdk.users.to_get_request_information(RequestConfiguration(query_parameters=q)), context="users"
        )
    except GraphError as exc:
        return Check(tenant.name, "Exchange scoping", "warn", f"could not list users: {exc}")
    outside = [user_from_json(u) for u in page.get("value", []) if u.get("id") not in in_scope and u.get("mail")]
    if not outside:
        return Check(tenant.name, "Exchange scoping", "ok", "every mailbox is in the sync scope")
    probe = outside[0]
    builder = client.sdk.users.by_user_id(probe.user_id).mail_folders.by_mail_folder_id("inbox")
    problem = await _try(client, builder.to_get_request_information(), "mail folder outside the scope")
    if problem and ("403" in problem or "ErrorAccessDenied" in problem or "404" in problem):
        return Check(tenant.name, "Exchange scoping", "ok", f"a mailbox outside the scope ({probe.address}) is refused")
    return Check(
        tenant.name,
        "Exchange scoping",
        "warn",
        f"the app can read {probe.address}, which is outside the sync scope; restrict it with Exchange "
        "RBAC for Applications (management scope + role assignment) for least privilege",
    )


async def _dataverse(tenant: TenantConfig) -> list[Check]:
    out: list[Check] = []
    assert tenant.dataverse_token_scope
    tokens = TokenSource(tenant, tenant.dataverse_token_scope)
    try:
        await tokens.token()
        out.append(Check(tenant.name, "token for Dataverse", "ok", tenant.dataverse_token_scope))
    except CredentialError as exc:
        out.append(Check(tenant.name, "token for Dataverse", "fail", str(exc)))
        return out
    async with DataverseClient(tenant, tokens) as dv:
        for entity_set in CRM_READS:
            try:
                async for _page in dv.pages(entity_set, ["createdon"], page_size=1):
                    break
                out.append(Check(tenant.name, f"Dataverse read {entity_set}", "ok"))
            except DataverseError as exc:
                out.append(Check(tenant.name, f"Dataverse read {entity_set}", "fail", f"{exc}; {exc.fix}"))
        if tenant.writeback.enabled:
            out += await _writeback_mapping(tenant, dv)
    return out


async def _writeback_mapping(tenant: TenantConfig, dv: DataverseClient) -> list[Check]:
    """Every table and column the write-back mapping names exists (one `$select` read of each table)."""
    out = []
    for entity_set, columns in mapped_columns(tenant.writeback).items():
        what = f"write-back table {entity_set} ({len(columns)} columns)"
        try:
            async for _page in dv.pages(entity_set, columns, page_size=1):
                break
            out.append(Check(tenant.name, what, "ok"))
        except DataverseError as exc:
            fix = "correct the table or column in the tenant's [writeback] mapping, or create it in Dataverse"
            out.append(Check(tenant.name, what, "fail", f"{exc}; {fix}"))
    return out


def run_doctor(cfg: Config, engine: Engine, tenant: str | None = None) -> list[Check]:
    checks = [Check("", "configuration", "ok", cfg.source), *check_database(engine), check_compute_memory(cfg.service)]
    tenants = [cfg.tenant(tenant)] if tenant else list(cfg.tenants)

    async def all_tenants() -> list[list[Check]]:
        return list(await asyncio.gather(*(check_tenant(t) for t in tenants)))

    for result in asyncio.run(all_tenants()):
        checks += result
    return checks
