"""CRM records as the analytics see them: plain, typed copies of the Dataverse mirror's rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Entity(StrEnum):
    CONTACT = "contact"
    LEAD = "lead"
    ACCOUNT = "account"
    OPPORTUNITY = "opportunity"


@dataclass(frozen=True, slots=True, order=True)
class RecordRef:
    entity: Entity
    id: str

    def __str__(self) -> str:
        return f"{self.entity}:{self.id}"


class OpportunityState(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    emails: tuple[str, ...] = ()  # emailaddress1..3
    parent_account_id: str | None = None  # parentcustomerid when it is an account

    @property
    def ref(self) -> RecordRef:
        return RecordRef(Entity.CONTACT, self.id)


@dataclass(frozen=True, slots=True)
class Lead:
    id: str
    emails: tuple[str, ...] = ()
    owner_id: str | None = None  # systemuserid
    is_open: bool = True

    @property
    def ref(self) -> RecordRef:
        return RecordRef(Entity.LEAD, self.id)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    website_url: str | None = None
    email: str | None = None  # emailaddress1
    primary_contact_id: str | None = None
    industry: str | None = None
    employees: int | None = None

    @property
    def ref(self) -> RecordRef:
        return RecordRef(Entity.ACCOUNT, self.id)


@dataclass(frozen=True, slots=True)
class Opportunity:
    id: str
    created_on: datetime
    state: OpportunityState = OpportunityState.OPEN
    account_id: str | None = None  # parentaccountid
    contact_id: str | None = None  # parentcontactid
    owner_id: str | None = None  # systemuserid
    team_member_ids: tuple[str, ...] = ()  # sales team systemuserids
    stakeholder_contact_ids: tuple[str, ...] = ()
    # A date-only value (Dataverse's usual format) or a full instant.
    actual_close_date: date | datetime | None = None
    estimated_value: float | None = None
    actual_value: float | None = None

    @property
    def ref(self) -> RecordRef:
        return RecordRef(Entity.OPPORTUNITY, self.id)


@dataclass(frozen=True, slots=True)
class CrmRecords:
    contacts: Sequence[Contact] = ()
    leads: Sequence[Lead] = ()
    accounts: Sequence[Account] = ()
    opportunities: Sequence[Opportunity] = field(default_factory=tuple)

    def health_refs(self) -> set[RecordRef]:
        """The records that get a health score (kpis.md 5.3): contacts, open leads, open opportunities, accounts."""
        refs = {c.ref for c in self.contacts} | {a.ref for a in self.accounts}
        refs |= {lead.ref for lead in self.leads if lead.is_open}
        refs |= {o.ref for o in self.opportunities if o.state is OpportunityState.OPEN}
        return refs
