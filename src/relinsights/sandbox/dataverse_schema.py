"""The Dataverse tables the sandbox serves: columns with their types, lookups with their navigation
properties, collection-valued navigation properties, and choice labels.

Names follow the Dynamics 365 / Dataverse table reference (logical names, entity set names, navigation
property names, which are case-sensitive: the most-contacted tables' lookups navigate as
`msdyn_contact_regardingObjectId`, for instance). Only the columns the daemon or a realistic client touches
are declared; writing any other column is rejected as Dataverse rejects unknown properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal

Kind = Literal["guid", "string", "int", "bigint", "decimal", "money", "bool", "datetime", "date", "choice", "lookup"]


@dataclass(frozen=True)
class Column:
    name: str  # logical name
    kind: Kind
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    precision: int = 2
    options: dict[int, str] | None = None  # choice labels
    labels: tuple[str, str] = ("No", "Yes")  # bool labels (false, true)
    navs: dict[str, str] | None = None  # lookup: navigation property -> target logical name
    writable: bool = True
    calculated: bool = False  # computed by Dataverse from other columns

    @property
    def web_name(self) -> str:
        """How the Web API exposes the column: lookups as `_name_value`."""
        return f"_{self.name}_value" if self.kind == "lookup" else self.name

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.navs or {}).values()))

    @property
    def edm(self) -> str:
        return {
            "guid": "Edm.Guid",
            "string": "Edm.String",
            "int": "Edm.Int32",
            "bigint": "Edm.Int64",
            "decimal": "Edm.Decimal",
            "money": "Edm.Decimal",
            "bool": "Edm.Boolean",
            "datetime": "Edm.DateTimeOffset",
            "date": "Edm.Date",
            "choice": "Edm.Int32",
            "lookup": "Edm.Guid",
        }[self.kind]


@dataclass(frozen=True)
class Collection:
    """A collection-valued navigation property: rows of `target` whose `fk` lookup is this row, or (N:N)
    rows of `target` linked through the intersect table `via` = (table, this side's id, other side's id)."""

    name: str
    target: str
    fk: str | None = None
    via: tuple[str, str, str] | None = None


@dataclass
class Entity:
    logical: str
    set_name: str
    pk: str
    primary_name: str | None
    object_type_code: int
    columns: dict[str, Column] = field(default_factory=dict)
    collections: dict[str, Collection] = field(default_factory=dict)
    change_tracking: bool = True
    # derived
    by_web_name: dict[str, Column] = field(default_factory=dict)
    navs: dict[str, Column] = field(default_factory=dict)  # single-valued nav property -> its lookup column

    def finish(self) -> Entity:
        self.by_web_name = {c.web_name: c for c in self.columns.values()}
        self.navs = {n: c for c in self.columns.values() if c.navs for n in c.navs}
        return self

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"

    def nav_to(self, column: Column, target: str) -> str:
        """The navigation property of a lookup that reaches `target`."""
        for nav, t in (column.navs or {}).items():
            if t == target:
                return nav
        return next(iter(column.navs or {}))


# ---------------------------------------------------------------- choices

ACTIVE_STATE = {0: "Active", 1: "Inactive"}
ACTIVE_STATUS = {1: "Active", 2: "Inactive"}
INDUSTRY = {
    1: "Accounting",
    2: "Agriculture and Non-petrol Natural Resource Extraction",
    3: "Broadcasting Printing and Publishing",
    4: "Brokers",
    5: "Building Supply Retail",
    6: "Business Services",
    7: "Consulting",
    8: "Consumer Services",
    9: "Design, Direction and Creative Management",
    10: "Distributors, Dispatchers and Processors",
    11: "Doctor's Offices and Clinics",
    12: "Durable Manufacturing",
    13: "Eating and Drinking Places",
    14: "Entertainment Retail",
    15: "Equipment Rental and Leasing",
    16: "Financial",
    17: "Food and Tobacco Processing",
    18: "Inbound Capital Intensive Processing",
    19: "Inbound Repair and Services",
    20: "Insurance",
    21: "Legal Services",
    22: "Non-Durable Merchandise Retail",
    23: "Outbound Consumer Service",
    24: "Petrochemical Extraction and Distribution",
    25: "Service Retail",
    26: "SIG Affiliations",
    27: "Social Services",
    28: "Special Outbound Trade Contractors",
    29: "Specialty Realty",
    30: "Transportation",
    31: "Utility Creation and Distribution",
    32: "Vehicle Retail",
    33: "Wholesale",
}
CUSTOMER_TYPE = {
    1: "Competitor",
    2: "Consultant",
    3: "Customer",
    4: "Investor",
    5: "Partner",
    6: "Influencer",
    7: "Press",
    8: "Prospect",
    9: "Reseller",
    10: "Supplier",
    11: "Vendor",
    12: "Other",
}
ACCESS_MODE = {
    0: "Read-Write",
    1: "Administrative",
    2: "Read",
    3: "Support User",
    4: "Non-interactive",
    5: "Delegated Admin",
}
PARTICIPATION = {
    1: "Sender",
    2: "To Recipient",
    3: "CC Recipient",
    4: "BCC Recipient",
    5: "Required attendee",
    6: "Optional attendee",
    7: "Organizer",
    8: "Regarding",
    9: "Owner",
    10: "Resource",
    11: "Customer",
}
CONNECTION_CATEGORY = {
    1: "Business",
    2: "Family",
    3: "Social",
    4: "Sales",
    5: "Other",
    1000: "Stakeholder",
    1001: "Sales Team",
    1002: "Service",
}
OBJECT_TYPE = {
    1: "Account",
    2: "Contact",
    3: "Opportunity",
    4: "Lead",
    8: "User",
    9: "Team",
    4201: "Appointment",
    4202: "Email",
    4210: "Phone Call",
}
HEALTH_STATE = {
    0: "Good",
    1: "Fair",
    2: "Poor",
    3: "Not enough info",
    4: "No Closed Activities",
    5: "Health Computation In Progress",
    6: "Something went wrong",
    7: "Entity older than 2 years",
}
HEALTH_TREND = {
    0: "Improving",
    1: "Steady",
    2: "Declining",
    3: "Not enough info",
    4: "Something went wrong",
    5: "Health not applicable",
}
ACCURACY = {100000000: "Complete", 100000001: "Partial"}
DIRECTION = {0: "Incoming", 1: "Outgoing"}

INT_MAX = 2147483647
BIG = 100000000000.0


# ---------------------------------------------------------------- column helpers


def s(name: str, length: int = 100, **kw: Any) -> Column:
    return Column(name, "string", max_length=length, **kw)


def i(name: str, lo: float = -2147483648, hi: float = INT_MAX, **kw: Any) -> Column:
    return Column(name, "int", minimum=lo, maximum=hi, **kw)


def dec(name: str, precision: int = 2, lo: float = 0.0, hi: float = BIG, **kw: Any) -> Column:
    return Column(name, "decimal", precision=precision, minimum=lo, maximum=hi, **kw)


def money(name: str) -> Column:
    return Column(name, "money", precision=2, minimum=-922337203685477.0, maximum=922337203685477.0)


def choice(name: str, options: dict[int, str], **kw: Any) -> Column:
    return Column(name, "choice", options=options, **kw)


def flag(name: str, labels: tuple[str, str] = ("No", "Yes"), **kw: Any) -> Column:
    return Column(name, "bool", labels=labels, **kw)


def when(name: str, **kw: Any) -> Column:
    return Column(name, "datetime", **kw)


def day(name: str, **kw: Any) -> Column:
    return Column(name, "date", **kw)


def guid(name: str, **kw: Any) -> Column:
    return Column(name, "guid", **kw)


def lookup(name: str, navs: dict[str, str], **kw: Any) -> Column:
    return Column(name, "lookup", navs=navs, **kw)


def one(name: str, target: str, **kw: Any) -> Column:
    """A lookup to one table whose navigation property has the lookup's own name."""
    return lookup(name, {name: target}, **kw)


