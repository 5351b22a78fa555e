"""Hand-written scenarios: an organisation in a small TOML file, for reproducing a case and pinning numbers.

    relinsights sandbox serve --scenario tests/scenarios/worked-example.toml

    result = load_scenario("worked-example.toml")      # validated, then built
    SandboxServer(org=result.org)                      # result.emails["2"] is email "2"'s MessageContent

The format (every key below; anything else is an error). Times are TOML date-times with an offset
(`2026-03-01T09:00:00Z`), dates are TOML dates (`2026-04-30`). People are referred to by email address,
CRM records by the `id` the file gives them.

    [tenant]
    name = "Contoso"                    # optional (default: from the first domain)
    domains = ["contoso.com"]           # verified domains, the first is the default
    now = 2026-03-10T12:00:00Z          # the sandbox clock
    seed = 1                            # optional: seeds every generated id

    [[users]]                           # people of the tenant; each has a mailbox unless mailbox = false
    email = "bob@contoso.com"           # in one of the tenant's domains
    name = "Bob Berg"                   # optional display name
    role = "seller"                     # seller (default), manager, staff, admin
    title = "Account Executive"         # optional; department optional too
    manager = "mia@contoso.com"         # optional, another user
    aliases = ["b.berg@contoso.com"]    # optional proxy addresses
    mailbox = true                      # optional
    enabled = true                      # optional (accountEnabled)

    [[accounts]]
    id = "fabrikam"
    name = "Fabrikam, Inc."
    website = "https://www.fabrikam.com"  # its domain links mail to the account (or: domain = "fabrikam.com")
    owner = "bob@contoso.com"
    team = ["carl@contoso.com"]         # optional; industry, city, country optional

    [[contacts]]
    id = "ann"
    name = "Ann Smith"                  # or first_name / last_name
    email = "ann@fabrikam.com"
    account = "fabrikam"                # optional parent account; title, phone optional

    [[leads]]
    id = "lee"
    name = "Lee Park"
    email = "lee@northwind.example"
    company = "Northwind"               # optional
    owner = "bob@contoso.com"           # optional
    topic = "Interest in the platform"
    created = 2026-02-01T09:00:00Z
    state = "open"                      # open, qualified, disqualified

    [[opportunities]]
    id = "fab-platform"
    name = "Fabrikam - Platform"
    account = "fabrikam"
    owner = "bob@contoso.com"
    team = ["dan@contoso.com"]          # optional sales team
    stakeholders = ["ann"]              # optional, contact ids
    state = "open"                      # open, won, lost
    created = 2026-01-15T09:00:00Z
    close = 2026-04-30                  # estimated (open) or actual (won, lost) close date
    value = 50000.0

    [[emails]]                          # delivered as Exchange would: the sender's Sent Items (an internal
    id = "1"                            # sender) and each internal recipient's Inbox
    from = "ann@fabrikam.com"
    to = ["bob@contoso.com"]            # to, cc, bcc: at least one recipient
    time = 2026-03-01T09:00:00Z         # not after tenant.now
    subject = "Pricing"                 # optional
    conversation = "X"                  # optional: emails naming the same one share a conversationId
    in_reply_to = "0"                   # optional: an earlier email (threads it, and adds In-Reply-To)
    folder = "Inbox/Fabrikam"           # optional: where recipients file it; or a table per person,
                                        # e.g. { "bob@contoso.com" = "archive" } (the sender's copy too)
    read = true                         # optional: recipients have read it (default false)
    message_id = "<abc@fabrikam.com>"   # optional internetMessageId

    [[meetings]]
    id = "4"
    organizer = "bob@contoso.com"       # a user, or an outsider (then an internal attendee is needed)
    subject = "Review"                  # optional
    start = 2026-03-05T10:00:00Z
    end = 2026-03-05T11:00:00Z
    all_day = false                     # optional; online, location optional
    attendees = [ { email = "ann@fabrikam.com", response = "accepted" },
                  { email = "carl@contoso.com", response = "declined", type = "optional" } ]
    recurrence = { pattern = "weekly", interval = 1, days = ["thursday"], until = 2026-04-30 }  # optional
    cancelled = false                   # optional: cancelled by its organizer

    [[calls]]                           # Dataverse phone calls
    id = "c1"
    user = "bob@contoso.com"
    contact = "ann"                     # a contact or lead id (or its email)
    direction = "outgoing"              # outgoing (made) or incoming (received)
    start = 2026-03-03T15:00:00Z
    end = 2026-03-03T15:20:00Z          # or duration = 20 (minutes)
    subject = "Follow-up"               # optional
    regarding = "fab-platform"          # optional: any record id

Responses are none, notResponded, accepted, tentativelyAccepted or declined. Loading checks every
reference and reports all problems at once, each as `key.path: what is expected`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import ids
from .extensions import make_external_organizer, set_conversation
from .model import (
    WELL_KNOWN_FOLDERS,
    Company,
    Contact,
    Lead,
    Meeting,
    MessageContent,
    Opportunity,
    Org,
    PhoneCall,
    Recurrence,
    User,
)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_WELL_KNOWN = {n: n for n, _, _ in WELL_KNOWN_FOLDERS} | {
    d.replace(" ", "").lower(): n for n, d, _ in WELL_KNOWN_FOLDERS
}


class ScenarioError(Exception):
    """The scenario cannot be loaded; `problems` lists each as 'key.path: what is expected'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"scenario error in {self.source}:", *(f"  - {p}" for p in self.problems)]
        lines.append("the format is described in relinsights/sandbox/scenario.py")
        return "\n".join(lines)


