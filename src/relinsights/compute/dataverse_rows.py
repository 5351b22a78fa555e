"""Mirrored Dataverse rows (the JSON `crm_record.data`) -> the analytics' typed records and activities.

Pure functions: the loader hands over the rows of each entity set, nothing here touches the database.

Decisions the Dataverse model leaves open:

- Lookups are read without annotations (the mirror asks for none), so a lookup's table is found from
  its id: ids are GUIDs, unique across tables in practice. `parentcustomerid` is an account when its
  id is a mirrored account, else (a contact parent) no account.
- Every contact, account and lead is a record whatever its `statecode`: an inactive contact's history
  still belongs to it. Leads are open when `statecode` = 0 (Open); opportunities are open / won / lost
  by `statecode` 0 / 1 / 2.
- An opportunity's sales team is every member of the teams whose `regardingobjectid` is the
  opportunity (the access team Dynamics creates from the "Sales Team Template"); its stakeholders are
  the contacts connected to it in a connection role named "Stakeholder", whichever side of the
  connection (and its reciprocal row) names the role.
- An account's industry is its `industrycode` choice value as text (only compared for equality).
- A CRM email counts only when `statecode` = 1 (Completed: sent or received); Open ones are drafts
  and Canceled ones never happened. An appointment with `statecode` = 2 (Canceled) is cancelled.
  Phone calls: `statecode` 0 Open, 1 Completed, 2 Canceled.
- Activity parties by `participationtypemask`: 1 sender / calling party, 2 To / called party, 3 Cc,
  4 Bcc, 5 required and 6 optional attendee, 7 organizer; the others (regarding, owner, resource,
  customer) are not participants.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any

from relinsights.analytics import (
    Account,
    CallState,
    Contact,
    CrmAppointment,
    CrmEmail,
    CrmParty,
    CrmRecords,
    Entity,
    Lead,
    Opportunity,
    OpportunityState,
    PhoneCall,
    RecordRef,
)

Row = Mapping[str, Any]
STAKEHOLDER_ROLE = "stakeholder"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SENDER, TO, CC, BCC, REQUIRED, OPTIONAL, ORGANIZER = 1, 2, 3, 4, 5, 6, 7
_OPPORTUNITY_STATE = {0: OpportunityState.OPEN, 1: OpportunityState.WON, 2: OpportunityState.LOST}
_CALL_STATE = {0: CallState.OPEN, 1: CallState.COMPLETED, 2: CallState.CANCELLED}


def parse_time(value: Any) -> datetime | None:
    """A Dataverse date-time ('2026-03-01T09:00:00Z') as aware UTC; None when missing or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_date(value: Any) -> date | datetime | None:
    """A date-only column ('2026-03-02'), or a full instant when Dataverse stores one."""
    if not value or not isinstance(value, str):
        return None
    if "T" in value:
        return parse_time(value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _id(value: Any) -> str | None:
    return str(value).lower() if value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class CrmIds:
    """Which table each mirrored id belongs to: how unannotated lookups are resolved."""

    records: Mapping[str, Entity]  # contact, lead, account, opportunity ids
    parties: Mapping[str, str]  # systemuser, contact, lead, account ids -> logical name

    def ref(self, value: Any) -> RecordRef | None:
        rid = _id(value)
        entity = self.records.get(rid) if rid else None
        return RecordRef(entity, rid) if entity is not None and rid else None


def crm_ids(rows: Mapping[str, Iterable[Row]]) -> CrmIds:
    records: dict[str, Entity] = {}
    parties: dict[str, str] = {}
    for entity_set, key, entity in (
        ("contacts", "contactid", Entity.CONTACT),
        ("leads", "leadid", Entity.LEAD),
        ("accounts", "accountid", Entity.ACCOUNT),
        ("opportunities", "opportunityid", Entity.OPPORTUNITY),
    ):
        for row in rows.get(entity_set, ()):
            if rid := _id(row.get(key)):
                records[rid] = entity
                if entity is not Entity.OPPORTUNITY:
                    parties[rid] = str(entity)
    for row in rows.get("systemusers", ()):
        if rid := _id(row.get("systemuserid")):
            parties[rid] = "systemuser"
    return CrmIds(records, parties)


def _emails(row: Row) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ("emailaddress1", "emailaddress2", "emailaddress3") if row.get(k))


