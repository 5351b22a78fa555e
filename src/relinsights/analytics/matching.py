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

from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TypeVar
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
REASONS = (
    CONTACT_EMAIL,
    CONTACT_PARTY,
    LEAD_EMAIL,
    LEAD_PARTY,
    ACCOUNT_CONTACT,
    ACCOUNT_DOMAIN,
    ACCOUNT_PARTY,
    OPPORTUNITY_CONTACT,
    OPPORTUNITY_STAKEHOLDER,
    OPPORTUNITY_PRIMARY_CONTACT,
    REGARDING,
)


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


_Shape = tuple[tuple[str, ...], frozenset[str]]  # a link's (reasons, members)


class LinkTable(Mapping[RecordRef, tuple[Link, ...]]):
    """Record -> its links (in activity order), stored compactly; each Link is made when asked for.

    A year of activities links to millions of (record, activity) pairs, and a Link object costs ten
    times the two array entries it is stored as here: (the activity's index, the index of its
    (reasons, members) pair, shared by every link with the same pair). Two lookups of one record give
    equal, not identical, links.
    """

    __slots__ = ("_activities", "_count", "_rows", "_shapes")

    def __init__(
        self, activities: Sequence[Activity], rows: Mapping[RecordRef, array[int]], shapes: Sequence[_Shape]
    ) -> None:
        self._activities, self._rows, self._shapes = activities, rows, shapes
        self._count = sum(len(r) for r in rows.values()) // 2

    def __getitem__(self, ref: RecordRef) -> tuple[Link, ...]:
        row, acts, shapes = self._rows[ref], self._activities, self._shapes
        return tuple([Link(ref, acts[row[j]], *shapes[row[j + 1]]) for j in range(0, len(row), 2)])

    def __contains__(self, ref: object) -> bool:
        return ref in self._rows

    def __iter__(self) -> Iterator[RecordRef]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"LinkTable({dict(self)!r})"

    @property
    def link_count(self) -> int:
        """The number of links of all records (without making them)."""
        return self._count

    @property
    def activities(self) -> Sequence[Activity]:
        """The activities the links point into (by position)."""
        return self._activities

    @property
    def shapes(self) -> Sequence[_Shape]:
        """The (reasons, members) pairs the links point to (by index)."""
        return self._shapes

    def pairs(self, ref: RecordRef) -> array[int]:
        """The record's links as flat (activity position, shape index) pairs, in link order."""
        return self._rows[ref]


@dataclass(frozen=True, slots=True)
class MatchResult:
    links: Mapping[RecordRef, tuple[Link, ...]]
    ambiguous_domains: tuple[AmbiguousDomain, ...] = ()
    identities: Mapping[str, str] = field(default_factory=dict)  # external address -> "contact:<id>"

    def links_of(self, ref: RecordRef) -> tuple[Link, ...]:
        return self.links.get(ref, ())

    @property
    def link_count(self) -> int:
        links = self.links
        return links.link_count if isinstance(links, LinkTable) else sum(len(v) for v in links.values())


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
        self._refs: dict[tuple[Entity, str], RecordRef] = {}
        self._domain_owner: dict[str, tuple[RecordRef | None, str | None]] = {}

    def ref(self, entity: Entity, record_id: str) -> RecordRef:
        """One shared RecordRef per record (matching asks for the same few thousand millions of times)."""
        key = (entity, record_id)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = RecordRef(entity, record_id)
        return ref

    def domain_owner(self, address: str) -> tuple[RecordRef | None, str | None]:
        """(the account owning the address's domain, else the shared domain it is in), cached per address."""
        found = self._domain_owner.get(address)
        if found is None:
            found = (None, None)
            dom = domain_of(address)
            if not self.rules.is_free_mail(dom):
                reg = registrable_domain(dom)
                acc = self.account_of_domain.get(reg)
                if acc is not None:
                    found = (self.ref(Entity.ACCOUNT, acc), None)
                elif reg in self.shared_domains:
                    found = (None, reg)
            self._domain_owner[address] = found
        return found

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


# Per activity: record -> (reasons, external members); a tuple of two sets, as cheap to make as it gets.
_Hits = dict[RecordRef, tuple[set[str], set[str]]]
_K = TypeVar("_K")