def system_columns(with_state: bool = True) -> list[Column]:
    out = [
        when("createdon", writable=False),
        when("modifiedon", writable=False),
        Column("versionnumber", "bigint", writable=False),
        one("createdby", "systemuser", writable=False),
        one("modifiedby", "systemuser", writable=False),
    ]
    if with_state:
        out += [choice("statecode", ACTIVE_STATE), choice("statuscode", ACTIVE_STATUS)]
    return out


def owner() -> Column:
    return lookup("ownerid", {"ownerid": "systemuser"})


def entity(
    logical: str,
    set_name: str,
    otc: int,
    columns: list[Column],
    *,
    primary_name: str | None,
    pk: str | None = None,
    collections: list[Collection] | None = None,
    change_tracking: bool = True,
    with_state: bool = True,
    system: bool = True,
) -> Entity:
    pk = pk or f"{logical}id"
    cols = [guid(pk), *columns, *(system_columns(with_state) if system else [])]
    e = Entity(
        logical=logical,
        set_name=set_name,
        pk=pk,
        primary_name=primary_name,
        object_type_code=otc,
        columns={c.name: c for c in cols},
        collections={c.name: c for c in collections or []},
        change_tracking=change_tracking,
    )
    return e.finish()


# ---------------------------------------------------------------- CRM tables


