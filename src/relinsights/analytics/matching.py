"""Activities -> CRM records, each link with its reasons (kpis.md section 3).

The records are indexed once by address, domain and contact, so matching costs a few dictionary
look-ups per participant, never a scan of all records.

Decisions where kpis.md is silent:

- Reasons: ``contact-email``, ``contact-party`` (a Dataverse activity party naming the contact),
  ``lead-email``, ``lead-party``, ``account-contact``, ``account-domain``, ``account-party``,
  ``opportunity-contact``, ``opportunity-stakeholder``, ``opportunity-account-primary-contact``,
  ``regarding``. A link lists every reason that holds.
- "Any internal address" is an internal set too: a contact, account or lead links only to an activity
  with at least one internal participant (always true of emails; a received meeting with no internal
  attendee, or a call without a system-user party, links only by ``regarding``).
- ``regarding`` always links, bypassing the internal-set rule and the opportunity window: a person
  chose that record explicitly. It links only to records present in the mirror.
- An account's domains are the registrable domains of its ``websiteurl`` and ``emailaddress1`` and of
  the tenant's mapping (``kpi.account_domains``), free-mail and internal domains excluded. A domain in
  the tenant mapping belongs to the mapped account(s) only, so an admin resolves a reported shared
  domain by mapping it.
- The opportunity window: from ``createdon`` (inclusive); for a closed (won or lost) opportunity up to
  ``actualclosedate`` plus one day. A date-only close date D means through the end of day D + 1 in the
  tenant time zone; a full instant means up to that instant + 24 h. Open ones have no end.
- ``opportunity_requires_team = false`` accepts any internal participant; ``lead_requires_owner``
  likewise. Owners and team members are system users; they match an activity through the users'
  addresses (``PartyRules.systemuser_person``).
- The record's external set, and so ``Link.members``, is computed from the participants even when only
  ``regarding`` links the activity (time spent by the customer still counts them).
- Identities: an external address that belongs to exactly one contact is that contact's person
  (``contact:<id>``), so the top contacts merge a contact's several addresses and calls.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from urllib.parse import urlsplit

from relinsights.analytics.activities import Activity
from relinsights.analytics.parties import (
    PartyRules,
    canonical_address,
    canonical_domain,
    domain_of,
    registrable_domain,
)
from relinsights.analytics.records import Account, CrmRecords, Entity, Opportunity, OpportunityState, RecordRef
from relinsights.analytics.timeutil import as_utc, start_of_local_day
from relinsights.config import KpiConfig

CONTACT_EMAIL = "contact-email"
CONTACT_PARTY = "contact-party"
LEAD_EMAIL = "lead-email"
LEAD_PARTY = "lead-party"
ACCOUNT_CONTACT = "account-contact"
ACCOUNT_DOMAIN = "account-domain"
ACCOUNT_PARTY = "account-party"
OPPORTUNITY_CONTACT = "opportunity-contact"
OPPORTUNITY_STAKEHOLDER = "opportunity-stakeholder"
OPPORTUNITY_PRIMARY_CONTACT = "opportunity-account-primary-contact"
REGARDING = "regarding"


@dataclass(frozen=True, slots=True)
class Link:
    record: RecordRef
    activity: Activity
    reasons: tuple[str, ...]
    members: frozenset[str]  # persons of the activity that are in the record's external set


@dataclass(frozen=True, slots=True)
class AmbiguousDomain:
    """A domain owned by several accounts: not used for matching until the tenant maps it."""

    domain: str
    account_ids: tuple[str, ...]
    activities: int  # activities with an external participant at that domain


@dataclass(frozen=True, slots=True)
class MatchResult:
    links: Mapping[RecordRef, tuple[Link, ...]]
    ambiguous_domains: tuple[AmbiguousDomain, ...] = ()
    identities: Mapping[str, str] = field(default_factory=dict)  # external address -> "contact:<id>"

    def links_of(self, ref: RecordRef) -> tuple[Link, ...]:
        return self.links.get(ref, ())


def website_domain(url: str | None) -> str | None:
    """The host of a website URL ('www.fabrikam.com', 'https://fabrikam.com/about'), canonical."""
    if not url or not url.strip():
        return None
    value = url.strip()
    if "://" not in value:
        value = "http://" + value
    try:
        host = urlsplit(value).hostname
    except ValueError:
        return None
    return canonical_domain(host) if host else None


class RecordIndex:
    """The CRM records of one tenant, indexed for matching."""

    def __init__(
        self, records: CrmRecords, rules: PartyRules, *, kpi: KpiConfig | None = None, zone: tzinfo = UTC
    ) -> None:
        self.rules = rules
        self.kpi = kpi or KpiConfig()
        self.zone = zone
        self.known: set[RecordRef] = set()
        self.contacts_by_address: dict[str, list[str]] = defaultdict(list)
        self.contact_account: dict[str, str] = {}
        self.contact_ids: set[str] = set()
        self.leads_by_address: dict[str, list[str]] = defaultdict(list)
        self.lead_owner: dict[str, str | None] = {}
        self.account_ids: set[str] = set()
        self.opps_by_contact: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.opportunities: dict[str, Opportunity] = {}
        self.opp_internal: dict[str, frozenset[str]] = {}
        self.opp_until: dict[str, datetime | None] = {}

        for c in records.contacts:
            self.known.add(c.ref)
            self.contact_ids.add(c.id)
            for addr in _addresses(c.emails):
                self.contacts_by_address[addr].append(c.id)
            if c.parent_account_id:
                self.contact_account[c.id] = c.parent_account_id
        for lead in records.leads:
            self.known.add(lead.ref)
            for addr in _addresses(lead.emails):
                self.leads_by_address[addr].append(lead.id)
            self.lead_owner[lead.id] = rules.systemuser_person(lead.owner_id) if lead.owner_id else None
        accounts = {a.id: a for a in records.accounts}
        for a in records.accounts:
            self.known.add(a.ref)
            self.account_ids.add(a.id)
        self.account_of_domain, self.shared_domains = self._domains(records.accounts)
        for o in records.opportunities:
            self.known.add(o.ref)
            self.opportunities[o.id] = o
            roles: list[tuple[str | None, str]] = [(o.contact_id, OPPORTUNITY_CONTACT)]
            roles += [(cid, OPPORTUNITY_STAKEHOLDER) for cid in o.stakeholder_contact_ids]
            account = accounts.get(o.account_id) if o.account_id else None
            roles.append((account.primary_contact_id if account else None, OPPORTUNITY_PRIMARY_CONTACT))
            for cid, reason in roles:
                if cid and (o.id, reason) not in self.opps_by_contact[cid]:
                    self.opps_by_contact[cid].append((o.id, reason))
            team = [o.owner_id, *o.team_member_ids]
            self.opp_internal[o.id] = frozenset(rules.systemuser_person(u) for u in team if u)
            self.opp_until[o.id] = self._until(o)
        self.identities = {a: f"contact:{ids[0]}" for a, ids in self.contacts_by_address.items() if len(set(ids)) == 1}

    def _domains(self, accounts: Iterable[Account]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        derived: dict[str, set[str]] = defaultdict(set)
        mapped: dict[str, set[str]] = defaultdict(set)
        ids = {a.id.lower(): a.id for a in accounts}
        for a in accounts:
            email = canonical_address(a.email)
            for dom in (website_domain(a.website_url), domain_of(email) if email else None):
                if dom:
                    derived[registrable_domain(dom)].add(a.id)
        for account_id, domains in self.kpi.account_domains.items():
            real_id = ids.get(account_id.lower())
            if real_id is None:
                continue
            for raw in domains:
                dom = canonical_domain(raw)
                if dom:
                    mapped[registrable_domain(dom)].add(real_id)
        owners = {**derived, **mapped}  # the tenant's mapping decides a domain it names
        resolved: dict[str, str] = {}
        shared: dict[str, tuple[str, ...]] = {}
        for dom, acc in owners.items():
            if self.rules.is_free_mail(dom) or dom in self.rules.internal_domains:
                continue
            if len(acc) == 1:
                resolved[dom] = next(iter(acc))
            else:
                shared[dom] = tuple(sorted(acc))
        return resolved, shared

    def _until(self, o: Opportunity) -> datetime | None:
        if o.state is OpportunityState.OPEN or o.actual_close_date is None:
            return None
        close = o.actual_close_date
        if isinstance(close, datetime):
            return as_utc(close) + timedelta(days=1)
        assert isinstance(close, date)
        return start_of_local_day(close + timedelta(days=2), self.zone) - timedelta(microseconds=1)

    def in_window(self, opportunity_id: str, when: datetime) -> bool:
        o = self.opportunities[opportunity_id]
        until = self.opp_until[opportunity_id]
        return as_utc(o.created_on) <= when and (until is None or when <= until)


def _addresses(values: Iterable[str | None]) -> set[str]:
    return {a for a in (canonical_address(v) for v in values) if a}


@dataclass(slots=True)
class _Hit:
    reasons: set[str] = field(default_factory=set)
    members: set[str] = field(default_factory=set)
    regarding: bool = False


def match_activities(activities: Iterable[Activity], index: RecordIndex) -> MatchResult:
    """Link every activity to the records it belongs to. Links of a record come in activity order."""
    links: dict[RecordRef, list[Link]] = defaultdict(list)
    shared_seen: Counter[str] = Counter()
    for act in activities:
        for link in _match_one(act, index, shared_seen):
            links[link.record].append(link)
    ambiguous = tuple(AmbiguousDomain(dom, ids, shared_seen[dom]) for dom, ids in sorted(index.shared_domains.items()))
    return MatchResult({ref: tuple(v) for ref, v in links.items()}, ambiguous, index.identities)


def _match_one(act: Activity, idx: RecordIndex, shared_seen: Counter[str]) -> list[Link]:
    hits: dict[RecordRef, _Hit] = defaultdict(_Hit)
    opp_hits: dict[str, _Hit] = defaultdict(_Hit)
    shared_here: set[str] = set()
    internal = {p.person for p in act.participants if p.internal}
    for p in act.participants:
        if p.internal:
            continue
        contacts: dict[str, str] = {}
        if p.address:
            for cid in idx.contacts_by_address.get(p.address, ()):
                contacts.setdefault(cid, CONTACT_EMAIL)
            for lid in idx.leads_by_address.get(p.address, ()):
                _hit(hits, RecordRef(Entity.LEAD, lid), LEAD_EMAIL, p.person)
            dom = domain_of(p.address)
            if not idx.rules.is_free_mail(dom):
                reg = registrable_domain(dom)
                acc = idx.account_of_domain.get(reg)
                if acc is not None:
                    _hit(hits, RecordRef(Entity.ACCOUNT, acc), ACCOUNT_DOMAIN, p.person)
                elif reg in idx.shared_domains:
                    shared_here.add(reg)
        if p.party is not None:
            ref = p.party
            if ref.entity is Entity.CONTACT and ref.id in idx.contact_ids:
                contacts.setdefault(ref.id, CONTACT_PARTY)
            elif ref.entity is Entity.ACCOUNT and ref.id in idx.account_ids:
                _hit(hits, ref, ACCOUNT_PARTY, p.person)
            elif ref.entity is Entity.LEAD and ref in idx.known:
                _hit(hits, ref, LEAD_PARTY, p.person)
        for cid, reason in contacts.items():
            _hit(hits, RecordRef(Entity.CONTACT, cid), reason, p.person)
            acc = idx.contact_account.get(cid)
            if acc is not None and acc in idx.account_ids:
                _hit(hits, RecordRef(Entity.ACCOUNT, acc), ACCOUNT_CONTACT, p.person)
            for oid, opp_reason in idx.opps_by_contact.get(cid, ()):
                hit = opp_hits[oid]
                hit.reasons.add(opp_reason)
                hit.members.add(p.person)
    for dom in shared_here:
        shared_seen[dom] += 1

    # Internal sets: kpis.md section 3, second column.
    for ref, hit in hits.items():
        if not internal:
            hit.reasons.clear()
        elif ref.entity is Entity.LEAD and idx.kpi.lead_requires_owner:
            owner = idx.lead_owner.get(ref.id)
            if owner is None or owner not in internal:
                hit.reasons.clear()
    for oid, hit in opp_hits.items():
        ok = idx.in_window(oid, act.time) and (
            bool(internal & idx.opp_internal[oid]) if idx.kpi.opportunity_requires_team else bool(internal)
        )
        if not ok:
            hit.reasons.clear()
        hits[RecordRef(Entity.OPPORTUNITY, oid)] = hit
    for ref in act.regarding:
        if ref in idx.known:
            hits[ref].regarding = True

    out: list[Link] = []
    for ref, hit in sorted(hits.items()):
        reasons = set(hit.reasons)
        if hit.regarding:
            reasons.add(REGARDING)
        if reasons:
            out.append(Link(ref, act, tuple(sorted(reasons)), frozenset(hit.members)))
    return out


def _hit(hits: dict[RecordRef, _Hit], ref: RecordRef, reason: str, person: str) -> None:
    hit = hits[ref]
    hit.reasons.add(reason)
    hit.members.add(person)
