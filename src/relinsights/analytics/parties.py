"""Who is who in an address: internal, external or ignored (kpis.md section 1), and registrable domains.

Decisions where kpis.md is silent:

- Ignored comes first: a robot or opted-out address on an internal domain (``notifications@contoso.com``)
  is ignored, not internal.
- An ignored local part also matches with a ``+tag`` removed (``noreply+bounce@``).
- ``excluded_domains`` covers the domain and its subdomains (excluding ``example.com`` excludes
  ``mail.example.com``); internal domains match exactly, as kpis.md says (a tenant lists its
  subdomains, as Entra lists verified subdomains).
- A person is one identity however many aliases they write from: an internal address resolves to its
  user's primary address, so the top contacts and response turns see one person, not three.
- The registrable domain uses the full Public Suffix List, private section included, so
  ``fabrikam.blogspot.com`` is a domain of its own rather than part of ``blogspot.com``.
- The shipped free-mail list (``freemail.txt``) also holds ``onmicrosoft.com``: the PSL does not list
  it, so every tenant's default domain would otherwise share one registrable domain.
- A domain is free-mail when it or its registrable domain is on the list.

PSL library: ``publicsuffixlist`` ships the list inside its wheel (re-released with every list change)
and never fetches at run time; ``tldextract`` downloads and caches the list by default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources

import idna
from publicsuffixlist import PublicSuffixList

from relinsights.config import KpiConfig, TenantConfig, normalise_domain

FREE_MAIL_RESOURCE = "freemail.txt"
_VERSION_RE = re.compile(r"^#\s*version:\s*(\S+)\s*$")
_SPACE_RE = re.compile(r"\s")
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")


class PartyKind(StrEnum):
    INTERNAL = "internal"
    EXTERNAL = "external"
    IGNORED = "ignored"
    INVALID = "invalid"


@lru_cache(maxsize=65536)
def canonical_domain(domain: str) -> str | None:
    """Lower-case IDNA (punycode) form of a domain; None when it is not a usable DNS name."""
    value = domain.strip().strip(".").lower()
    if not value.isascii():
        try:
            value = idna.encode(value, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    labels = value.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        return None
    return value


@lru_cache(maxsize=262144)
def canonical_address(raw: str | None) -> str | None:
    """Trimmed, lower case, IDNA domain; None when the value is not a syntactically valid address."""
    if not raw:
        return None
    value = raw.strip().strip("<>").strip().lower()
    value = value.removeprefix("mailto:")
    if value.count("@") != 1 or _SPACE_RE.search(value):
        return None
    local, domain = value.split("@")
    if not local:
        return None
    canon = canonical_domain(domain)
    return f"{local}@{canon}" if canon else None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=65536)
def registrable_domain(domain: str) -> str:
    """The registrable domain (public suffix + one label); the domain itself when it has none."""
    return _psl().privatesuffix(domain) or domain


@dataclass(frozen=True, slots=True)
class FreeMailList:
    version: str
    domains: frozenset[str]


@lru_cache(maxsize=1)
def shipped_free_mail() -> FreeMailList:
    """The free-mail list shipped in this package, with its version header."""
    text = resources.files("relinsights.analytics").joinpath(FREE_MAIL_RESOURCE).read_text("utf-8")
    return parse_free_mail(text)


def parse_free_mail(text: str) -> FreeMailList:
    version = "unversioned"
    domains: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _VERSION_RE.match(line)
            if m:
                version = m.group(1)
            continue
        canon = canonical_domain(line)
        if canon is None:
            raise ValueError(f"free-mail list: not a domain: {line!r}")
        domains.add(canon)
    return FreeMailList(version, frozenset(domains))


@dataclass(frozen=True, slots=True)
class InternalUser:
    """A user of the tenant: a synced mailbox user and/or a Dataverse system user."""

    address: str
    aliases: tuple[str, ...] = ()
    systemuser_id: str | None = None
    business_unit_id: str | None = None
    opted_out: bool = False
    name: str | None = None


class PartyRules:
    """Classifies addresses for one tenant; results are cached (a year of mail repeats addresses a lot)."""

    def __init__(
        self,
        *,
        internal_domains: Iterable[str],
        users: Iterable[InternalUser] = (),
        kpi: KpiConfig | None = None,
        free_mail: FreeMailList | None = None,
    ) -> None:
        kpi = kpi or KpiConfig()
        self.internal_domains = frozenset(normalise_domain(d) for d in internal_domains)
        self.excluded_domains = frozenset(normalise_domain(d) for d in kpi.excluded_domains)
        self.excluded_addresses = frozenset(a for a in (canonical_address(x) for x in kpi.excluded_addresses) if a)
        self.ignored_localparts = frozenset(p.strip().lower() for p in kpi.ignored_localparts)
        shipped = free_mail or shipped_free_mail()
        self.free_mail_version = shipped.version
        self.free_mail = shipped.domains | frozenset(normalise_domain(d) for d in kpi.free_mail_domains)
        self._user_of: dict[str, InternalUser] = {}
        self._by_systemuser: dict[str, InternalUser] = {}
        for user in users:
            for raw in (user.address, *user.aliases):
                addr = canonical_address(raw)
                if addr:
                    self._user_of[addr] = user
            if user.systemuser_id:
                self._by_systemuser[user.systemuser_id.lower()] = user
        self._kind_cache: dict[str, PartyKind] = {}

    @classmethod
    def for_tenant(
        cls, tenant: TenantConfig, *, verified_domains: Iterable[str] = (), users: Iterable[InternalUser] = ()
    ) -> PartyRules:
        return cls(internal_domains=[*tenant.internal_domains, *verified_domains], users=users, kpi=tenant.kpi)

    def classify(self, address: str | None) -> PartyKind:
        addr = canonical_address(address)
        if addr is None:
            return PartyKind.INVALID
        kind = self._kind_cache.get(addr)
        if kind is None:
            kind = self._kind_cache[addr] = self._classify(addr)
        return kind

    def _classify(self, addr: str) -> PartyKind:
        local, _, domain = addr.partition("@")
        user = self._user_of.get(addr)
        if user is not None and user.opted_out:
            return PartyKind.IGNORED
        if addr in self.excluded_addresses or self.excluded_domain(domain):
            return PartyKind.IGNORED
        if local in self.ignored_localparts or local.partition("+")[0] in self.ignored_localparts:
            return PartyKind.IGNORED
        if user is not None or domain in self.internal_domains:
            return PartyKind.INTERNAL
        return PartyKind.EXTERNAL

    def excluded_domain(self, domain: str) -> bool:
        if not self.excluded_domains:
            return False
        labels = domain.split(".")
        return any(".".join(labels[i:]) in self.excluded_domains for i in range(len(labels) - 1))

    def person(self, address: str) -> str:
        """The identity behind a canonical address: an internal user's primary address, else the address."""
        user = self._user_of.get(address)
        if user is None:
            return address
        return canonical_address(user.address) or address

    def user_of(self, address: str) -> InternalUser | None:
        return self._user_of.get(address)

    def user_addresses(self) -> list[tuple[str, InternalUser]]:
        """Every canonical address of a user (primary and aliases), with its user."""
        return list(self._user_of.items())

    def user_by_systemuser(self, systemuser_id: str) -> InternalUser | None:
        return self._by_systemuser.get(systemuser_id.lower())

    def systemuser_person(self, systemuser_id: str) -> str:
        """The person key of a Dataverse system user: their primary address when known."""
        user = self.user_by_systemuser(systemuser_id)
        if user is not None:
            addr = canonical_address(user.address)
            if addr:
                return addr
        return f"systemuser:{systemuser_id.lower()}"

    def is_free_mail(self, domain: str) -> bool:
        return domain in self.free_mail or registrable_domain(domain) in self.free_mail