def match_activities(activities: Iterable[Activity], index: RecordIndex) -> MatchResult:
    """Link every activity to the records it belongs to. Links of a record come in activity order.

    The links are a `LinkTable` over `activities` (kept, not copied, when it is a tuple)."""
    acts = activities if isinstance(activities, tuple) else tuple(activities)
    rows: dict[RecordRef, array[int]] = {}
    shared_seen: Counter[str] = Counter()
    # Millions of links repeat a few (reasons, members) pairs: one index, and one object of each, per pair.
    shapes: dict[_Shape, int] = {}
    reason_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
    member_sets: dict[frozenset[str], frozenset[str]] = {}
    for i, act in enumerate(acts):
        for ref, shape in _match_one(act, index, shared_seen):
            at = shapes.get(shape)
            if at is None:
                why, who = shape
                shape = (reason_sets.setdefault(why, why), member_sets.setdefault(who, who))
                at = shapes[shape] = len(shapes)
            row = rows.get(ref)
            if row is None:
                row = rows[ref] = array("I")
            row.append(i)
            row.append(at)
    ambiguous = tuple(AmbiguousDomain(dom, ids, shared_seen[dom]) for dom, ids in sorted(index.shared_domains.items()))
    return MatchResult(LinkTable(acts, rows, list(shapes)), ambiguous, index.identities)


def _match_one(act: Activity, idx: RecordIndex, shared_seen: Counter[str]) -> list[tuple[RecordRef, _Shape]]:
    hits: _Hits = {}
    opp_hits: dict[str, tuple[set[str], set[str]]] = {}
    shared_here: set[str] = set()
    internal = {p.person for p in act.participants if p.internal}
    for p in act.participants:
        if p.internal:
            continue
        person = p.person
        contacts: dict[str, str] = {}
        if p.address:
            for cid in idx.contacts_by_address.get(p.address, ()):
                contacts.setdefault(cid, CONTACT_EMAIL)
            for lid in idx.leads_by_address.get(p.address, ()):
                _hit(hits, idx.ref(Entity.LEAD, lid), LEAD_EMAIL, person)
            acc_ref, shared_dom = idx.domain_owner(p.address)
            if acc_ref is not None:
                _hit(hits, acc_ref, ACCOUNT_DOMAIN, person)
            elif shared_dom is not None:
                shared_here.add(shared_dom)
        if p.party is not None:
            ref = p.party
            if ref.entity is Entity.CONTACT and ref.id in idx.contact_ids:
                contacts.setdefault(ref.id, CONTACT_PARTY)
            elif ref.entity is Entity.ACCOUNT and ref.id in idx.account_ids:
                _hit(hits, ref, ACCOUNT_PARTY, person)
            elif ref.entity is Entity.LEAD and ref in idx.known:
                _hit(hits, ref, LEAD_PARTY, person)
        for cid, reason in contacts.items():
            _hit(hits, idx.ref(Entity.CONTACT, cid), reason, person)
            acc = idx.contact_account.get(cid)
            if acc is not None and acc in idx.account_ids:
                _hit(hits, idx.ref(Entity.ACCOUNT, acc), ACCOUNT_CONTACT, person)
            for oid, opp_reason in idx.opps_by_contact.get(cid, ()):
                _hit(opp_hits, oid, opp_reason, person)
    for dom in shared_here:
        shared_seen[dom] += 1

    # Internal sets: kpis.md section 3, second column.
    for ref, (reasons, _) in hits.items():
        if not internal:
            reasons.clear()
        elif ref.entity is Entity.LEAD and idx.kpi.lead_requires_owner:
            owner = idx.lead_owner.get(ref.id)
            if owner is None or owner not in internal:
                reasons.clear()
    for oid, h in opp_hits.items():
        ok = idx.in_window(oid, act.time) and (
            bool(internal & idx.opp_internal[oid]) if idx.kpi.opportunity_requires_team else bool(internal)
        )
        if not ok:
            h[0].clear()
        hits[idx.ref(Entity.OPPORTUNITY, oid)] = h
    regarding = {ref for ref in act.regarding if ref in idx.known}
    for ref in regarding:
        if ref not in hits:
            hits[ref] = (set(), set())

    out: list[tuple[RecordRef, _Shape]] = []
    for ref in sorted(hits) if len(hits) > 1 else hits:
        reasons, members = hits[ref]
        if ref in regarding:
            reasons.add(REGARDING)
        if reasons:
            out.append((ref, (tuple(sorted(reasons)), frozenset(members))))
    return out


def _hit(hits: dict[_K, tuple[set[str], set[str]]], key: _K, reason: str, person: str) -> None:
    h = hits.get(key)
    if h is None:
        hits[key] = ({reason}, {person})
    else:
        h[0].add(reason)
        h[1].add(person)
