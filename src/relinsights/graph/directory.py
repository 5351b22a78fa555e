"""The tenant's directory as the sync needs it: verified domains and the users in the mailbox scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation

from relinsights.config import TenantConfig, normalise_domain
from relinsights.graph.client import GraphClient, NotFound
from relinsights.graph.parse import USER_SELECT, canonical_address


@dataclass(frozen=True)
class DirectoryUser:
    user_id: str
    address: str | None  # primary SMTP address; None when the user has no mail attribute
    user_principal_name: str | None
    display_name: str | None
    aliases: tuple[str, ...]
    account_enabled: bool

    @property
    def all_addresses(self) -> set[str]:
        out = set(self.aliases)
        if self.address:
            out.add(self.address)
        if self.user_principal_name:
            upn = canonical_address(self.user_principal_name)
            if upn:
                out.add(upn)
        return out


def user_from_json(item: dict[str, Any]) -> DirectoryUser:
    aliases = []
    for proxy in item.get("proxyAddresses") or []:
        if isinstance(proxy, str) and proxy[:5].lower() == "smtp:":
            addr = canonical_address(proxy[5:])
            if addr:
                aliases.append(addr)
    return DirectoryUser(
        user_id=str(item["id"]),
        address=canonical_address(item.get("mail")),
        user_principal_name=item.get("userPrincipalName"),
        display_name=item.get("displayName"),
        aliases=tuple(sorted(set(aliases))),
        account_enabled=item.get("accountEnabled") is not False,
    )


async def _pages(client: GraphClient, first: RequestInformation, context: str) -> AsyncIterator[dict[str, Any]]:
    request: RequestInformation | None = first
    while request is not None:
        page = await client.get_json(request, context=context)
        for item in page.get("value") or []:
            if isinstance(item, dict) and item.get("id"):
                yield item
        link = page.get("@odata.nextLink")
        request = client.link_request(link) if link else None


async def verified_domains(client: GraphClient) -> list[str]:
    info = client.sdk.domains.to_get_request_information()
    out = set()
    async for item in _pages(client, info, "GET /domains"):
        if item.get("isVerified", True):
            try:
                out.add(normalise_domain(str(item["id"])))
            except ValueError:
                continue
    return sorted(out)


async def all_enabled_users(client: GraphClient) -> list[DirectoryUser]:
    q = client.sdk.users.UsersRequestBuilderGetQueryParameters(
        select=USER_SELECT, filter="accountEnabled eq true", top=999
    )
    info = client.sdk.users.to_get_request_information(RequestConfiguration(query_parameters=q))
    return [user_from_json(u) async for u in _pages(client, info, "GET /users")]


async def group_users(client: GraphClient, group_id: str) -> list[DirectoryUser]:
    """Users among the group's members, nested groups included (transitive)."""
    builder = client.sdk.groups.by_group_id(group_id).transitive_members.graph_user
    q = builder.GraphUserRequestBuilderGetQueryParameters(select=USER_SELECT, top=999)
    info = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
    try:
        return [user_from_json(u) async for u in _pages(client, info, f"GET /groups/{group_id}/transitiveMembers")]
    except NotFound as exc:
        raise NotFound(f"group {group_id} not found: check scope.group_id / scope.exclude_groups ({exc})") from None


async def user_by_address(client: GraphClient, address: str) -> DirectoryUser | None:
    builder = client.sdk.users.by_user_id(address)
    q = builder.UserItemRequestBuilderGetQueryParameters(select=USER_SELECT)
    info = builder.to_get_request_information(RequestConfiguration(query_parameters=q))
    try:
        return user_from_json(await client.get_json(info, context=f"GET /users/{address}"))
    except NotFound:
        return None


@dataclass
class Scope:
    in_scope: list[DirectoryUser]
    excluded: list[DirectoryUser]
    unknown: list[str]  # configured addresses no user has


async def resolve_scope(client: GraphClient, tenant: TenantConfig) -> Scope:
    """The users whose mailboxes are synced: the configured scope minus opted-out users and groups."""
    sc = tenant.scope
    unknown: list[str] = []
    if sc.mode == "all":
        users = await all_enabled_users(client)
    elif sc.mode == "group":
        assert sc.group_id
        users = [u for u in await group_users(client, sc.group_id) if u.account_enabled]
    else:
        users = []
        for addr in sc.mailboxes:
            user = await user_by_address(client, addr)
            if user is None:
                unknown.append(addr)
            else:
                users.append(user)
    opted_out_ids: set[str] = set()
    for gid in sc.exclude_groups:
        opted_out_ids.update(u.user_id for u in await group_users(client, gid))
    opted_out_addresses = set(sc.exclude_users)
    keep, excluded = [], []
    for u in {u.user_id: u for u in users}.values():
        if u.user_id in opted_out_ids or u.all_addresses & opted_out_addresses:
            excluded.append(u)
        else:
            keep.append(u)
    return Scope(in_scope=keep, excluded=excluded, unknown=unknown)