def _activity(kind: str, otc: int, subject_len: int, extra: list[Column], states: dict[int, str]) -> Entity:
    statuses = {
        "phonecall": {1: "Open", 2: "Made", 3: "Canceled", 4: "Received"},
        "email": {
            1: "Draft",
            2: "Completed",
            3: "Sent",
            4: "Received",
            5: "Canceled",
            6: "Pending Send",
            7: "Sending",
            8: "Failed",
        },
        "appointment": {1: "Free", 2: "Tentative", 3: "Completed", 4: "Canceled", 5: "Busy", 6: "Out of Office"},
    }[kind]
    regarding = {f"regardingobjectid_{t}_{kind}": t for t in ("account", "contact", "lead", "opportunity")}
    cols = [
        s("subject", subject_len),
        s("description", 2000),
        owner(),
        lookup("regardingobjectid", regarding),
        when("scheduledstart"),
        when("scheduledend"),
        when("actualstart"),
        when("actualend"),
        i("actualdurationminutes", 0),
        s("activitytypecode", 64, writable=False),
        choice("prioritycode", {0: "Low", 1: "Normal", 2: "High"}),
        *extra,
        when("createdon", writable=False),
        when("modifiedon", writable=False),
        Column("versionnumber", "bigint", writable=False),
        one("createdby", "systemuser", writable=False),
        one("modifiedby", "systemuser", writable=False),
        choice("statecode", states),
        choice("statuscode", statuses),
    ]
    return entity(
        kind,
        f"{kind}s",
        otc,
        cols,
        primary_name="subject",
        pk="activityid",
        collections=[Collection(f"{kind}_activity_parties", "activityparty", fk="activityid")],
        system=False,
    )


def _kpi(parent: str, extra: list[Column]) -> Entity:
    logical = f"msdyn_{parent}kpiitem"
    cols = [
        s("msdyn_name", 100),
        one(f"msdyn_{parent}id", parent),
        i("msdyn_emailssent", 0),
        i("msdyn_emailsreceived", 0),
        i("msdyn_meetingssent", 0),
        i("msdyn_meetingsreceived", 0),
        i("msdyn_phonecallsmade", 0),
        i("msdyn_phonecallsreceived", 0),
        i("msdyn_liemailssent", 0),
        i("msdyn_facetimewithcustomer", 0),
        i("msdyn_timespentbyteam", 0),
        i("msdyn_timespentbycustomer", 0),
        dec("msdyn_timespentbyteam_calculated", 1, -BIG, BIG, writable=False, calculated=True),
        dec("msdyn_timespentbycustomer_calculated", 1, -BIG, BIG, writable=False, calculated=True),
        dec("msdyn_averagefirstresponsetimebyusinhrs"),
        dec("msdyn_averagefirstresponsetimebytheminhrs"),
        dec("msdyn_responseratebyus"),
        dec("msdyn_responseratebythem"),
        dec("msdyn_openedemails"),
        dec("msdyn_emailattachmentopens"),
        dec("msdyn_emaillinksclicked"),
        i("msdyn_relationshiphealthscorevalue", 0, 100),
        choice("msdyn_relationshiphealthscorestate", HEALTH_STATE),
        choice("msdyn_relationshiphealthtrend", HEALTH_TREND),
        choice("msdyn_computationaccuracy", ACCURACY),
        when("msdyn_date"),
        when("msdyn_acilastupdatetimestamp"),
        *extra,
    ]
    return entity(logical, f"{logical}s", _custom_otc(logical), cols, primary_name="msdyn_name")


def _activity_summary() -> list[Column]:
    out: list[Column] = []
    for which in ("last", "next"):
        out += [
            when(f"msdyn_{which}activitybyteam"),
            choice(f"msdyn_{which}activitydirection", DIRECTION),
            s(f"msdyn_{which}activityid", 100),
            s(f"msdyn_{which}activitytype", 1250),
        ]
    return out