@dataclass(frozen=True, slots=True)
class OpportunityLinks:
    """The opportunity's team members and stakeholders, from teams, memberships and connections."""

    team: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stakeholders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def opportunity_links(rows: Mapping[str, Iterable[Row]], ids: CrmIds) -> OpportunityLinks:
    members: dict[str, list[str]] = defaultdict(list)
    for row in rows.get("teammemberships", ()):
        team, user = _id(row.get("teamid")), _id(row.get("systemuserid"))
        if team and user:
            members[team].append(user)
    team_of: dict[str, set[str]] = defaultdict(set)
    for row in rows.get("teams", ()):
        ref = ids.ref(row.get("_regardingobjectid_value"))
        team = _id(row.get("teamid"))
        if ref is not None and ref.entity is Entity.OPPORTUNITY and team:
            team_of[ref.id].update(members.get(team, ()))
    roles = {
        rid
        for row in rows.get("connectionroles", ())
        if (rid := _id(row.get("connectionroleid"))) and str(row.get("name") or "").strip().lower() == STAKEHOLDER_ROLE
    }
    stakeholders: dict[str, set[str]] = defaultdict(set)
    for row in rows.get("connections", ()):
        one, two = ids.ref(row.get("_record1id_value")), ids.ref(row.get("_record2id_value"))
        # record2roleid is the role of record2 ("the contact is a stakeholder of the opportunity").
        for record, other, role in (
            (one, two, row.get("_record2roleid_value")),
            (two, one, row.get("_record1roleid_value")),
        ):
            if (
                record is not None
                and other is not None
                and record.entity is Entity.OPPORTUNITY
                and other.entity is Entity.CONTACT
                and _id(role) in roles
            ):
                stakeholders[record.id].add(other.id)
    return OpportunityLinks(
        {k: tuple(sorted(v)) for k, v in team_of.items()},
        {k: tuple(sorted(v)) for k, v in stakeholders.items()},
    )


def crm_records(rows: Mapping[str, Iterable[Row]], ids: CrmIds) -> CrmRecords:
    accounts = [
        Account(
            id=rid,
            website_url=row.get("websiteurl") or None,
            email=row.get("emailaddress1") or None,
            primary_contact_id=_id(row.get("_primarycontactid_value")),
            industry=str(row["industrycode"]) if row.get("industrycode") is not None else None,
            employees=int(row["numberofemployees"]) if isinstance(row.get("numberofemployees"), int) else None,
        )
        for row in rows.get("accounts", ())
        if (rid := _id(row.get("accountid")))
    ]
    contacts = []
    for row in rows.get("contacts", ()):
        if rid := _id(row.get("contactid")):
            parent = ids.ref(row.get("_parentcustomerid_value"))
            account = parent.id if parent is not None and parent.entity is Entity.ACCOUNT else None
            contacts.append(Contact(rid, _emails(row), account))
    leads = [
        Lead(rid, _emails(row), _id(row.get("_ownerid_value")), is_open=row.get("statecode") in (0, None))
        for row in rows.get("leads", ())
        if (rid := _id(row.get("leadid")))
    ]
    links = opportunity_links(rows, ids)
    opportunities = []
    for row in rows.get("opportunities", ()):
        rid = _id(row.get("opportunityid"))
        if not rid:
            continue
        owner = _id(row.get("_ownerid_value"))
        opportunities.append(
            Opportunity(
                id=rid,
                created_on=parse_time(row.get("createdon")) or EPOCH,
                state=_OPPORTUNITY_STATE.get(row.get("statecode") or 0, OpportunityState.OPEN),
                account_id=_id(row.get("_parentaccountid_value")),
                contact_id=_id(row.get("_parentcontactid_value")),
                owner_id=owner,
                team_member_ids=tuple(u for u in links.team.get(rid, ()) if u != owner),
                stakeholder_contact_ids=links.stakeholders.get(rid, ()),
                actual_close_date=parse_date(row.get("actualclosedate")),
                estimated_value=_number(row.get("estimatedvalue")),
                actual_value=_number(row.get("actualvalue")),
            )
        )
    by_id = attrgetter("id")  # a stable order: the result must not depend on the order rows arrive in
    return CrmRecords(
        contacts=sorted(contacts, key=by_id),
        leads=sorted(leads, key=by_id),
        accounts=sorted(accounts, key=by_id),
        opportunities=sorted(opportunities, key=by_id),
    )


