"""What the sandbox's Dataverse holds, built from the organisation, and how it changes as time passes.

Built deterministically from `org.crm` (companies, contacts, opportunities, leads, phone calls) and the
directory: business units, a system user per Entra user (plus SYSTEM, INTEGRATION and the daemon's
application user), accounts, contacts, leads, opportunities with their sales team (an access team made
from the "Sales Team Template", members through `teammembership_association`) and stakeholders
(connections in the "Stakeholder" role, with their reciprocal rows), phone calls, and CRM-tracked copies
of a share of the customer emails and single meetings the Graph mailboxes hold (same internet message id
/ iCalUId), each with its activity parties.

Prospect companies become accounts only when their lead was qualified; recurring meetings are not
tracked (Dataverse keeps those as recurring appointment masters, which the sandbox does not serve).
Contacts without a company (free-mail people of an imported archive) have no parent account.

Only a generated org (`org.generator` set) gets invented CRM data: planned and cancelled calls, second
email addresses, the tracked copies of mail and meetings, and changes over time. An imported archive or a
hand-written scenario gets exactly its seeds, so numbers pinned on them stay put.

`attach_crm(org, ...)` builds the tables once per org, keeps them on `org.crm.dataverse`, and chains
onto the org's activity hook: each `Org.advance` of a generated org then also tracks the new customer
mail and meetings (and follows cancellations and moves of tracked ones), edits contact emails, wins and
loses opportunities, logs phone calls, adds leads and opportunities, and deletes a few records.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

from . import ids
from .crm_store import CrmStore
from .dataverse_schema import Ref
from .model import Meeting, MessageContent, Org

TEAM_TEMPLATE = "Sales Team Template"
EMAIL_TRACK_PERCENT = 35
MEETING_TRACK_PERCENT = 50
INDUSTRY_CODE = {
    "Logistics": 30,
    "Wholesale": 33,
    "Healthcare": 11,
    "Finance": 16,
    "Energy": 31,
    "Food": 17,
    "Software": 6,
    "Automotive": 32,
    "Pharma": 12,
    "Insurance": 20,
    "Retail": 22,
    "Manufacturing": 12,
    "Media": 3,
    "Travel": 8,
    "Construction": 28,
    "Research": 7,
    "Telecom": 31,
    "Chemicals": 24,
    "Hospitality": 13,
}


def attach_crm(
    org: Org, *, app_client_id: str, app_object_id: str, app_name: str = "relinsights (sandbox)"
) -> CrmStore:
    """The org's Dataverse tables, built on first use; later calls return the same store."""
    with org.lock:
        if isinstance(org.crm.dataverse, CrmStore):
            return org.crm.dataverse
        store = CrmStore(org)
        sim = CrmSimulation(store, org)
        sim.build(app_client_id, app_object_id, app_name)
        org.crm.dataverse = store
        previous = org.activity

        def activity(o: Org, start: datetime, end: datetime) -> dict[str, int]:
            counts = dict(previous(o, start, end)) if previous is not None else {}
            counts.update(sim.live(start, end))
            return counts

        org.activity = activity
        return store


def _percent(seed: int, *parts: object) -> int:
    return int(ids.short_hex(seed, *parts), 16) % 100