def _daily(parent: str) -> Entity:
    logical = f"msdyn_daily{parent}kpiitem"
    cols = [
        s("msdyn_name", 100),
        day("msdyn_date"),
        one("msdyn_entityid", parent),
        s(f"msdyn_{parent}id", 100),
        i("msdyn_emailssent", 0),
        i("msdyn_emailsreceived", 0),
        i("msdyn_meetingssent", 0),
        i("msdyn_meetingsreceived", 0),
        i("msdyn_phonecallsmade", 0),
        i("msdyn_phonecallsreceived", 0),
        i("msdyn_liemailssent", 0),
        choice("msdyn_computationaccuracy", ACCURACY),
    ]
    return entity(logical, f"{logical}s", _custom_otc(logical), cols, primary_name="msdyn_name")


def _most_contacted(logical: str, set_name: str) -> Entity:
    cols = [
        s("msdyn_primaryname", 100),
        s("msdyn_name", 100),
        s("msdyn_entityid", 100),
        s("msdyn_entityname", 100),
        s("msdyn_entityimage_url", 200),
        s("msdyn_kpidatajson", 1000),
        s("msdyn_lastcontactedby", 100),
        s("msdyn_lastcontactedon", 100),
        i("msdyn_numberofemails", 0),
        i("msdyn_numberofinmails", 0),
        i("msdyn_numberofmeetings", 0),
        i("msdyn_numberofphonecalls", 0),
        s("msdyn_regardingentityid", 100),
        s("msdyn_regardingentityname", 100),
        s("msdyn_relationshiphealthscorecolor", 100),
        i("msdyn_relationshiphealthscorevalue", 0, 100),
        choice("msdyn_computationaccuracy", ACCURACY),
        *[
            lookup(f"msdyn_{t}_regardingobjectid", {f"msdyn_{t}_regardingObjectId": t})
            for t in ("account", "contact", "lead", "opportunity")
        ],
    ]
    return entity(logical, set_name, _custom_otc(logical), cols, primary_name="msdyn_primaryname")


def _wkw(logical: str, set_name: str) -> Entity:
    cols = [
        s("msdyn_introducer_emailaddress", 200),
        s("msdyn_introduced_entity_id", 100),
        one("msdyn_introducer_systemuserid", "systemuser"),
        s("msdyn_last_interaction_dataflow", 100),
        when("msdyn_last_interaction_datetime"),
        s("msdyn_last_interaction_type", 100),
        dec("msdyn_score", 2, -BIG, BIG),
        choice("msdyn_computationaccuracy", ACCURACY),
    ]
    return entity(logical, set_name, _custom_otc(logical), cols, primary_name="msdyn_introducer_emailaddress")


def _custom_otc(logical: str) -> int:
    return 10000 + sum(ord(ch) for ch in logical) % 5000


