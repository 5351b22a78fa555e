"""A deterministic (seeded) organisation: Contoso's sellers and managers, their customers, and a history
of mail and meetings whose rhythm depends on how healthy each relationship is.

The history is a discrete-event simulation: threads arrive per relationship, replies are scheduled with
human delays, recipients read, file and delete mail, meetings are proposed, answered and sometimes
cancelled. `Org.advance()` runs the same simulation over the elapsed period (the `live` hook), so
incremental delta rounds see new mail, reads, moves, deletes and cancellations.

CRM seeds (companies, contacts, opportunities, leads, phone calls) are kept in `org.crm` for the
Dataverse emulator.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import partial

from . import ids
from .model import (
    Company,
    Contact,
    Group,
    Lead,
    MessageContent,
    Opportunity,
    Org,
    PhoneCall,
    Recurrence,
    SandboxError,
    User,
)


@dataclass(frozen=True)
class OrgSize:
    name: str
    sellers: int
    managers: int
    staff: int
    companies: int
    prospects: int
    contacts: tuple[int, int]
    history_days: int
    future_days: int
    newsletters_per_week: float
    internal_per_week: float


SIZES = {
    "small": OrgSize("small", 5, 1, 2, 12, 3, (2, 4), 120, 45, 2.0, 1.5),
    "medium": OrgSize("medium", 50, 6, 12, 300, 40, (2, 6), 365, 90, 2.0, 1.5),
    # 1,000 mailboxes and about a million messages: generation takes minutes and several GB; benchmarks only.
    "large": OrgSize("large", 900, 60, 40, 6000, 400, (2, 6), 365, 90, 3.0, 2.0),
}

FIRST = [
    "Anna",
    "Bruno",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Karin",
    "Lars",
    "Maya",
    "Nils",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wim",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Amir",
    "Bianca",
    "Chen",
    "Daria",
    "Emil",
    "Fatima",
    "Gustav",
    "Hana",
    "Igor",
    "Julia",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Oscar",
    "Priya",
    "Rafael",
    "Sofia",
    "Tomas",
    "Ulla",
    "Viktor",
    "Wanda",
    "Yara",
    "Aiko",
    "Bjorn",
    "Celine",
    "Diego",
    "Esra",
    "Felix",
    "Giulia",
    "Henrik",
    "Isabel",
    "Jakob",
    "Kenji",
    "Leila",
    "Marco",
    "Nadia",
    "Omar",
    "Petra",
    "Ravi",
    "Sara",
    "Timo",
    "Ugo",
    "Valentina",
    "Wei",
    "Ximena",
    "Yannick",
    "Zainab",
]
LAST = [
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Olsen",
    "Petrov",
    "Quist",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Vargas",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmermann",
    "Almeida",
    "Becker",
    "Castro",
    "Dahl",
    "Ekberg",
    "Ferreira",
    "Gruber",
    "Horvat",
    "Ishikawa",
    "Jensen",
    "Keller",
    "Laine",
    "Meyer",
    "Nakamura",
    "Ortega",
    "Peeters",
    "Rahman",
    "Santos",
    "Thomsen",
    "Urbano",
    "Virtanen",
    "Wagner",
    "Young",
    "Zeller",
    "Andersen",
    "Bauer",
    "Conti",
    "Duarte",
    "Engel",
    "Fontaine",
    "Greco",
    "Holm",
    "Ibrahim",
    "Juhl",
    "Kaur",
    "Lopez",
    "Mancini",
    "Nielsen",
    "Oliveira",
    "Park",
    "Richter",
    "Silva",
    "Torres",
    "Varga",
    "Walsh",
]
PREFIX = [
    "Northwind",
    "Fabrikam",
    "Adatum",
    "Tailspin",
    "Litware",
    "Woodgrove",
    "Proseware",
    "Wingtip",
    "Alpine",
    "Coho",
    "Lamna",
    "Relecloud",
    "Southridge",
    "Trey",
    "VanArsdel",
    "Lucerne",
    "Consolidated",
    "Fourth",
    "Humongous",
    "Margie",
    "Blue",
    "Yonder",
    "Bellows",
    "Contour",
    "Graphic",
    "Wide",
    "Nod",
    "First",
    "Tasman",
    "Munson",
    "Baltic",
    "Nordic",
    "Harbor",
    "Summit",
    "Granite",
    "Cedar",
    "Silver",
    "Iron",
    "Meridian",
    "Aurora",
    "Vertex",
    "Quantum",
    "Pioneer",
    "Horizon",
    "Atlas",
    "Polar",
    "Keystone",
    "Redwood",
    "Sterling",
    "Oakridge",
    "Riverside",
    "Bright",
    "Crescent",
    "Evergreen",
    "Falcon",
    "Golden",
    "Highland",
    "Ivory",
    "Juniper",
    "Kestrel",
    "Lakeside",
    "Maple",
]
INDUSTRY = [
    ("Logistics", "Logistics"),
    ("Traders", "Wholesale"),
    ("Health", "Healthcare"),
    ("Bank", "Finance"),
    ("Energy", "Energy"),
    ("Foods", "Food"),
    ("Systems", "Software"),
    ("Motors", "Automotive"),
    ("Pharma", "Pharma"),
    ("Insurance", "Insurance"),
    ("Textiles", "Retail"),
    ("Robotics", "Manufacturing"),
    ("Media", "Media"),
    ("Airlines", "Travel"),
    ("Construction", "Construction"),
    ("Labs", "Research"),
    ("Telecom", "Telecom"),
    ("Chemicals", "Chemicals"),
    ("Hotels", "Hospitality"),
    ("Analytics", "Software"),
]
LEGAL = [
    ("GmbH", "de", "Munich", "Germany"),
    ("Ltd", "co.uk", "London", "United Kingdom"),
    ("Inc.", "com", "Seattle", "United States"),
    ("B.V.", "nl", "Rotterdam", "Netherlands"),
    ("S.A.", "fr", "Lyon", "France"),
    ("AG", "ch", "Zurich", "Switzerland"),
    ("AB", "se", "Malmo", "Sweden"),
    ("Oy", "fi", "Espoo", "Finland"),
    ("LLC", "com", "Austin", "United States"),
    ("plc", "co.uk", "Leeds", "United Kingdom"),
]
FREE_MAIL = ["gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "gmx.de"]
NOISE_SENDERS = [
    ("SaaS Weekly", "newsletter@saasweekly.io", "SaaS Weekly #{n}: pricing pages that convert"),
    ("TechSummit Events", "no-reply@events.techsummit.com", "Your TechSummit {year} agenda is ready"),
    ("CRM Alerts", "notifications@crm-alerts.net", "Daily digest: {n} records changed"),
    ("Expense Bot", "noreply@expenses.contoso-tools.com", "Expense report #{n} approved"),
    ("Mail Delivery System", "mailer-daemon@contoso.com", "Undeliverable: Follow-up {n}"),
]
TOPICS = [
    "pricing",
    "the renewal",
    "the pilot",
    "onboarding",
    "the SLA",
    "the integration",
    "next quarter",
    "the security review",
    "licences",
    "the rollout plan",
    "support tickets",
    "the roadmap",
]
SUBJECTS = [
    "Proposal for {company}",
    "Follow-up on {topic}",
    "Quote {n} for {company}",
    "Question about {topic}",
    "{company} x Contoso: next steps",
    "Re-connecting about {topic}",
    "Invoice {n}",
    "Notes from our call",
    "Intro: {seller} <> {contact}",
    "Renewal {year}",
]
INTERNAL_SUBJECTS = [
    "Forecast review",
    "Deal desk: {company}",
    "Pipeline update week {week}",
    "Can you cover {company}?",
    "Pricing approval for {company}",
    "Team offsite planning",
    "Territory changes",
]
PROFILES = {
    # kind: (threads/week, contact reply prob, contact delay median h, seller reply prob, seller delay h,
    #        meetings/month, share of threads the contact starts)
    "healthy": (1.2, 0.85, 4.0, 0.9, 2.0, 2.0, 0.35),
    "cooling": (1.0, 0.75, 8.0, 0.85, 3.0, 1.5, 0.3),
    "one_sided": (0.8, 0.12, 60.0, 0.8, 4.0, 0.3, 0.05),
    "new": (1.5, 0.8, 5.0, 0.9, 2.0, 2.0, 0.3),
    "dormant": (0.9, 0.7, 10.0, 0.8, 4.0, 1.0, 0.3),
}


@dataclass(eq=False)
class Relationship:
    company: Company
    seller: User
    contacts: list[Contact]
    kind: str
    filing: str | None = None  # the seller files this account's mail under Inbox/Customers/<name>
    manager: User | None = None
    teammate: User | None = None

    def active_factor(self, at: datetime, now0: datetime) -> float:
        """How active the relationship is at a time (going cold, new, dormant relationships change)."""
        days_before = (now0 - at).total_seconds() / 86400
        if self.kind == "cooling":
            return 1.0 if days_before > 50 else 0.15
        if self.kind == "new":
            return 1.0 if days_before < 35 else 0.0
        if self.kind == "dormant":
            return 1.0 if days_before > 110 else 0.0
        return 1.0


@dataclass(order=True)
class _Action:
    at: datetime
    n: int
    run: Callable[[], None] = field(compare=False)


class Generator:
    def __init__(self, org: Org, size: OrgSize, seed: int) -> None:
        self.org = org
        self.size = size
        self.rng = random.Random(seed)
        self.seed = seed
        self.now0 = org.now()
        self.queue: list[_Action] = []
        self._n = 0
        self.domain = "contoso.com"
        self.alias_domain = "contoso.eu"
        self.sellers: list[User] = []
        self.managers: list[User] = []
        self.staff: list[User] = []
        self.relationships: list[Relationship] = []
        self.names: dict[str, str] = {}  # external address -> display name
        self.counts: dict[str, int] = {}
        self._sim_end = self.now0
        self._live = False

    # ------------------------------------------------------------ build

    def build(self) -> Org:
        self._directory()
        self._customers()
        start = self.now0 - timedelta(days=self.size.history_days)
        self.org.clock.set(start)  # the history is lived through, so every timestamp is the clock's
        self._recurring_meetings(start)
        self.simulate(start, self.now0)
        self.org.clock.set(self.now0)
        self._quirks()
        self._live = True
        self.org.activity = self.live
        return self.org

    def _person(self, i: int, salt: str) -> tuple[str, str]:
        r = random.Random(f"{self.seed}:{salt}:{i}")
        return r.choice(FIRST), r.choice(LAST)

    def _add_internal(
        self, first: str, last: str, role: str, title: str, dept: str, *, enabled: bool = True, mailbox: bool = True
    ) -> User:
        local = f"{first}.{last}".lower()
        n = 2
        while self.org.find_user(f"{local}@{self.domain}"):
            local = f"{first}.{last}{n}".lower()
            n += 1
        upn = f"{local}@{self.domain}"
        proxies = (
            [
                f"SMTP:{upn}",
                f"smtp:{first[0].lower()}{last.lower()}@{self.domain}",
                f"smtp:{local}@{self.alias_domain}",
                f"smtp:{local}@contoso.onmicrosoft.com",
            ]
            if mailbox
            else []
        )
        u = User(
            id=ids.guid(self.seed, "user", upn),
            display_name=f"{first} {last}",
            given_name=first,
            surname=last,
            user_principal_name=upn,
            mail=upn if mailbox else None,
            proxy_addresses=proxies,
            account_enabled=enabled,
            has_mailbox=mailbox,
            job_title=title,
            department=dept,
            office_location=self.rng.choice(["Amsterdam", "Munich", "London", "Seattle"]),
            business_phones=[f"+1 425 555 {self.rng.randint(1000, 9999)}"],
            mobile_phone=None,
            created=self.now0 - timedelta(days=self.rng.randint(200, 1500)),
            role=role,
        )
        return self.org.add_user(u)

    def _directory(self) -> None:
        org = self.org
        org.add_domain(self.domain, is_default=True)
        org.add_domain("contoso.onmicrosoft.com", is_initial=True)
        org.add_domain(self.alias_domain)
        org.add_domain("contoso.io", is_verified=False)
        for i in range(self.size.managers):
            f, last = self._person(i, "manager")
            self.managers.append(self._add_internal(f, last, "manager", "Sales Manager", "Sales"))
        for i in range(self.size.sellers):
            f, last = self._person(i, "seller")
            u = self._add_internal(
                f,
                last,
                "seller",
                self.rng.choice(["Account Executive", "Account Manager", "Sales Representative"]),
                "Sales",
            )
            u.manager_id = self.managers[i % len(self.managers)].id
            self.sellers.append(u)
        for i in range(self.size.staff):
            f, last = self._person(i, "staff")
            self.staff.append(
                self._add_internal(
                    f,
                    last,
                    "staff",
                    self.rng.choice(["Solutions Engineer", "Customer Success Manager", "Sales Operations Analyst"]),
                    "Sales Operations",
                )
            )
        admin = self._add_internal("Irene", "Admin", "admin", "IT Administrator", "IT")
        nolic = self._add_internal("Paul", "Contractor", "seller", "Sales Contractor", "Sales", mailbox=False)
        former = self._add_internal("Frida", "Former", "seller", "Account Executive", "Sales", enabled=False)
        former.manager_id = self.managers[0].id
        self.former = former
        # Groups: Sales (mail-enabled) with nested regional teams; the unlicensed and disabled users are in it.
        half = max(1, len(self.sellers) // 2)
        regions = []
        for name, members in (("Sales EMEA", self.sellers[:half]), ("Sales Americas", self.sellers[half:])):
            g = org.add_group(
                Group(
                    id=ids.guid(self.seed, "group", name),
                    display_name=name,
                    mail_nickname=name.replace(" ", ""),
                    member_ids=[u.id for u in members],
                    created=org.created,
                )
            )
            regions.append(g.id)
        mgr = org.add_group(
            Group(
                id=ids.guid(self.seed, "group", "Sales Managers"),
                display_name="Sales Managers",
                mail_nickname="SalesManagers",
                member_ids=[u.id for u in self.managers],
                created=org.created,
            )
        )
        self.sales_group = org.add_group(
            Group(
                id=ids.guid(self.seed, "group", "Sales"),
                display_name="Sales",
                mail_nickname="sales",
                description="Everyone who sells, directly or nested",
                mail=f"sales@{self.domain}",
                mail_enabled=True,
                member_ids=[*regions, mgr.id, nolic.id, former.id],
                created=org.created,
            )
        )
        org.add_group(
            Group(
                id=ids.guid(self.seed, "group", "All Staff"),
                display_name="All Staff",
                mail_nickname="allstaff",
                member_ids=[u.id for u in org.users.values()],
                created=org.created,
            )
        )
        self.admin = admin

    def _company_name(self, i: int, used: set[str]) -> tuple[str, str, str, str, str]:
        r = random.Random(f"{self.seed}:company:{i}")
        while True:
            p, (noun, industry), (legal, tld, city, country) = r.choice(PREFIX), r.choice(INDUSTRY), r.choice(LEGAL)
            name = f"{p} {noun}"
            if name not in used:
                used.add(name)
                slug = re.sub(r"[^a-z0-9]", "", (p + noun).lower())
                return f"{name} {legal}", f"{slug}.{tld}", industry, city, country

    def _customers(self) -> None:
        crm, rng = self.org.crm, self.rng
        used: set[str] = set()
        kinds = ["healthy", "healthy", "cooling", "one_sided", "healthy", "new", "dormant", "cooling"]
        total = self.size.companies + self.size.prospects
        for i in range(total):
            name, domain, industry, city, country = self._company_name(i, used)
            prospect = i >= self.size.companies
            seller = self.sellers[i % len(self.sellers)]
            kind = "one_sided" if prospect else kinds[i % len(kinds)]
            comp = Company(
                id=ids.guid(self.seed, "account", name),
                name=name,
                domain=domain,
                industry=industry,
                city=city,
                country=country,
                owner_id=seller.id,
                relationship=kind,
                is_customer=not prospect,
            )
            crm.companies[comp.id] = comp
            contacts = []
            for j in range(rng.randint(*self.size.contacts) if not prospect else 1):
                first, last = self._person(i * 10 + j, "contact")
                if rng.random() < 0.15:
                    email = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(FREE_MAIL)}".lower()
                else:
                    email = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}"]).lower() + f"@{domain}"
                c = Contact(
                    id=ids.guid(self.seed, "contact", email),
                    first_name=first,
                    last_name=last,
                    email=email,
                    company_id=comp.id,
                    job_title=rng.choice(
                        ["CFO", "Head of IT", "Procurement Manager", "Operations Director", "CTO", "Buyer"]
                    ),
                    phone=f"+{rng.randint(30, 49)} {rng.randint(100, 999)} {rng.randint(100000, 999999)}",
                    is_lead=prospect,
                )
                crm.contacts[c.id] = c
                comp.contact_ids.append(c.id)
                contacts.append(c)
                self.names[email] = c.display_name
            manager = self.org.users.get(seller.manager_id or "")
            mate = self.staff[i % len(self.staff)] if self.staff and rng.random() < 0.4 else None
            comp.team_ids = [u.id for u in (manager, mate) if u is not None]
            filing = f"Inbox/Customers/{name.split(' ')[0]} {name.split(' ')[1]}" if rng.random() < 0.35 else None
            rel = Relationship(comp, seller, contacts, kind, filing, manager, mate)
            self.relationships.append(rel)
            if prospect:
                lead = Lead(
                    id=ids.guid(self.seed, "lead", comp.id),
                    contact_id=contacts[0].id,
                    owner_id=seller.id,
                    topic=f"Interest in Contoso {rng.choice(TOPICS)}",
                    created=self.now0 - timedelta(days=rng.randint(5, 90)),
                    state=rng.choice(["open", "open", "qualified", "disqualified"]),
                )
                crm.leads[lead.id] = lead
                continue
            self._opportunities(rel)
            for k in range(rng.randint(0, 4)):
                c = rng.choice(contacts)
                crm.phone_calls.append(
                    PhoneCall(
                        id=ids.guid(self.seed, "call", comp.id, k),
                        user_id=seller.id,
                        contact_id=c.id,
                        start=self._work_time(self.now0 - timedelta(days=rng.randint(1, self.size.history_days))),
                        duration_minutes=rng.choice([5, 10, 15, 30]),
                        direction=rng.choice(["outgoing", "incoming"]),
                        subject=f"Call with {c.display_name}",
                    )
                )

    def _opportunities(self, rel: Relationship) -> None:
        rng = self.rng
        win = {"healthy": 0.7, "cooling": 0.4, "one_sided": 0.15, "new": 0.5, "dormant": 0.3}[rel.kind]
        for k in range(rng.randint(0, 3)):
            created = self.now0 - timedelta(days=rng.randint(10, self.size.history_days + 200))
            state = "open" if rng.random() < 0.35 else ("won" if rng.random() < win else "lost")
            close = (created + timedelta(days=rng.randint(30, 150))).date()
            if state != "open":
                close = min(close, self.now0.date())
            opp = Opportunity(
                id=ids.guid(self.seed, "opportunity", rel.company.id, k),
                name=f"{rel.company.name.split(' ')[0]} - {rng.choice(['Platform', 'Renewal', 'Expansion', 'Pilot'])} {k + 1}",
                company_id=rel.company.id,
                owner_id=rel.seller.id,
                state=state,
                estimated_value=float(rng.randrange(5_000, 250_000, 500)),
                close_date=close,
                created=created,
                team_ids=[rel.seller.id, *rel.company.team_ids[:1]],
                stakeholder_ids=[c.id for c in rel.contacts[: rng.randint(1, len(rel.contacts))]],
            )
            self.org.crm.opportunities[opp.id] = opp

    # ------------------------------------------------------------ simulation core

    def _at(self, when: datetime, run: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self.queue, _Action(when, self._n, run))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _work_time(self, day: datetime, rng: random.Random | None = None) -> datetime:
        r = rng or self.rng
        d = day.date()
        while d.weekday() >= 5:
            d += timedelta(days=1)
        return datetime.combine(d, time(8, 0), tzinfo=UTC) + timedelta(minutes=r.randint(0, 9 * 60))

    def _poisson_times(self, start: datetime, end: datetime, per_week: float) -> list[datetime]:
        weeks = (end - start).total_seconds() / (7 * 86400)
        lam = per_week * weeks
        # Knuth for small means, normal approximation above
        if lam < 30:
            k, p, limit = 0, 1.0, math.exp(-lam)
            while True:
                p *= self.rng.random()
                if p <= limit:
                    break
                k += 1
        else:
            k = max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        span = (end - start).total_seconds()
        out = []
        for _ in range(k):
            t = self._work_time(start + timedelta(seconds=self.rng.random() * span))
            if start <= t < end:
                out.append(t)
        return sorted(out)

    def _delay(self, median_hours: float) -> timedelta:
        return timedelta(hours=max(0.05, self.rng.lognormvariate(math.log(median_hours), 0.9)))

    def simulate(self, start: datetime, end: datetime) -> dict[str, int]:
        """Generate arrivals in [start, end) and run every scheduled action up to `end`."""
        self.counts = {}
        self._sim_end = end
        for rel in self.relationships:
            threads, _, _, _, _, meetings, _ = PROFILES[rel.kind]
            for t in self._poisson_times(start, end, threads):
                if self.rng.random() < rel.active_factor(t, self.now0):
                    self._at(t, partial(self._start_thread, rel, t))
            for t in self._poisson_times(start, end, meetings / 4.3):
                if self.rng.random() < rel.active_factor(t, self.now0):
                    self._at(t, partial(self._propose_meeting, rel, t))
        for u in self.sellers + self.managers:
            for t in self._poisson_times(start, end, self.size.internal_per_week):
                self._at(t, partial(self._internal_mail, u, t))
            for t in self._poisson_times(start, end, self.size.newsletters_per_week):
                self._at(t, partial(self._noise, u, t))
        clock = self.org.clock
        while self.queue and self.queue[0].at < end:
            action = heapq.heappop(self.queue)
            if action.at > clock.now():
                clock.set(action.at)
            action.run()
        clock.set(max(end, clock.now()))
        return dict(self.counts)

    def live(self, org: Org, start: datetime, end: datetime) -> dict[str, int]:
        return self.simulate(start, end)

    # ------------------------------------------------------------ mail

    def _subject(self, rel: Relationship, contact: Contact) -> str:
        n = self.rng.randint(1000, 9999)
        return self.rng.choice(SUBJECTS).format(
            company=rel.company.name.split(" ")[0],
            topic=self.rng.choice(TOPICS),
            n=n,
            seller=rel.seller.given_name,
            contact=contact.first_name,
            year=self.now0.year,
        )

    def _seller_address(self, rel: Relationship) -> str:
        # Some customers write to the alias domain; the daemon must map it to the same user.
        assert rel.seller.mail
        if self.rng.random() < 0.1:
            return rel.seller.mail.split("@")[0] + "@" + self.alias_domain
        return rel.seller.mail

    def _start_thread(self, rel: Relationship, t: datetime) -> None:
        contacts = self.rng.sample(rel.contacts, k=min(len(rel.contacts), self.rng.choice([1, 1, 1, 2])))
        _, _, _, _, _, _, contact_starts = PROFILES[rel.kind]
        cc = []
        if rel.manager and self.rng.random() < 0.12 and rel.manager.mail:
            cc.append(rel.manager.mail)
        if rel.teammate and self.rng.random() < 0.2 and rel.teammate.mail:
            cc.append(rel.teammate.mail)
        seller_first = self.rng.random() >= contact_starts
        subject = self._subject(rel, contacts[0])
        self._send(rel, contacts, cc, seller_first, subject, None, t, 0)

    def _send(
        self,
        rel: Relationship,
        contacts: list[Contact],
        cc: list[str],
        from_seller: bool,
        subject: str,
        parent: MessageContent | None,
        t: datetime,
        depth: int,
    ) -> None:
        assert rel.seller.mail
        if from_seller:
            sender, to = rel.seller.mail, [c.email for c in contacts]
        else:
            sender, to = contacts[0].email, [self._seller_address(rel), *[c.email for c in contacts[1:]]]
        folders = {rel.seller.id: rel.filing} if rel.filing and not from_seller else None
        content = self.org.deliver_message(
            sender,
            to,
            cc,
            subject=subject,
            sent=t,
            reply_to=parent,
            names=self.names,
            folders=folders,
            has_attachments=self.rng.random() < 0.15,
            importance="high" if self.rng.random() < 0.03 else "normal",
        )
        self._count("messages")
        self._after_delivery(content, t)
        _, c_prob, c_delay, s_prob, s_delay, _, _ = PROFILES[rel.kind]
        factor = rel.active_factor(t, self.now0)
        if depth >= 7:
            return
        if from_seller:
            prob, delay = c_prob * (0.5 + 0.5 * factor), c_delay * (1 if factor >= 1 else 4)
        else:
            prob, delay = s_prob, s_delay
        if self.rng.random() < prob:
            when = t + self._delay(delay)
            self._at(when, lambda: self._send(rel, contacts, cc, not from_seller, subject, content, when, depth + 1))

    def _after_delivery(self, content: MessageContent, t: datetime) -> None:
        """Recipients read their copy after a while; some file it or delete it later."""
        for m in self.org.copies_of(content.internet_message_id):
            if m.is_read or m.received is None:
                continue
            user = m.mailbox
            read_at = m.received + self._delay(3.0)
            self._at(read_at, partial(self._safe, self.org.mark_read, user, m.id, when=read_at))
            u = self.org.users[user]
            if u.role in ("manager", "staff") and self.rng.random() < 0.15:
                when = read_at + self._delay(24.0)
                self._at(when, partial(self._safe, self.org.move_message, user, m.id, "archive", when=when))

    def _safe(self, fn: Callable[..., None], *args: object, **kw: object) -> None:
        try:
            fn(*args, **kw)
            self._count(getattr(fn, "__name__", "action"))
        except SandboxError:
            pass  # the item was deleted or moved meanwhile: a person would not act on it either

    def _internal_mail(self, u: User, t: datetime) -> None:
        peers = [p for p in self.sellers + self.managers + self.staff if p is not u and p.has_mailbox]
        if not peers or not u.mail:
            return
        to = self.rng.sample(peers, k=min(len(peers), self.rng.choice([1, 1, 2, 3])))
        rel = self.rng.choice(self.relationships)
        subject = self.rng.choice(INTERNAL_SUBJECTS).format(
            company=rel.company.name.split(" ")[0], week=t.isocalendar()[1]
        )
        if u.role == "manager" and self.rng.random() < 0.25:
            recipients = [f"sales@{self.domain}"]  # to the mail-enabled group: every member gets a copy
        else:
            recipients = [p.mail for p in to if p.mail]
        content = self.org.deliver_message(u.mail, recipients, subject=subject, sent=t)
        self._count("internal")
        self._after_delivery(content, t)
        if self.rng.random() < 0.5 and to[0].mail:
            reply_at = t + self._delay(2.0)
            self._at(reply_at, lambda: self._internal_reply(to[0], u, subject, content, reply_at))

    def _internal_reply(self, frm: User, to: User, subject: str, parent: MessageContent, t: datetime) -> None:
        if frm.mail and to.mail:
            c = self.org.deliver_message(frm.mail, [to.mail], subject=subject, sent=t, reply_to=parent)
            self._count("internal")
            self._after_delivery(c, t)

    def _noise(self, u: User, t: datetime) -> None:
        """Newsletters and no-reply senders: must never count as relationships."""
        if not u.mail:
            return
        name, addr, subject = self.rng.choice(NOISE_SENDERS)
        junk = self.rng.random() < 0.15
        content = self.org.deliver_message(
            addr,
            [u.mail],
            subject=subject.format(n=self.rng.randint(10, 999), year=t.year),
            sent=t,
            names={addr: name},
            folders={u.id: "junkemail"} if junk else None,
        )
        self._count("noise")
        copy = next((m for m in self.org.copies_of(content.internet_message_id) if m.mailbox == u.id), None)
        if copy is not None and not junk and self.rng.random() < 0.4:
            when = t + self._delay(20.0)
            self._at(when, lambda: self._safe(self.org.delete_message, u.id, copy.id, when=when))

    # ------------------------------------------------------------ meetings

    def _propose_meeting(self, rel: Relationship, t: datetime) -> None:
        rng = self.rng
        assert rel.seller.mail
        ahead = timedelta(days=rng.randint(1, 14))
        start = self._work_time(t + ahead).replace(minute=0 if rng.random() < 0.6 else 30, second=0)
        length = timedelta(minutes=rng.choice([30, 30, 60, 60, 90]))
        invited = rng.sample(rel.contacts, k=min(len(rel.contacts), rng.choice([1, 2, 2, 3])))
        attendees = [(c.email, "required") for c in invited]
        if rel.manager and rng.random() < 0.2 and rel.manager.mail:
            attendees.append((rel.manager.mail, "optional"))
        if rel.teammate and rng.random() < 0.25 and rel.teammate.mail:
            attendees.append((rel.teammate.mail, "required"))
        subject = rng.choice(
            [
                "{c} / Contoso: {topic}",
                "Quarterly business review - {c}",
                "Demo for {c}",
                "{c}: workshop on {topic}",
                "Contract discussion",
            ]
        ).format(c=rel.company.name.split(" ")[0], topic=rng.choice(TOPICS))
        meeting = self.org.create_event(
            rel.seller.mail,
            attendees,
            subject=subject,
            start=start,
            end=start + length,
            created=t,
            is_online=rng.random() < 0.6,
            location=None if rng.random() < 0.6 else f"{rel.company.city} office",
            names=self.names,
        )
        self._count("meetings")
        decline = {"healthy": 0.05, "cooling": 0.2, "one_sided": 0.45, "new": 0.1, "dormant": 0.2}[rel.kind]
        for addr, _ in attendees:
            roll = rng.random()
            response = (
                "declined"
                if roll < decline
                else ("tentativelyAccepted" if roll < decline + 0.1 else ("none" if roll > 0.92 else "accepted"))
            )
            if response == "none":
                continue
            when = min(t + self._delay(6.0), start)
            self._at(when, partial(self._safe, self.org.respond_event, meeting.uid, addr, response, when))
        if rng.random() < 0.06:
            when = t + (start - t) * rng.random()
            self._at(when, lambda: self._safe(self.org.cancel_event, meeting.uid))
        if rng.random() < 0.05:
            when = t + (start - t) * rng.random()
            shift = timedelta(days=rng.randint(1, 3))
            self._at(
                when, lambda: self._safe(self.org.reschedule_event, meeting.uid, start + shift, start + shift + length)
            )

    def _recurring_meetings(self, start: datetime) -> None:
        """Weekly pipeline reviews per manager (one occurrence moved, one cancelled), biweekly customer
        check-ins for some healthy accounts, and all-day trade-show days."""
        end = self.now0 + timedelta(days=self.size.future_days)
        for i, mgr in enumerate(self.managers):
            team = [s for s in self.sellers if s.manager_id == mgr.id]
            if not team or not mgr.mail:
                continue
            first = self._work_time(start + timedelta(days=i % 5)).replace(hour=9, minute=0)
            day = ("monday", "tuesday", "wednesday", "thursday", "friday")[first.weekday()]
            rec = Recurrence("weekly", 1, (day,), first.date(), end.date())
            responses = {s.mail: ("declined" if j % 7 == 3 else "accepted") for j, s in enumerate(team) if s.mail}
            m = self.org.create_event(
                mgr.mail,
                [(s.mail, "required") for s in team if s.mail],
                subject="Weekly pipeline review",
                start=first,
                end=first + timedelta(hours=1),
                recurrence=rec,
                is_online=True,
                responses=responses,
                created=start,
            )
            occ = rec.starts(first)
            moved = min(occ, key=lambda s: abs(s - (self.now0 - timedelta(days=14))))
            dropped = min(occ, key=lambda s: abs(s - (self.now0 + timedelta(days=8))))
            if moved != dropped:  # one occurrence moved two hours later (an exception), one cancelled
                self.org.reschedule_event(m.uid, moved + timedelta(hours=2), moved + timedelta(hours=3), moved)
                self.org.cancel_event(m.uid, dropped)
        for k, rel in enumerate(r for r in self.relationships if r.kind == "healthy" and r.company.is_customer):
            if k % 3 != 0 or not rel.seller.mail:
                continue
            first = self._work_time(start + timedelta(days=7 + k % 10)).replace(hour=14, minute=0)
            day = ("monday", "tuesday", "wednesday", "thursday", "friday")[first.weekday()]
            rec = Recurrence("weekly", 2, (day,), first.date(), end.date())
            self.org.create_event(
                rel.seller.mail,
                [(rel.contacts[0].email, "required")],
                subject=f"{rel.company.name.split(' ')[0]} bi-weekly check-in",
                start=first,
                end=first + timedelta(minutes=30),
                recurrence=rec,
                is_online=True,
                responses={rel.contacts[0].email: "accepted"},
                names=self.names,
                created=start,
            )
        for j, s in enumerate(self.sellers[:: max(1, len(self.sellers) // 4)]):
            if not s.mail:
                continue
            d = (self.now0 + timedelta(days=10 + 7 * j)).date()
            begin = datetime.combine(d, time(0), tzinfo=UTC)
            self.org.create_event(
                s.mail,
                [],
                subject="Trade show: Nordic Sales Summit",
                start=begin,
                end=begin + timedelta(days=1),
                is_all_day=True,
                created=start,
            )

    # ------------------------------------------------------------ odd corners

    def _quirks(self) -> None:
        """A few things real mailboxes have: drafts, a hard delete, a user folder tree, an empty folder."""
        for s in self.sellers[:3]:
            c = self.rng.choice(self.relationships).contacts[0]
            self.org.save_draft(s.id, [c.email], subject="Draft: proposal outline", when=self.now0 - timedelta(hours=3))
            self.org.create_folder(s.id, "inbox", "Customers")
            self.org.create_folder(s.id, "Inbox/Customers", "Archive 2024")
        s = self.sellers[0]
        deleted = self.org.messages_in(s.id, "deleteditems")
        if deleted:
            self.org.delete_message(s.id, deleted[0].id, hard=True)


def generate_org(size: str | OrgSize = "small", *, seed: int = 1, now: datetime | None = None) -> Org:
    """Build a seeded organisation; same size + seed (+ now) gives the same org, ids included."""
    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"unknown org size {size!r}; use one of {', '.join(SIZES)}")
    spec = SIZES[size] if isinstance(size, str) else size
    org = Org(seed=seed, now=now or datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    gen = Generator(org, spec, seed)
    gen.build()
    org.generator = gen
    return org