# ---------------------------------------------------------------- activities


def parties_by_activity(rows: Iterable[Row], ids: CrmIds) -> dict[str, list[tuple[int, CrmParty]]]:
    """Activity id -> (participation mask, party) in a stable order."""
    out: dict[str, list[tuple[str, int, CrmParty]]] = defaultdict(list)
    for row in rows:
        activity = _id(row.get("_activityid_value"))
        mask = row.get("participationtypemask")
        if not activity or not isinstance(mask, int):
            continue
        pid = _id(row.get("_partyid_value"))
        entity = ids.parties.get(pid) if pid else None
        address = row.get("addressused") or None
        party = CrmParty(entity, pid if entity else None, address)
        out[activity].append((str(row.get("activitypartyid") or ""), mask, party))
    return {a: [(m, p) for _, m, p in sorted(v, key=lambda x: x[0])] for a, v in out.items()}


def _with(parties: list[tuple[int, CrmParty]], *masks: int) -> tuple[CrmParty, ...]:
    return tuple(p for m, p in parties if m in masks)


def crm_email(row: Row, parties: list[tuple[int, CrmParty]], ids: CrmIds) -> CrmEmail | None:
    aid = _id(row.get("activityid"))
    if not aid:
        return None
    senders = _with(parties, SENDER)
    return CrmEmail(
        activity_id=aid,
        sent_at=parse_time(row.get("senton")),
        sender=senders[0] if senders else None,
        to=_with(parties, TO),
        cc=_with(parties, CC),
        bcc=_with(parties, BCC),
        message_id=row.get("messageid") or None,
        is_draft=row.get("statecode") not in (1, None),
        regarding=ids.ref(row.get("_regardingobjectid_value")),
    )


def crm_appointment(row: Row, parties: list[tuple[int, CrmParty]], ids: CrmIds) -> CrmAppointment | None:
    aid = _id(row.get("activityid"))
    if not aid:
        return None
    organizers = _with(parties, ORGANIZER)
    return CrmAppointment(
        activity_id=aid,
        start=parse_time(row.get("scheduledstart")),
        end=parse_time(row.get("scheduledend")),
        organizer=organizers[0] if organizers else None,
        required=_with(parties, REQUIRED),
        optional=_with(parties, OPTIONAL),
        global_object_id=row.get("globalobjectid") or None,
        is_all_day=bool(row.get("isalldayevent")),
        is_cancelled=row.get("statecode") == 2,
        regarding=ids.ref(row.get("_regardingobjectid_value")),
    )


def phone_call(row: Row, parties: list[tuple[int, CrmParty]], ids: CrmIds) -> PhoneCall | None:
    aid = _id(row.get("activityid"))
    if not aid:
        return None
    minutes = row.get("actualdurationminutes")
    code = row.get("statecode")
    return PhoneCall(
        activity_id=aid,
        outgoing=bool(row.get("directioncode")),
        from_parties=_with(parties, SENDER),
        to_parties=_with(parties, TO),
        actual_end=parse_time(row.get("actualend")),
        scheduled_end=parse_time(row.get("scheduledend")),
        duration_minutes=float(minutes) if isinstance(minutes, int | float) else None,
        state=CallState.COMPLETED if code is None else _CALL_STATE.get(code, CallState.OPEN),
        regarding=ids.ref(row.get("_regardingobjectid_value")),
    )


def activity_time(entity_set: str, row: Row) -> datetime | None:
    """The time the activity builder will use, to keep only the window's rows."""
    if entity_set == "emails":
        return parse_time(row.get("senton"))
    if entity_set == "appointments":
        return parse_time(row.get("scheduledstart"))
    return parse_time(row.get("actualend")) or parse_time(row.get("scheduledend"))