def _build() -> dict[str, Entity]:
    tables = [
        entity(
            "businessunit",
            "businessunits",
            10,
            [s("name", 160), one("parentbusinessunitid", "businessunit"), flag("isdisabled")],
            primary_name="name",
            with_state=False,
        ),
        entity(
            "systemuser",
            "systemusers",
            8,
            [
                s("fullname", 200, writable=False),
                s("firstname", 64),
                s("lastname", 64),
                s("internalemailaddress", 100),
                s("domainname", 1024),
                s("title", 128),
                guid("azureactivedirectoryobjectid"),
                guid("applicationid"),
                flag("isdisabled", ("Enabled", "Disabled")),
                choice("accessmode", ACCESS_MODE),
                one("businessunitid", "businessunit"),
                one("parentsystemuserid", "systemuser"),
            ],
            primary_name="fullname",
            with_state=False,
        ),
        entity(
            "teamtemplate",
            "teamtemplates",
            92,
            [s("teamtemplatename", 100), i("objecttypecode"), i("defaultaccessrightsmask"), s("description", 2000)],
            primary_name="teamtemplatename",
            with_state=False,
            change_tracking=False,
        ),
        entity(
            "team",
            "teams",
            9,
            [
                s("name", 160),
                choice("teamtype", {0: "Owner", 1: "Access", 2: "Security Group", 3: "Office Group"}),
                lookup("regardingobjectid", {"regardingobjectid_opportunity": "opportunity"}),
                one("teamtemplateid", "teamtemplate"),
                one("businessunitid", "businessunit"),
                flag("systemmanaged"),
                guid("azureactivedirectoryobjectid"),
            ],
            primary_name="name",
            with_state=False,
            collections=[
                Collection("teammembership_association", "systemuser", via=("teammembership", "teamid", "systemuserid"))
            ],
        ),
        entity(
            "teammembership",
            "teammemberships",
            23,
            [guid("teamid"), guid("systemuserid"), Column("versionnumber", "bigint", writable=False)],
            primary_name=None,
            system=False,
            change_tracking=False,
        ),
        entity(
            "account",
            "accounts",
            1,
            [
                s("name", 160),
                s("accountnumber", 20),
                s("websiteurl", 200),
                s("emailaddress1", 100),
                s("emailaddress2", 100),
                s("emailaddress3", 100),
                s("telephone1", 50),
                s("address1_city", 80),
                s("address1_country", 80),
                choice("industrycode", INDUSTRY),
                choice("customertypecode", CUSTOMER_TYPE),
                i("numberofemployees", 0, 1000000000),
                money("revenue"),
                one("primarycontactid", "contact"),
                one("originatingleadid", "lead"),
                one("msdyn_accountkpiid", "msdyn_accountkpiitem"),
                owner(),
            ],
            primary_name="name",
            collections=[Collection("contact_customer_accounts", "contact", fk="parentcustomerid")],
        ),
        entity(
            "contact",
            "contacts",
            2,
            [
                s("fullname", 160, writable=False),
                s("firstname", 50),
                s("lastname", 50),
                s("emailaddress1", 100),
                s("emailaddress2", 100),
                s("emailaddress3", 100),
                s("jobtitle", 100),
                s("telephone1", 50),
                s("mobilephone", 50),
                lookup(
                    "parentcustomerid", {"parentcustomerid_account": "account", "parentcustomerid_contact": "contact"}
                ),
                one("originatingleadid", "lead"),
                one("msdyn_contactkpiid", "msdyn_contactkpiitem"),
                owner(),
            ],
            primary_name="fullname",
        ),
        entity(
            "lead",
            "leads",
            4,
            [
                s("fullname", 160, writable=False),
                s("firstname", 50),
                s("lastname", 50),
                s("subject", 300),
                s("companyname", 100),
                s("emailaddress1", 100),
                s("emailaddress2", 100),
                s("emailaddress3", 100),
                s("jobtitle", 100),
                s("telephone1", 50),
                s("websiteurl", 200),
                one("parentaccountid", "account"),
                one("parentcontactid", "contact"),
                one("qualifyingopportunityid", "opportunity"),
                one("msdyn_leadkpiid", "msdyn_leadkpiitem"),
                owner(),
                when("createdon", writable=False),
                when("modifiedon", writable=False),
                Column("versionnumber", "bigint", writable=False),
                one("createdby", "systemuser", writable=False),
                one("modifiedby", "systemuser", writable=False),
                choice("statecode", {0: "Open", 1: "Qualified", 2: "Disqualified"}),
                choice(
                    "statuscode",
                    {
                        1: "New",
                        2: "Contacted",
                        3: "Qualified",
                        4: "Lost",
                        5: "Cannot Contact",
                        6: "No Longer Interested",
                        7: "Canceled",
                    },
                ),
            ],
            primary_name="fullname",
            system=False,
        ),
        entity(
            "opportunity",
            "opportunities",
            3,
            [
                s("name", 300),
                s("description", 2000),
                owner(),
                one("parentaccountid", "account"),
                one("parentcontactid", "contact"),
                lookup("customerid", {"customerid_account": "account", "customerid_contact": "contact"}),
                one("originatingleadid", "lead"),
                one("msdyn_opportunitykpiid", "msdyn_opportunitykpiitem"),
                money("estimatedvalue"),
                money("actualvalue"),
                day("estimatedclosedate"),
                day("actualclosedate"),
                i("closeprobability", 0, 100),
                choice("salesstage", {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}),
                when("createdon", writable=False),
                when("modifiedon", writable=False),
                Column("versionnumber", "bigint", writable=False),
                one("createdby", "systemuser", writable=False),
                one("modifiedby", "systemuser", writable=False),
                choice("statecode", {0: "Open", 1: "Won", 2: "Lost"}),
                choice("statuscode", {1: "In Progress", 2: "On Hold", 3: "Won", 4: "Canceled", 5: "Out-Sold"}),
            ],
            primary_name="name",
            system=False,
            collections=[
                Collection("opportunity_connections1", "connection", fk="record1id"),
                Collection("opportunity_connections2", "connection", fk="record2id"),
                Collection("opportunity_Teams", "team", fk="regardingobjectid"),
            ],
        ),
        entity(
            "connectionrole",
            "connectionroles",
            3231,
            [s("name", 100), choice("category", CONNECTION_CATEGORY), s("description", 2000)],
            primary_name="name",
            change_tracking=False,
        ),
        entity(
            "connection",
            "connections",
            3234,
            [
                lookup(
                    "record1id",
                    {f"record1id_{t}": t for t in ("account", "contact", "lead", "opportunity", "systemuser")},
                ),
                lookup(
                    "record2id",
                    {f"record2id_{t}": t for t in ("account", "contact", "lead", "opportunity", "systemuser")},
                ),
                one("record1roleid", "connectionrole"),
                one("record2roleid", "connectionrole"),
                one("relatedconnectionid", "connection"),
                flag("ismaster"),
                choice("record1objecttypecode", OBJECT_TYPE),
                choice("record2objecttypecode", OBJECT_TYPE),
                s("name", 500, writable=False),
                s("description", 2000),
                when("effectivestart"),
                when("effectiveend"),
            ],
            primary_name="name",
        ),
        _activity(
            "phonecall",
            4210,
            200,
            [s("phonenumber", 200), flag("directioncode", ("Incoming", "Outgoing"))],
            {0: "Open", 1: "Completed", 2: "Canceled"},
        ),
        _activity(
            "email",
            4202,
            800,
            [
                s("messageid", 320),
                flag("directioncode", ("Incoming", "Outgoing")),
                when("senton"),
                s("sender", 250),
                s("torecipients", 500),
            ],
            {0: "Open", 1: "Completed", 2: "Canceled"},
        ),
        _activity(
            "appointment",
            4201,
            200,
            [
                s("globalobjectid", 300),
                s("location", 200),
                flag("isalldayevent"),
                i("scheduleddurationminutes", 0),
            ],
            {0: "Open", 1: "Completed", 2: "Canceled", 3: "Scheduled"},
        ),
        entity(
            "activityparty",
            "activityparties",
            135,
            [
                lookup("activityid", {f"activityid_{k}": k for k in ("phonecall", "email", "appointment")}),
                lookup("partyid", {f"partyid_{t}": t for t in ("systemuser", "contact", "account", "lead")}),
                choice("participationtypemask", PARTICIPATION),
                s("addressused", 200),
                flag("ispartydeleted", writable=False),
                Column("versionnumber", "bigint", writable=False),
            ],
            primary_name=None,
            system=False,
            change_tracking=False,
        ),
        # ------------------------------------------------ relationship analytics (Dynamics 365 Sales)
        _kpi("contact", [i("msdyn_numberofopportunities", 0)]),
        _kpi("account", []),
        _kpi("lead", _activity_summary()),
        _kpi("opportunity", _activity_summary()),
        _daily("contact"),
        _daily("account"),
        _daily("lead"),
        _daily("opportunity"),
        _most_contacted("msdyn_mostcontacted", "msdyn_mostcontacteds"),
        _most_contacted("msdyn_mostcontactedby", "msdyn_mostcontactedbies"),
        _wkw("msdyn_wkwcolleaguesforcontact", "msdyn_wkwcolleaguesforcontacts"),
        _wkw("msdyn_wkwcolleaguesforcompany", "msdyn_wkwcolleaguesforcompanies"),
    ]
    return {t.logical: t for t in tables}


ENTITIES: dict[str, Entity] = _build()
BY_SET: dict[str, Entity] = {e.set_name: e for e in ENTITIES.values()}
KPI_TABLES: tuple[str, ...] = tuple(sorted(e for e in ENTITIES if e.startswith("msdyn_")))
ACTIVITIES = ("phonecall", "email", "appointment")


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Ref:
    """A lookup value: the referenced table and row id."""

    entity: str
    id: str


def to_json(column: Column, value: Any) -> Any:
    """A stored value as the Web API renders it (lookups as their id)."""
    if value is None:
        return None
    if column.kind == "lookup":
        return value.id
    if column.kind == "datetime":
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if column.kind == "date":
        return value.isoformat()
    if column.kind in ("decimal", "money"):
        return float(value)
    return value