# ---------------------------------------------------------------- the format


def _address(v: str) -> str:
    v = v.strip().lower()
    local, _, domain = v.partition("@")
    if not local or "." not in domain or " " in v:
        raise ValueError(f"an email address like name@example.com, got {v!r}")
    return v


def _domain(v: str) -> str:
    v = v.strip().lower().strip(".")
    if "." not in v or "@" in v or " " in v:
        raise ValueError(f"a domain like contoso.com, got {v!r}")
    return v


Address = Annotated[str, AfterValidator(_address)]
DomainName = Annotated[str, AfterValidator(_domain)]
Key = Annotated[str, Field(min_length=1, max_length=100)]
Response = Literal["none", "notResponded", "accepted", "tentativelyAccepted", "declined"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TenantSpec(_Strict):
    name: str | None = None
    domains: list[DomainName] = Field(min_length=1)
    now: AwareDatetime
    seed: int = 1


class UserSpec(_Strict):
    email: Address
    name: str | None = None
    role: Literal["seller", "manager", "staff", "admin"] = "seller"
    title: str | None = None
    department: str | None = None
    manager: Address | None = None
    aliases: list[Address] = []
    mailbox: bool = True
    enabled: bool = True


class _Named(_Strict):
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None

    def split_name(self, email: str) -> tuple[str, str]:
        if self.first_name or self.last_name:
            return self.first_name or "", self.last_name or ""
        if self.name:
            first, _, last = self.name.strip().rpartition(" ")
            return first, last
        return "", email.split("@")[0]


class AccountSpec(_Strict):
    id: Key
    name: str
    website: str | None = None
    domain: DomainName | None = None
    owner: Address
    team: list[Address] = []
    industry: str = ""
    city: str = ""
    country: str = ""

    @model_validator(mode="after")
    def _has_domain(self) -> AccountSpec:
        if self.website is None and self.domain is None:
            raise ValueError("give the account a website (or a domain)")
        return self

    @property
    def account_domain(self) -> str:
        if self.domain:
            return self.domain
        assert self.website is not None
        url = self.website if "://" in self.website else f"https://{self.website}"
        host = (urlsplit(url).hostname or "").lower()
        return host.removeprefix("www.")


class ContactSpec(_Named):
    id: Key
    email: Address
    account: Key | None = None
    title: str | None = None
    phone: str | None = None


class LeadSpec(_Named):
    id: Key
    email: Address
    company: str | None = None
    owner: Address | None = None
    topic: str
    created: AwareDatetime
    state: Literal["open", "qualified", "disqualified"] = "open"


class OpportunitySpec(_Strict):
    id: Key
    name: str
    account: Key
    owner: Address
    team: list[Address] = []
    stakeholders: list[Key] = []
    state: Literal["open", "won", "lost"] = "open"
    created: AwareDatetime
    close: date
    value: Annotated[float, Field(ge=0)] = 0.0


class EmailSpec(_Strict):
    id: Key
    sender: Address = Field(alias="from")
    to: list[Address] = []
    cc: list[Address] = []
    bcc: list[Address] = []
    time: AwareDatetime
    subject: str | None = None
    conversation: Key | None = None
    in_reply_to: Key | None = None
    folder: str | dict[Address, str] | None = None
    read: bool = False
    message_id: str | None = None

    @model_validator(mode="after")
    def _has_recipient(self) -> EmailSpec:
        if not (self.to or self.cc or self.bcc):
            raise ValueError("an email needs at least one recipient (to, cc or bcc)")
        return self


class AttendeeSpec(_Strict):
    email: Address
    response: Response = "none"
    type: Literal["required", "optional", "resource"] = "required"


class RecurrenceSpec(_Strict):
    pattern: Literal["daily", "weekly"]
    interval: Annotated[int, Field(ge=1, le=99)] = 1
    days: list[Weekday] = []
    until: date


class MeetingSpec(_Strict):
    id: Key
    organizer: Address
    subject: str | None = None
    start: AwareDatetime
    end: AwareDatetime
    all_day: bool = False
    online: bool = False
    location: str | None = None
    attendees: list[AttendeeSpec] = []
    recurrence: RecurrenceSpec | None = None
    cancelled: bool = False
    created: AwareDatetime | None = None

    @model_validator(mode="after")
    def _times(self) -> MeetingSpec:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.recurrence and self.recurrence.until < self.start.date():
            raise ValueError("recurrence.until is before the first occurrence")
        return self


class CallSpec(_Strict):
    id: Key
    user: Address
    contact: str
    direction: Literal["outgoing", "incoming"]
    start: AwareDatetime
    end: AwareDatetime | None = None
    duration: Annotated[int, Field(ge=0, le=24 * 60)] | None = None
    subject: str | None = None
    regarding: Key | None = None

    @model_validator(mode="after")
    def _length(self) -> CallSpec:
        if (self.end is None) == (self.duration is None):
            raise ValueError("give either end or duration (minutes)")
        if self.end is not None and self.end < self.start:
            raise ValueError("end must not be before start")
        return self

    @property
    def minutes(self) -> int:
        if self.duration is not None:
            return self.duration
        assert self.end is not None
        return round((self.end - self.start).total_seconds() / 60)


class Scenario(_Strict):
    tenant: TenantSpec
    users: list[UserSpec] = Field(min_length=1)
    accounts: list[AccountSpec] = []
    contacts: list[ContactSpec] = []
    leads: list[LeadSpec] = []
    opportunities: list[OpportunitySpec] = []
    emails: list[EmailSpec] = []
    meetings: list[MeetingSpec] = []
    calls: list[CallSpec] = []


# ---------------------------------------------------------------- loading and checking


def parse_scenario(data: dict[str, Any], source: str = "<memory>") -> Scenario:
    """Validate a scenario given as a dict (TOML already parsed); raises ScenarioError."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, _format_errors(exc, data)) from None
    problems = _cross_check(scenario)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def read_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(p), [f"not valid TOML: {exc}"]) from None
    return parse_scenario(data, str(p))


def _label(section: str, i: int, data: dict[str, Any]) -> str:
    items = data.get(section)
    item = items[i] if isinstance(items, list) and i < len(items) else None
    if isinstance(item, dict):
        key = item.get("id") or item.get("email")
        if isinstance(key, str):
            return f"{section}[{i}] ({key})"
    return f"{section}[{i}]"


def _format_errors(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        parts: list[str] = []
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            parts.append(_label(loc[0], loc[1], data))
            loc = loc[2:]
        for item in loc:
            if isinstance(item, int):
                parts.append(f"[{item}]")
            elif item not in ("function-after", "function-before") and "[" not in str(item):
                parts.append(("." if parts else "") + str(item))
        path = "".join(parts) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt, or not part of the scenario format)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "timezone_aware":
            msg = "a date-time with an offset is expected, e.g. 2026-03-01T09:00:00Z"
        out.append(f"{path}: {msg}")
    return out


def _cross_check(s: Scenario) -> list[str]:
    """References between sections; the per-item rules are in the models."""
    problems: list[str] = []
    domains = s.tenant.domains

    def internal(addr: str) -> bool:
        dom = addr.rsplit("@", 1)[1]
        return any(dom == d or dom.endswith("." + d) for d in domains)

    def unique(section: str, keys: list[str]) -> set[str]:
        seen: set[str] = set()
        for i, k in enumerate(keys):
            if k in seen:
                problems.append(f"{section}[{i}] ({k}): the same id (or email) appears twice in {section}")
            seen.add(k)
        return seen

    users = unique("users", [u.email for u in s.users])
    mailboxes = {u.email for u in s.users if u.mailbox} | {a for u in s.users if u.mailbox for a in u.aliases}
    accounts = unique("accounts", [a.id for a in s.accounts])
    contacts = unique("contacts", [c.id for c in s.contacts])
    leads = unique("leads", [x.id for x in s.leads])
    opps = unique("opportunities", [o.id for o in s.opportunities])
    unique("emails", [e.id for e in s.emails])
    unique("meetings", [m.id for m in s.meetings])
    unique("calls", [c.id for c in s.calls])
    people = contacts | leads | {c.email for c in s.contacts} | {x.email for x in s.leads}
    records = accounts | contacts | leads | opps

    def need(cond: bool, where: str, what: str) -> None:
        if not cond:
            problems.append(f"{where}: {what}")

    user_list = ", ".join(sorted(users))
    for i, u in enumerate(s.users):
        where = f"users[{i}] ({u.email})"
        need(internal(u.email), f"{where}.email", f"not in the tenant's domains ({', '.join(domains)})")
        need(u.manager is None or u.manager in users, f"{where}.manager", f"not a user ({user_list})")
    for i, a in enumerate(s.accounts):
        where = f"accounts[{i}] ({a.id})"
        need(a.owner in users, f"{where}.owner", f"not a user ({user_list})")
        for t in a.team:
            need(t in users, f"{where}.team", f"{t} is not a user")
    for i, c in enumerate(s.contacts):
        need(c.account is None or c.account in accounts, f"contacts[{i}] ({c.id}).account", "no account has this id")
    for i, x in enumerate(s.leads):
        need(x.owner is None or x.owner in users, f"leads[{i}] ({x.id}).owner", f"not a user ({user_list})")
        need(x.created <= s.tenant.now, f"leads[{i}] ({x.id}).created", "after tenant.now")
    for i, o in enumerate(s.opportunities):
        where = f"opportunities[{i}] ({o.id})"
        need(o.account in accounts, f"{where}.account", "no account has this id")
        need(o.owner in users, f"{where}.owner", f"not a user ({user_list})")
        for t in o.team:
            need(t in users, f"{where}.team", f"{t} is not a user")
        for k in o.stakeholders:
            need(k in contacts, f"{where}.stakeholders", f"{k!r} is not a contact id")
        need(o.created <= s.tenant.now, f"{where}.created", "after tenant.now")
    thread: dict[str, str | None] = {}  # email id -> its conversation (named, or inherited by replies)
    for i, e in sorted(enumerate(s.emails), key=lambda ie: ie[1].time):
        where = f"emails[{i}] ({e.id})"
        need(e.time <= s.tenant.now, f"{where}.time", "after tenant.now: mail cannot arrive from the future")
        conv = e.conversation
        if e.in_reply_to is not None:
            if e.in_reply_to not in thread:
                problems.append(f"{where}.in_reply_to: no earlier email has this id")
            else:
                parent = thread[e.in_reply_to]
                if conv is not None and parent != conv:
                    theirs = f"conversation {parent!r}" if parent else "a conversation of its own"
                    problems.append(f"{where}.conversation: {conv!r}, but the email it replies to is in {theirs}")
                conv = conv or parent
        if isinstance(e.folder, dict):
            for who, folder in e.folder.items():
                holders = {e.sender, *e.to, *e.cc, *e.bcc} & mailboxes
                need(
                    who in holders, f"{where}.folder.{who}", "not a user with a mailbox among its sender and recipients"
                )
                problems += _folder_problem(f"{where}.folder.{who}", folder)
        elif e.folder is not None:
            problems += _folder_problem(f"{where}.folder", e.folder)
        thread[e.id] = conv
    for i, m in enumerate(s.meetings):
        where = f"meetings[{i}] ({m.id})"
        if m.organizer in users:
            need(m.organizer in mailboxes, f"{where}.organizer", "this user has no mailbox")
        else:
            need(not internal(m.organizer), f"{where}.organizer", "an internal address that is not a user")
            need(
                any(a.email in mailboxes for a in m.attendees),
                f"{where}.attendees",
                "a meeting organised outside the tenant needs a user with a mailbox among its attendees",
            )
    for i, call in enumerate(s.calls):
        where = f"calls[{i}] ({call.id})"
        need(call.user in users, f"{where}.user", f"not a user ({user_list})")
        need(
            call.contact in people or call.contact.lower() in people,
            f"{where}.contact",
            "no contact or lead has this id or email",
        )
        need(call.regarding is None or call.regarding in records, f"{where}.regarding", "no record has this id")
    return problems


def _folder_problem(where: str, folder: str) -> list[str]:
    head = folder.split("/", 1)[0].replace(" ", "").lower()
    if head in _WELL_KNOWN:
        return []
    names = ", ".join(sorted({d for _, d, _ in WELL_KNOWN_FOLDERS} - {"Top of Information Store"}))
    return [f"{where}: a well-known folder or a path under one, like Inbox/Customers ({names})"]


def _folder_path(folder: str) -> str:
    head, _, rest = folder.partition("/")
    wk = _WELL_KNOWN[head.replace(" ", "").lower()]
    return f"{wk}/{rest}" if rest else wk


# ---------------------------------------------------------------- building


@dataclass
class ScenarioResult:
    """The built org, and what each scenario id became (for tests and for reading the sandbox's answers)."""

    org: Org
    scenario: Scenario
    emails: dict[str, MessageContent] = field(default_factory=dict)
    meetings: dict[str, Meeting] = field(default_factory=dict)
    calls: dict[str, PhoneCall] = field(default_factory=dict)


def load_scenario(path: str | Path) -> ScenarioResult:
    """Read, validate and build a scenario file; raises ScenarioError."""
    return build_org(read_scenario(path))


def build_org(s: Scenario) -> ScenarioResult:
    t = s.tenant
    seed, first = t.seed, t.domains[0]
    org = Org(
        seed=seed, name=t.name or first.split(".")[0].title(), tenant_id=ids.guid(seed, "tenant", first), now=t.now
    )
    for d in t.domains:
        org.add_domain(d, is_default=d == first)
    initial = f"{first.split('.')[0]}.onmicrosoft.com"
    if initial not in t.domains:
        org.add_domain(initial, is_initial=True)
    result = ScenarioResult(org, s)
    _users(org, s)
    names = _crm(org, s)
    _emails(org, s, names, result)
    _meetings(org, s, names, result)
    for c in s.calls:
        call = PhoneCall(
            id=ids.guid(seed, "call", c.id),
            user_id=org.user(c.user).id,
            contact_id=_person_id(s, c.contact),
            start=c.start,
            duration_minutes=c.minutes,
            direction=c.direction,
            subject=c.subject or f"Call {c.id}",
        )
        org.crm.phone_calls.append(call)
        result.calls[c.id] = call
    return result


def _users(org: Org, s: Scenario) -> None:
    for u in s.users:
        local = u.email.split("@")[0]
        display = u.name or " ".join(p.title() for p in local.replace("_", ".").split(".") if p)
        first, _, last = display.rpartition(" ")
        org.add_user(
            User(
                id=ids.guid(org.seed, "user", u.email),
                display_name=display,
                given_name=first or display,
                surname=last if first else None,
                user_principal_name=u.email,
                mail=u.email if u.mailbox else None,
                proxy_addresses=[f"SMTP:{u.email}", *(f"smtp:{a}" for a in u.aliases)] if u.mailbox else [],
                account_enabled=u.enabled,
                has_mailbox=u.mailbox,
                job_title=u.title,
                department=u.department,
                created=org.created,
                role=u.role,
            )
        )
    for u in s.users:
        if u.manager:
            org.user(u.email).manager_id = org.user(u.manager).id


def _person_id(s: Scenario, key: str) -> str:
    """The Contact id of a contact or lead named by id or email."""
    k = key.lower()
    for c in s.contacts:
        if k in (c.id.lower(), c.email):
            return ids.guid(s.tenant.seed, "contact", c.id)
    for x in s.leads:
        if k in (x.id.lower(), x.email):
            return ids.guid(s.tenant.seed, "lead-contact", x.id)
    raise KeyError(key)  # cannot happen after _cross_check


def _crm(org: Org, s: Scenario) -> dict[str, str]:
    """CRM seeds; returns address -> display name for the people outside the tenant."""
    seed, crm, names = org.seed, org.crm, {}
    for a in s.accounts:
        crm.companies[ids.guid(seed, "account", a.id)] = Company(
            id=ids.guid(seed, "account", a.id),
            name=a.name,
            domain=a.account_domain,
            industry=a.industry,
            city=a.city,
            country=a.country,
            owner_id=org.user(a.owner).id,
            relationship="scenario",
            team_ids=[org.user(x).id for x in a.team],
        )
    for c in s.contacts:
        first, last = c.split_name(c.email)
        company = ids.guid(seed, "account", c.account) if c.account else None
        contact = Contact(
            id=ids.guid(seed, "contact", c.id),
            first_name=first,
            last_name=last,
            email=c.email,
            company_id=company,
            job_title=c.title,
            phone=c.phone,
        )
        crm.contacts[contact.id] = contact
        if company:
            crm.companies[company].contact_ids.append(contact.id)
        names[c.email] = contact.display_name.strip()
    for x in s.leads:
        first, last = x.split_name(x.email)
        contact = Contact(ids.guid(seed, "lead-contact", x.id), first, last, x.email, None, is_lead=True)
        crm.contacts[contact.id] = contact
        crm.leads[ids.guid(seed, "lead", x.id)] = Lead(
            id=ids.guid(seed, "lead", x.id),
            contact_id=contact.id,
            owner_id=org.user(x.owner).id if x.owner else None,
            topic=x.topic,
            created=x.created,
            state=x.state,
        )
        names[x.email] = contact.display_name.strip()
    for o in s.opportunities:
        crm.opportunities[ids.guid(seed, "opportunity", o.id)] = Opportunity(
            id=ids.guid(seed, "opportunity", o.id),
            name=o.name,
            company_id=ids.guid(seed, "account", o.account),
            owner_id=org.user(o.owner).id,
            state=o.state,
            estimated_value=o.value,
            close_date=o.close,
            created=o.created,
            team_ids=[org.user(x).id for x in o.team],
            stakeholder_ids=[ids.guid(seed, "contact", k) for k in o.stakeholders],
        )
    return names


def _emails(org: Org, s: Scenario, names: dict[str, str], result: ScenarioResult) -> None:
    convs: dict[str, list[EmailSpec]] = {}
    for e in sorted(s.emails, key=lambda e: e.time):
        if e.conversation:
            convs.setdefault(e.conversation, []).append(e)
    for e in sorted(s.emails, key=lambda e: e.time):  # stable: file order among equal times
        recipients = {*e.to, *e.cc, *e.bcc}
        folders: dict[str, str] = {}
        if isinstance(e.folder, str):
            folders = {u.id: _folder_path(e.folder) for a in recipients if (u := org.find_user(a)) and u.has_mailbox}
        elif isinstance(e.folder, dict):
            folders = {org.user(a).id: _folder_path(f) for a, f in e.folder.items()}
        parent = result.emails[e.in_reply_to] if e.in_reply_to else None
        subject = e.subject or (parent.subject if parent else f"Conversation {e.conversation or e.id}")
        read = [u.id for a in recipients if (u := org.find_user(a))] if e.read else []
        content = org.deliver_message(
            e.sender,
            e.to,
            e.cc,
            e.bcc,
            subject=subject,
            sent=e.time,
            reply_to=parent,
            names=names,
            folders=folders,
            read_by=read,
            internet_message_id=e.message_id,
        )
        if e.conversation:
            thread = convs[e.conversation]
            set_conversation(org, content, e.conversation, thread[0].time, thread.index(e))
        sender = org.find_user(e.sender)
        if sender is not None and sender.id in folders:
            own = next(m for m in org.copies_of(content.internet_message_id) if m.mailbox == sender.id)
            org.move_message(sender.id, own.id, folders[sender.id], when=e.time)
        result.emails[e.id] = content


def _meetings(org: Org, s: Scenario, names: dict[str, str], result: ScenarioResult) -> None:
    for m in s.meetings:
        outsider = org.find_user(m.organizer) is None
        attendees = [(a.email, a.type) for a in m.attendees]
        # An invitation from outside: created by an internal attendee, then handed to its real organizer.
        host = (
            next(a.email for a in m.attendees if (u := org.find_user(a.email)) and u.has_mailbox)
            if outsider
            else m.organizer
        )
        rec = None
        if m.recurrence:
            r = m.recurrence
            days = tuple(r.days) or (WEEKDAYS[m.start.weekday()],)
            rec = Recurrence(r.pattern, r.interval, days, m.start.date(), r.until)
        meeting = org.create_event(
            host,
            attendees,
            subject=m.subject or f"Meeting {m.id}",
            start=m.start,
            end=m.end,
            is_all_day=m.all_day,
            is_online=m.online,
            location=m.location,
            recurrence=rec,
            responses={a.email: a.response for a in m.attendees},
            names=names,
            created=m.created or min(org.now(), m.start - timedelta(days=1)),
        )
        if outsider:
            make_external_organizer(org, meeting, (names.get(m.organizer, m.organizer), m.organizer))
        if m.cancelled:
            org.cancel_event(meeting.uid)
        result.meetings[m.id] = meeting