class CrmSimulation:
    def __init__(self, store: CrmStore, org: Org) -> None:
        self.store, self.org, self.seed = store, org, org.seed
        self.rng = random.Random(f"{org.seed}:crm-seed")
        self.user_of: dict[str, str] = {}  # Entra user id -> systemuserid
        self.entra_of: dict[str, str] = {}  # systemuserid -> Entra user id
        self.opps_of: dict[str, list[str]] = {}  # account id -> opportunity ids
        self.parties: dict[str, Ref] = {}  # lower-case address -> who it is in the CRM
        self.tracked_mail: set[str] = set()  # internet message ids
        self.meetings: dict[str, str | None] = {}  # iCalUId -> tracked appointment id (None: not tracked)
        self.scanned_seq = 0
        self.template_id = ids.guid(self.seed, "teamtemplate", "sales")
        self.stakeholder_role = ids.guid(self.seed, "connectionrole", "Stakeholder")
        self.sales_bu: str | None = None
        # Only a generated org gets invented CRM data (planned calls, second addresses, tracked copies of mail
        # and meetings, edits as time passes); an imported archive or a hand-written scenario keeps its seeds.
        self.invent = org.generator is not None
        self._contacts_of: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------ seeding

    def build(self, app_client_id: str, app_object_id: str, app_name: str) -> None:
        self._business_units()
        self._users(app_client_id, app_object_id, app_name)
        self._reference_data()
        self._customers()
        self._opportunities()
        self._phone_calls()
        if self.invent:
            self._track_new_mail()
            self._sync_meetings()

    def _at(self, key: object, lo_days: int, hi_days: int) -> datetime:
        """A deterministic past moment, between hi_days and lo_days before now, at a working hour."""
        h = int(ids.short_hex(self.seed, "when", key), 16)
        d = self.org.now() - timedelta(days=lo_days + h % max(1, hi_days - lo_days))
        return datetime.combine(d.date(), time(8 + h % 9, (h >> 8) % 60), tzinfo=UTC)

    def _business_units(self) -> None:
        root = ids.guid(self.seed, "businessunit", "root")
        at = self.org.created
        self.store.insert("businessunit", {"name": self.org.name.lower()}, row_id=root, at=at)
        self.store.root_business_unit = root
        self.sales_bu = ids.guid(self.seed, "businessunit", "sales")
        self.store.insert(
            "businessunit",
            {"name": "Sales", "parentbusinessunitid": Ref("businessunit", root)},
            row_id=self.sales_bu,
            at=at,
        )

    def _users(self, app_client_id: str, app_object_id: str, app_name: str) -> None:
        s, root = self.store, self.store.root_business_unit
        assert root and self.sales_bu
        at = self.org.created
        for name in ("SYSTEM", "INTEGRATION"):
            s.insert(
                "systemuser",
                {
                    "fullname": name,
                    "lastname": name,
                    "isdisabled": False,
                    "accessmode": 0,
                    "businessunitid": Ref("businessunit", root),
                },
                row_id=ids.guid(self.seed, "systemuser", name),
                at=at,
            )
        app_user = ids.guid(self.seed, "systemuser", "application", app_client_id)
        s.insert(
            "systemuser",
            {
                "firstname": "#",
                "lastname": app_name,
                "applicationid": app_client_id,
                "azureactivedirectoryobjectid": app_object_id,
                "isdisabled": False,
                "accessmode": 4,
                "businessunitid": Ref("businessunit", root),
            },
            row_id=app_user,
            at=at,
        )
        s.app_user_id = app_user
        for u in self.org.users.values():
            self.user_of[u.id] = ids.guid(self.seed, "systemuser", u.id)
            self.entra_of[self.user_of[u.id]] = u.id
        for u in self.org.users.values():
            sid = self.user_of[u.id]
            bu = self.sales_bu if u.role in ("seller", "manager") else root
            s.insert(
                "systemuser",
                {
                    "firstname": u.given_name,
                    "lastname": u.surname,
                    "internalemailaddress": u.mail or u.user_principal_name,
                    "domainname": u.user_principal_name,
                    "title": u.job_title,
                    "azureactivedirectoryobjectid": u.id,
                    "isdisabled": not u.account_enabled,
                    "accessmode": 0,
                    "businessunitid": Ref("businessunit", bu),
                    "parentsystemuserid": (
                        Ref("systemuser", self.user_of[u.manager_id]) if u.manager_id in self.user_of else None
                    ),
                },
                row_id=sid,
                at=u.created or at,
            )
            for addr in [*u.addresses(), u.user_principal_name.lower()]:
                self.parties[addr] = Ref("systemuser", sid)

    def _reference_data(self) -> None:
        s, at = self.store, self.org.created
        s.insert(
            "teamtemplate",
            {
                "teamtemplatename": TEAM_TEMPLATE,
                "objecttypecode": 3,
                "defaultaccessrightsmask": 7,
                "description": "Access team for the sales team of an opportunity",
            },
            row_id=self.template_id,
            at=at,
        )
        for name, category in (("Stakeholder", 1000), ("Influencer", 1000), ("Colleague", 1), ("Former Employee", 1)):
            s.insert(
                "connectionrole",
                {"name": name, "category": category},
                row_id=ids.guid(self.seed, "connectionrole", name),
                at=at,
            )

    def _owner(self, user_id: str | None) -> Ref | None:
        sid = self.user_of.get(user_id or "")
        return Ref("systemuser", sid) if sid else None

    def _customers(self) -> None:
        crm, s, rng = self.org.crm, self.store, self.rng
        lead_of = {lead.contact_id: lead for lead in crm.leads.values()}
        for n, c in enumerate(crm.companies.values(), start=1):
            qualified = [lead_of[x] for x in c.contact_ids if x in lead_of and lead_of[x].state == "qualified"]
            if not c.is_customer and not qualified:
                continue
            employees = rng.choice([12, 25, 80, 150, 400, 1200, 5000, 20000])
            created = self._at(("account", c.id), 200, 1000)
            s.insert(
                "account",
                {
                    "name": c.name,
                    "accountnumber": f"ACC-{n:05d}",
                    "websiteurl": f"https://www.{c.domain}",
                    "emailaddress1": f"info@{c.domain}",
                    "telephone1": f"+{rng.randint(30, 49)} {rng.randint(10, 99)} {rng.randint(1000000, 9999999)}",
                    "address1_city": c.city,
                    "address1_country": c.country,
                    "industrycode": INDUSTRY_CODE.get(c.industry, 6),
                    "customertypecode": 3 if c.is_customer else 8,
                    "numberofemployees": employees,
                    "revenue": float(employees * rng.randint(80, 250) * 1000),
                    "ownerid": self._owner(c.owner_id),
                    "originatingleadid": None,
                },
                row_id=c.id,
                at=created,
            )
            for cid in c.contact_ids:
                self._contact(cid, c.id, c.owner_id, created + timedelta(days=_percent(self.seed, "contact-age", cid)))
            if c.contact_ids:
                s.update("account", c.id, {"primarycontactid": Ref("contact", c.contact_ids[0])}, at=created)
        lead_contacts = {lead.contact_id for lead in crm.leads.values()}
        for ct in crm.contacts.values():  # people without an account (free-mail senders of an imported archive)
            if s.get("contact", ct.id) is None and not ct.is_lead and ct.id not in lead_contacts:
                owner = crm.companies[ct.company_id].owner_id if ct.company_id in crm.companies else None
                self._contact(ct.id, None, owner, self._at(("contact", ct.id), 30, 700))
        for lead in crm.leads.values():
            if lead.contact_id not in crm.contacts:
                continue
            ct = crm.contacts[lead.contact_id]
            comp = crm.companies.get(ct.company_id or "")
            state = {"open": 0, "qualified": 1, "disqualified": 2}[lead.state]
            status = {0: rng.choice([1, 2]), 1: 3, 2: rng.choice([4, 6])}[state]
            s.insert(
                "lead",
                {
                    "firstname": ct.first_name,
                    "lastname": ct.last_name,
                    "subject": lead.topic,
                    "companyname": comp.name if comp else None,
                    "emailaddress1": ct.email,
                    "jobtitle": ct.job_title,
                    "telephone1": ct.phone,
                    "websiteurl": f"https://www.{comp.domain}" if comp else None,
                    "ownerid": self._owner(lead.owner_id),
                    "statecode": state,
                    "statuscode": status,
                    "parentaccountid": Ref("account", comp.id) if state == 1 and comp else None,
                    "parentcontactid": Ref("contact", ct.id) if state == 1 else None,
                },
                row_id=lead.id,
                at=lead.created,
            )
            if state == 1 and comp is not None:
                s.update("account", comp.id, {"originatingleadid": Ref("lead", lead.id)}, at=lead.created)
                s.update("contact", ct.id, {"originatingleadid": Ref("lead", lead.id)}, at=lead.created)
            else:
                self.parties.setdefault(ct.email.lower(), Ref("lead", lead.id))

    def _contact(self, cid: str, account_id: str | None, owner_user: str | None, created: datetime) -> None:
        ct = self.org.crm.contacts.get(cid)
        if ct is None or self.store.get("contact", cid) is not None:
            return  # the generator can give two companies one free-mail person (one id): keep the first
        alt = None
        if self.invent and ct.first_name and ct.last_name and _percent(self.seed, "alt-email", cid) < 20:
            alt = f"{ct.first_name[0]}.{ct.last_name}.{ids.short_hex(self.seed, cid, size=2)}@outlook.com".lower()
        self.store.insert(
            "contact",
            {
                "firstname": ct.first_name or None,  # Dataverse keeps empty strings as null
                "lastname": ct.last_name or ct.email,
                "emailaddress1": ct.email,
                "emailaddress2": alt,
                "jobtitle": ct.job_title,
                "telephone1": ct.phone,
                "parentcustomerid": Ref("account", account_id) if account_id else None,
                "ownerid": self._owner(owner_user),
            },
            row_id=ct.id,
            at=created,
        )
        self.parties[ct.email.lower()] = Ref("contact", ct.id)

    def _opportunities(self) -> None:
        for o in self.org.crm.opportunities.values():
            if self.store.get("account", o.company_id) is None:
                continue
            self.add_opportunity(
                o.id,
                o.name,
                o.company_id,
                o.owner_id,
                o.created,
                o.estimated_value,
                datetime.combine(o.close_date, time(17), tzinfo=UTC),
                o.state,
                o.team_ids,
                o.stakeholder_ids,
            )

    def add_opportunity(
        self,
        opp_id: str,
        name: str,
        account_id: str,
        owner_user: str,
        created: datetime,
        value: float,
        close: datetime,
        state: str,
        team: list[str],
        stakeholders: list[str],
    ) -> None:
        s, rng = self.store, self.rng
        stakeholders = [c for c in stakeholders if s.get("contact", c) is not None]
        closed = state != "open"
        won = state == "won"
        s.insert(
            "opportunity",
            {
                "name": name,
                "ownerid": self._owner(owner_user),
                "parentaccountid": Ref("account", account_id),
                "customerid": Ref("account", account_id),
                "parentcontactid": Ref("contact", stakeholders[0]) if stakeholders else None,
                "estimatedvalue": value,
                "estimatedclosedate": close.date(),
                "actualclosedate": close.date() if closed else None,
                "actualvalue": round(value * rng.uniform(0.8, 1.1), 2) if won else None,
                "closeprobability": 100 if won else (0 if closed else rng.choice([20, 40, 60, 80])),
                "salesstage": 3 if closed else rng.choice([0, 1, 2]),
                "statecode": {"open": 0, "won": 1, "lost": 2}[state],
                "statuscode": {"open": 1, "won": 3, "lost": rng.choice([4, 5])}[state],
            },
            row_id=opp_id,
            at=created,
        )
        if closed:
            s.update("opportunity", opp_id, {}, at=min(close, self.org.now()))
        self.opps_of.setdefault(account_id, []).append(opp_id)
        members = [self.user_of[u] for u in dict.fromkeys(team) if u in self.user_of]
        if members:
            team_id = ids.guid(self.seed, "team", opp_id)
            s.insert(
                "team",
                {
                    "name": f"{opp_id}+{self.template_id}",
                    "teamtype": 1,
                    "regardingobjectid": Ref("opportunity", opp_id),
                    "teamtemplateid": Ref("teamtemplate", self.template_id),
                    "businessunitid": Ref("businessunit", self.store.root_business_unit or ""),
                    "systemmanaged": True,
                },
                row_id=team_id,
                at=created,
            )
            for sid in members:
                s.insert(
                    "teammembership",
                    {"teamid": team_id, "systemuserid": sid},
                    row_id=ids.guid(self.seed, "teammembership", team_id, sid),
                    at=created,
                )
        for cid in dict.fromkeys(stakeholders):  # a contact is one stakeholder, however often it was drawn
            self.connect(Ref("opportunity", opp_id), Ref("contact", cid), created)

    def connect(self, record: Ref, stakeholder: Ref, at: datetime) -> None:
        """A Stakeholder connection and the reciprocal row Dataverse creates with it."""
        a = ids.guid(self.seed, "connection", record.id, stakeholder.id)
        b = ids.guid(self.seed, "connection", stakeholder.id, record.id)
        if self.store.get("connection", a) is not None:
            return  # already connected (Dataverse refuses a duplicate connection too)
        otc = {"account": 1, "contact": 2, "opportunity": 3, "lead": 4}
        role = Ref("connectionrole", self.stakeholder_role)
        for cid, one, two, mine, theirs, master, other in (
            (a, record, stakeholder, None, role, True, b),
            (b, stakeholder, record, role, None, False, a),
        ):
            self.store.insert(
                "connection",
                {
                    "record1id": one,
                    "record2id": two,
                    "record1roleid": mine,
                    "record2roleid": theirs,
                    "ismaster": master,
                    "record1objecttypecode": otc[one.entity],
                    "record2objecttypecode": otc[two.entity],
                    "relatedconnectionid": Ref("connection", other) if self.store.get("connection", other) else None,
                },
                row_id=cid,
                at=at,
            )
        self.store.update("connection", a, {"relatedconnectionid": Ref("connection", b)}, at=at)

    def _regarding(self, key: object, party: Ref, when: datetime) -> Ref:
        """What a person sets 'Regarding' to: the contact, its account, or an open opportunity."""
        if party.entity != "contact":
            return party
        contact = self.store.get("contact", party.id)
        account = contact["parentcustomerid"] if contact else None
        roll = _percent(self.seed, "regarding", key)
        if account is not None and roll < 35:
            rows = (self.store.get("opportunity", o) for o in self.opps_of.get(account.id, []))
            opps = [o for o in rows if o is not None and o["createdon"] <= when and o["statecode"] == 0]
            if opps:
                return Ref("opportunity", opps[roll % len(opps)]["opportunityid"])
        if account is not None and roll < 55:
            return account
        return party

    def _phone_calls(self) -> None:
        for pc in self.org.crm.phone_calls:
            if self.store.get("contact", pc.contact_id) is None:
                continue
            self.add_call(pc.id, pc.user_id, pc.contact_id, pc.start, pc.duration_minutes, pc.direction == "outgoing")
        if not self.invent:
            return
        rng = self.rng
        now = self.org.now()
        contacts_of = self._contacts_by_account()
        for acc in list(self.store.rows("account").values()):
            contacts = contacts_of.get(acc["accountid"], [])
            owner = acc["ownerid"]
            if not contacts or owner is None:
                continue
            user = self.entra_of.get(owner.id)
            roll = _percent(self.seed, "scheduled-call", acc["accountid"])
            if roll < 30 and user:  # a call planned for the coming days
                start = datetime.combine((now + timedelta(days=1 + roll % 9)).date(), time(10 + roll % 6), tzinfo=UTC)
                self.add_call(
                    ids.guid(self.seed, "planned-call", acc["accountid"]),
                    user,
                    contacts[0]["contactid"],
                    start,
                    15,
                    True,
                    state=0,
                    created=now - timedelta(days=1),
                )
            elif roll > 90 and user:  # one that was planned and then cancelled
                start = now - timedelta(days=3 + roll % 20)
                self.add_call(
                    ids.guid(self.seed, "cancelled-call", acc["accountid"]),
                    user,
                    contacts[-1]["contactid"],
                    start,
                    rng.choice([15, 30]),
                    True,
                    state=2,
                    created=start - timedelta(days=2),
                )

    def add_call(
        self,
        call_id: str,
        user_id: str,
        contact_id: str,
        start: datetime,
        minutes: int,
        outgoing: bool,
        *,
        state: int = 1,
        created: datetime | None = None,
    ) -> None:
        """A phone call (state 1 completed, 0 scheduled, 2 cancelled) with its two activity parties."""
        contact = self.store.get("contact", contact_id)
        owner = self._owner(user_id)
        if contact is None or owner is None:
            return
        end = start + timedelta(minutes=minutes)
        done = state == 1
        name = contact["fullname"]
        self.store.insert(
            "phonecall",
            {
                "subject": f"{'Call with' if outgoing else 'Call from'} {name}",
                "phonenumber": contact["telephone1"],
                "directioncode": outgoing,
                "scheduledstart": start,
                "scheduledend": end,
                "actualstart": start if done else None,
                "actualend": end if done else None,
                "actualdurationminutes": minutes if done else None,
                "ownerid": owner,
                "regardingobjectid": self._regarding(call_id, Ref("contact", contact_id), start),
                "prioritycode": 1,
                "statecode": state,
                "statuscode": {1: 2 if outgoing else 4, 0: 1, 2: 3}[state],
            },
            row_id=call_id,
            at=created or min(end + timedelta(minutes=3), self.org.now()),
            by=owner.id,
        )
        me, them = (owner, 1), (Ref("contact", contact_id), 2)
        if not outgoing:
            me, them = (owner, 2), (Ref("contact", contact_id), 1)
        for n, (ref, mask) in enumerate((me, them)):
            self._party(call_id, "phonecall", n, ref, mask, contact["telephone1"] if ref.entity == "contact" else None)

    def _party(self, activity_id: str, kind: str, n: int, ref: Ref | None, mask: int, address: str | None) -> None:
        self.store.insert(
            "activityparty",
            {
                "activityid": Ref(kind, activity_id),
                "partyid": ref,
                "participationtypemask": mask,
                "addressused": address,
                "ispartydeleted": False,
            },
            row_id=ids.guid(self.seed, "activityparty", activity_id, n),
        )

    # ------------------------------------------------------------ tracked mail and meetings

    def _resolve(self, address: str) -> Ref | None:
        return self.parties.get(address.lower())

    def _track_new_mail(self) -> int:
        """Track (a stable share of) the customer emails delivered since the last scan."""
        added = 0
        contents: dict[str, MessageContent] = {}
        for mb in self.org.mailboxes.values():
            log = mb.message_log
            lo, hi = 0, len(log)
            while lo < hi:  # first entry past the last scan
                mid = (lo + hi) // 2
                if log[mid][0] <= self.scanned_seq:
                    lo = mid + 1
                else:
                    hi = mid
            for _, mid_ in log[lo:]:
                m = mb.messages[mid_]
                if m.content is not None and not m.is_draft and m.content.internet_message_id not in self.tracked_mail:
                    contents.setdefault(m.content.internet_message_id, m.content)
        self.scanned_seq = self.org.seq
        for imid, content in contents.items():
            if self.add_tracked_email(content):
                added += 1
            self.tracked_mail.add(imid)
        return added

    def add_tracked_email(self, content: MessageContent, *, force: bool = False) -> bool:
        imid = content.internet_message_id
        if not force and _percent(self.seed, "track-email", imid) >= EMAIL_TRACK_PERCENT:
            return False
        sender = self._resolve(content.from_[1])
        recipients = [(a, 2) for _, a in content.to] + [(a, 3) for _, a in content.cc]
        resolved = [(a, m, self._resolve(a)) for a, m in recipients]
        everyone = [sender, *(r for _, _, r in resolved)]
        internal = [r for r in everyone if r is not None and r.entity == "systemuser"]
        customers = [r for r in everyone if r is not None and r.entity in ("contact", "lead")]
        if not internal or not customers:
            return False
        aid = ids.guid(self.seed, "email", imid)
        if self.store.get("email", aid) is not None:
            return False
        outgoing = sender is not None and sender.entity == "systemuser"
        owner = sender if outgoing else internal[0]
        assert owner is not None
        self.store.insert(
            "email",
            {
                "subject": content.subject[:800],
                "messageid": imid,
                "directioncode": outgoing,
                "senton": content.sent,
                "actualend": content.sent,
                "sender": content.from_[1],
                "torecipients": "".join(f"{a};" for _, a in content.to)[:500] or None,
                "ownerid": owner,
                "regardingobjectid": self._regarding(imid, customers[0], content.sent),
                "prioritycode": 2 if content.importance == "high" else 1,
                "statecode": 1,
                "statuscode": 3 if outgoing else 4,
            },
            row_id=aid,
            at=min(content.sent + timedelta(seconds=90), self.org.now()),
            by=owner.id,
        )
        self._party(aid, "email", 0, sender, 1, content.from_[1])
        for n, (address, mask, ref) in enumerate(resolved, start=1):
            self._party(aid, "email", n, ref, mask, address)
        return True

    def _sync_meetings(self) -> tuple[int, int]:
        """Track new single meetings (a stable share) and follow moves and cancellations of tracked ones."""
        added = updated = 0
        for uid, meeting in self.org.meetings.items():
            if uid not in self.meetings:
                self.meetings[uid] = self._track_meeting(meeting)
                added += self.meetings[uid] is not None
                continue
            aid = self.meetings[uid]
            row = self.store.get("appointment", aid) if aid else None
            if row is None or row["statecode"] == 2:
                continue
            change: dict[str, Any] = {}
            if meeting.cancelled:
                change = {"statecode": 2, "statuscode": 4}
            elif (row["scheduledstart"], row["scheduledend"]) != (meeting.start, meeting.end):
                change = {"scheduledstart": meeting.start, "scheduledend": meeting.end}
            if change:
                self.store.update("appointment", row["activityid"], change, by=row["ownerid"].id)
                updated += 1
        return added, updated

    def _track_meeting(self, m: Meeting) -> str | None:
        if m.recurrence is not None or _percent(self.seed, "track-meeting", m.uid) >= MEETING_TRACK_PERCENT:
            return None
        organizer = self._resolve(m.organizer[1])
        people = [(a.address, 5 if a.type == "required" else 6, self._resolve(a.address)) for a in m.attendees]
        everyone = [organizer, *(r for _, _, r in people)]
        internal = [r for r in everyone if r is not None and r.entity == "systemuser"]
        customers = [r for r in everyone if r is not None and r.entity in ("contact", "lead")]
        if not internal or not customers:
            return None
        aid = ids.guid(self.seed, "appointment", m.uid)
        owner = organizer if organizer is not None and organizer.entity == "systemuser" else internal[0]
        created = self._created(m)
        now = self.org.now()
        if m.cancelled:
            state, status = 2, 4
        elif m.end <= now and _percent(self.seed, "completed", m.uid) < 50:
            state, status = 1, 3
        else:
            state, status = 3, 5
        self.store.insert(
            "appointment",
            {
                "subject": m.subject[:200],
                "globalobjectid": m.uid,
                "location": m.location,
                "isalldayevent": m.is_all_day,
                "scheduledstart": m.start,
                "scheduledend": m.end,
                "actualstart": m.start if state == 1 else None,
                "actualend": m.end if state == 1 else None,
                "actualdurationminutes": int((m.end - m.start).total_seconds() // 60) if state == 1 else None,
                "ownerid": owner,
                "regardingobjectid": self._regarding(m.uid, customers[0], m.start),
                "prioritycode": 1,
                "statecode": state,
                "statuscode": status,
            },
            row_id=aid,
            at=created,
            by=owner.id,
        )
        self._party(aid, "appointment", 0, organizer, 7, m.organizer[1])
        for n, (address, mask, ref) in enumerate(people, start=1):
            self._party(aid, "appointment", n, ref, mask, address)
        return aid

    def _created(self, m: Meeting) -> datetime:
        for user_id, copies in m.copies.items():
            eid = copies.get(None)
            ev = self.org.mailboxes[user_id].events.get(eid) if eid else None
            if ev is not None and ev.is_organizer and ev.created is not None:
                return min(ev.created + timedelta(minutes=2), self.org.now())
        return self.org.now()

    # ------------------------------------------------------------ time passing

    def live(self, start: datetime, end: datetime) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not self.invent:
            return counts
        counts.update(self._simulate(start, end))
        counts["crm_emails_tracked"] = self._track_new_mail()
        added, updated = self._sync_meetings()
        counts["crm_appointments_tracked"], counts["crm_appointments_updated"] = added, updated
        return {k: v for k, v in counts.items() if v}

    def _simulate(self, start: datetime, end: datetime) -> dict[str, int]:
        rng = random.Random(f"{self.seed}:crm-live:{start.isoformat()}:{end.isoformat()}")
        days = (end - start).total_seconds() / 86400
        accounts = list(self.store.rows("account"))
        scale = max(1.0, len(accounts) / 12)
        rates = {
            "crm_contact_email_changes": 0.3 * scale,
            "crm_opportunities_closed": 0.15 * scale,
            "crm_opportunities_created": 0.06 * scale,
            "crm_phonecalls": 0.15 * len(accounts),
            "crm_leads": 0.2 * scale,
            "crm_deleted": 0.05 * scale,
        }
        self._contacts_of = self._contacts_by_account()
        actions: list[tuple[datetime, str]] = []
        for kind, per_day in rates.items():
            expected = per_day * days
            n = int(expected) + (1 if rng.random() < expected - math.floor(expected) else 0)
            for _ in range(n):
                t = start + timedelta(seconds=rng.random() * (end - start).total_seconds())
                actions.append((t.replace(microsecond=0), kind))
        counts: dict[str, int] = {}
        for t, kind in sorted(actions):
            if getattr(self, "_" + kind.removeprefix("crm_"))(rng, t):
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def _pick(self, rng: random.Random, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return rows[rng.randrange(len(rows))] if rows else None

    def _contacts_by_account(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for c in self.store.rows("contact").values():
            parent = c["parentcustomerid"]
            if parent is not None and parent.entity == "account":
                out.setdefault(parent.id, []).append(c)
        return out

    def _contact_email_changes(self, rng: random.Random, t: datetime) -> bool:
        c = self._pick(
            rng, [c for c in self.store.rows("contact").values() if c["statecode"] == 0 and c["emailaddress1"]]
        )
        if c is None:
            return False
        old: str = c["emailaddress1"]
        local, _, domain = old.partition("@")
        first, last = (c["firstname"] or "x").lower(), (c["lastname"] or "x").lower()
        account = self.store.get("account", c["parentcustomerid"].id) if c["parentcustomerid"] else None
        if domain in ("gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "gmx.de") and account is not None:
            domain = account["websiteurl"].removeprefix("https://www.")
        new_local = f"{first[0]}{last}" if local == f"{first}.{last}" else f"{first}.{last}"
        change = {"emailaddress1": f"{new_local}@{domain}"}
        change["emailaddress2" if not c["emailaddress2"] else "emailaddress3"] = old
        self.store.update("contact", c["contactid"], change, at=t, by=c["ownerid"].id if c["ownerid"] else None)
        return True

    def _opportunities_closed(self, rng: random.Random, t: datetime) -> bool:
        o = self._pick(
            rng, [o for o in self.store.rows("opportunity").values() if o["statecode"] == 0 and o["createdon"] < t]
        )
        if o is None:
            return False
        won = rng.random() < 0.55
        change: dict[str, Any] = {
            "statecode": 1 if won else 2,
            "statuscode": 3 if won else rng.choice([4, 5]),
            "actualclosedate": t.date(),
            "actualvalue": round((o["estimatedvalue"] or 0.0) * rng.uniform(0.8, 1.1), 2) if won else None,
            "closeprobability": 100 if won else 0,
            "salesstage": 3,
        }
        self.store.update("opportunity", o["opportunityid"], change, at=t, by=o["ownerid"].id if o["ownerid"] else None)
        return True

    def _opportunities_created(self, rng: random.Random, t: datetime) -> bool:
        acc = self._pick(rng, [a for a in self.store.rows("account").values() if a["customertypecode"] == 3])
        if acc is None or acc["ownerid"] is None:
            return False
        owner = self.entra_of.get(acc["ownerid"].id)
        contacts = [c["contactid"] for c in self._contacts_of.get(acc["accountid"], [])]
        if owner is None:
            return False
        oid = ids.guid(self.seed, "live-opportunity", t.isoformat())
        self.add_opportunity(
            oid,
            f"{acc['name'].split(' ')[0]} - {rng.choice(['Expansion', 'Renewal', 'Add-on'])} {t:%Y-%m}",
            acc["accountid"],
            owner,
            t,
            float(rng.randrange(5_000, 150_000, 500)),
            t + timedelta(days=rng.randint(30, 120)),
            "open",
            [owner],
            contacts[: rng.randint(1, max(1, len(contacts)))],
        )
        return True

    def _phonecalls(self, rng: random.Random, t: datetime) -> bool:
        acc = self._pick(rng, list(self.store.rows("account").values()))
        if acc is None or acc["ownerid"] is None:
            return False
        owner = self.entra_of.get(acc["ownerid"].id)
        c = self._pick(rng, self._contacts_of.get(acc["accountid"], []))
        if c is None or owner is None:
            return False
        self.add_call(
            ids.guid(self.seed, "live-call", t.isoformat(), acc["accountid"]),
            owner,
            c["contactid"],
            t,
            rng.choice([5, 10, 15, 30, 45]),
            rng.random() < 0.6,
            created=t + timedelta(minutes=50),
        )
        return True

    def _leads(self, rng: random.Random, t: datetime) -> bool:
        from .generator import FIRST, LAST, PREFIX

        sellers = [u for u in self.org.users.values() if u.role == "seller" and u.account_enabled and u.has_mailbox]
        if not sellers:
            return False
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"{rng.choice(PREFIX)} {rng.choice(['Ventures', 'Group', 'Partners', 'Works'])}"
        domain = company.lower().replace(" ", "") + ".com"
        lead_id = ids.guid(self.seed, "live-lead", t.isoformat())
        self.store.insert(
            "lead",
            {
                "firstname": first,
                "lastname": last,
                "subject": f"Web enquiry from {company}",
                "companyname": company,
                "emailaddress1": f"{first}.{last}@{domain}".lower(),
                "websiteurl": f"https://www.{domain}",
                "ownerid": self._owner(rng.choice(sellers).id),
                "statecode": 0,
                "statuscode": 1,
            },
            row_id=lead_id,
            at=t,
        )
        self.parties.setdefault(f"{first}.{last}@{domain}".lower(), Ref("lead", lead_id))
        return True

    def _deleted(self, rng: random.Random, t: datetime) -> bool:
        """Someone cleans up: a planned call is deleted, or a disqualified lead."""
        calls = [c for c in self.store.rows("phonecall").values() if c["statecode"] in (0, 2)]
        leads = [x for x in self.store.rows("lead").values() if x["statecode"] == 2]
        if calls and (not leads or rng.random() < 0.7):
            self.store.delete("phonecall", calls[rng.randrange(len(calls))]["activityid"])
            return True
        if leads:
            lead_id = leads[rng.randrange(len(leads))]["leadid"]
            self.store.delete("lead", lead_id)
            for address in [a for a, ref in self.parties.items() if ref == Ref("lead", lead_id)]:
                del self.parties[address]
            return True
        return False
