"""Parties of an imported archive: internal or external, free-mail or company, and the CRM records
(accounts by domain, contacts by address) a CRM would hold for them.

Rules (documented in `importer.py` too):
- an address is internal when its domain is an internal domain or a subdomain of one
  (`--internal-domain enron.com` covers `ect.enron.com`), as Exchange accepted domains usually do;
- the account of an external address is its registrable domain (`mail.acme.co.uk` -> `acme.co.uk`), unless
  that domain is free-mail (aol.com, hotmail.com, ...): free-mail contacts get no account;
- role and robot senders (the daemon's `ignored_localparts`: noreply, mailer-daemon, ...) get no contact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from relinsights.config import DEFAULT_IGNORED_LOCALPARTS

from . import ids
from .model import Company, Contact, CrmSeeds

# Consumer mailbox providers (then and now). Kept short and explicit: what matters is that none of them
# becomes an "account" that would swallow every private sender.
FREE_MAIL_DOMAINS = frozenset(
    {
        "aol.com",
        "att.net",
        "bellsouth.net",
        "btinternet.com",
        "comcast.net",
        "compuserve.com",
        "cox.net",
        "earthlink.net",
        "email.com",
        "excite.com",
        "flash.net",
        "gmail.com",
        "gmx.de",
        "gmx.net",
        "googlemail.com",
        "hotmail.co.uk",
        "hotmail.com",
        "icloud.com",
        "juno.com",
        "live.com",
        "lycos.com",
        "mac.com",
        "mail.com",
        "me.com",
        "mindspring.com",
        "msn.com",
        "netscape.net",
        "netzero.com",
        "netzero.net",
        "outlook.com",
        "pacbell.net",
        "prodigy.net",
        "protonmail.com",
        "sbcglobal.net",
        "swbell.net",
        "usa.net",
        "verizon.net",
        "web.de",
        "yahoo.co.uk",
        "yahoo.com",
        "ymail.com",
    }
)
# Second-level labels under a country code that are public suffixes (co.uk, com.au, ...).
_PUBLIC_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "ltd", "ne", "net", "or", "org", "plc"})
_IGNORED = frozenset(DEFAULT_IGNORED_LOCALPARTS)


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower()


def registrable_domain(domain: str) -> str:
    """`mail.acme.co.uk` -> `acme.co.uk`, `haas.berkeley.edu` -> `berkeley.edu` (a small built-in rule:
    the sandbox does not depend on the Public Suffix List)."""
    labels = domain.lower().strip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _PUBLIC_SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def is_free_mail(domain: str) -> bool:
    return domain in FREE_MAIL_DOMAINS or registrable_domain(domain) in FREE_MAIL_DOMAINS


def is_ignored(address: str) -> bool:
    return address.split("@", 1)[0] in _IGNORED


class Parties:
    """Internal/external classification for a set of internal domains (subdomains included)."""

    def __init__(self, internal_domains: Iterable[str]) -> None:
        self.internal_domains = tuple(d.lower().strip(".") for d in internal_domains)
        self._cache: dict[str, bool] = {}

    def is_internal_domain(self, domain: str) -> bool:
        hit = self._cache.get(domain)
        if hit is None:
            hit = any(domain == d or domain.endswith("." + d) for d in self.internal_domains)
            self._cache[domain] = hit
        return hit

    def is_internal(self, address: str) -> bool:
        return self.is_internal_domain(domain_of(address))


def split_name(display: str, address: str) -> tuple[str, str]:
    """(first, last) from 'Last, First', 'First Last' or, failing those, the address' local part."""
    d = display.strip().strip("'\"")
    if d and "@" not in d:
        if "," in d:
            last, first = (p.strip() for p in d.split(",", 1))
            if first and last:
                return first, last
        parts = d.split()
        if len(parts) >= 2:
            return " ".join(parts[:-1]), parts[-1]
        if parts:
            return "", parts[0]
    local = [p for p in address.split("@", 1)[0].replace("_", ".").split(".") if p]
    if len(local) >= 2:
        return local[0].title(), local[-1].title()
    return "", (local[0] if local else address)


def build_crm(
    crm: CrmSeeds,
    seed: int,
    interactions: dict[str, Counter[str]],
    names: dict[str, str],
) -> None:
    """Accounts and contacts for the external addresses of the archive.

    interactions: external address -> Counter(user id -> emails in that user's mailbox involving it).
    names: address -> display name (the most frequent one seen).
    """
    by_domain: dict[str, Counter[str]] = {}
    for addr, per_user in interactions.items():
        dom = registrable_domain(domain_of(addr))
        if not is_free_mail(dom):
            by_domain.setdefault(dom, Counter()).update(per_user)
    for dom in sorted(by_domain):
        ranked = [u for u, _ in sorted(by_domain[dom].items(), key=lambda kv: (-kv[1], kv[0]))]
        label = dom.split(".")[0]
        crm.companies[ids.guid(seed, "account", dom)] = Company(
            id=ids.guid(seed, "account", dom),
            name=label.replace("-", " ").title(),
            domain=dom,
            industry="",
            city="",
            country="",
            owner_id=ranked[0],  # the user whose mailbox holds most of the mail with them
            relationship="imported",
            team_ids=ranked[1:3],
        )
    for addr in sorted(interactions):
        if is_ignored(addr):
            continue
        dom = registrable_domain(domain_of(addr))
        company_id = None if is_free_mail(dom) else ids.guid(seed, "account", dom)
        first, last = split_name(names.get(addr, ""), addr)
        c = Contact(
            id=ids.guid(seed, "contact", addr), first_name=first, last_name=last, email=addr, company_id=company_id
        )
        crm.contacts[c.id] = c
        if company_id is not None:
            crm.companies[company_id].contact_ids.append(c.id)
