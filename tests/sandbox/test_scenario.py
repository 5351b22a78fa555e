"""Hand-written scenarios: the worked example of kpis.md section 6 served exactly (read back over Graph),
the whole format built into the org, and every kind of mistake reported with its key path."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from relinsights.sandbox.scenario import (
    ScenarioError,
    ScenarioResult,
    build_org,
    load_scenario,
    parse_scenario,
    read_scenario,
)
from relinsights.sandbox.server import SandboxServer

from .conftest import graph_client, pages

WORKED_EXAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "worked-example.toml"
T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
IMM = {"Prefer": 'IdType="ImmutableId"'}


@pytest.fixture(scope="module")
def worked() -> Iterator[tuple[ScenarioResult, SandboxServer]]:
    result = load_scenario(WORKED_EXAMPLE)
    with SandboxServer(org=result.org) as sb:
        yield result, sb


def messages(sb: SandboxServer, c: httpx.Client, user: str, folder: str) -> list[dict[str, Any]]:
    uid = sb.org.user(user).id
    items, _ = pages(c, f"{sb.graph_url}/users/{uid}/mailFolders/{folder}/messages/delta", headers=IMM)
    return items


def events(sb: SandboxServer, c: httpx.Client, user: str) -> dict[str, dict[str, Any]]:
    uid = sb.org.user(user).id
    items, _ = pages(
        c,
        f"{sb.graph_url}/users/{uid}/calendarView/delta",
        {"startDateTime": "2026-02-01T00:00:00Z", "endDateTime": "2026-04-01T00:00:00Z"},
        {"Prefer": 'outlook.timezone="UTC", IdType="ImmutableId"'},
    )
    return {e["subject"]: e for e in items}


def test_worked_example_mail_is_in_the_right_mailboxes(worked: tuple[ScenarioResult, SandboxServer]) -> None:
    result, sb = worked
    number = {c.internet_message_id: n for n, c in result.emails.items()}
    with graph_client(sb) as c:
        got = {
            (user, folder): sorted(number[m["internetMessageId"]] for m in messages(sb, c, user, folder))
            for user in ("bob@contoso.com", "carl@contoso.com", "dan@contoso.com")
            for folder in ("inbox", "sentitems")
        }
        sent = {number[m["internetMessageId"]]: m for m in messages(sb, c, "bob@contoso.com", "sentitems")}
        inbox = messages(sb, c, "carl@contoso.com", "inbox")
    assert got == {
        ("bob@contoso.com", "inbox"): ["1"],
        ("bob@contoso.com", "sentitems"): ["2", "3"],
        ("carl@contoso.com", "inbox"): ["1"],
        ("carl@contoso.com", "sentitems"): [],
        ("dan@contoso.com", "inbox"): [],
        ("dan@contoso.com", "sentitems"): [],
    }
    # Nothing else anywhere: four items in all.
    assert sb.org.stats()["messages"] == 4
    first = inbox[0]
    assert first["from"]["emailAddress"] == {"name": "Ann", "address": "ann@fabrikam.com"}
    assert [r["emailAddress"]["address"] for r in first["toRecipients"]] == ["bob@contoso.com", "carl@contoso.com"]
    assert first["sentDateTime"] == "2026-03-01T09:00:00Z"
    assert sent["2"]["sentDateTime"] == "2026-03-01T13:30:00Z" and sent["3"]["sentDateTime"] == "2026-03-02T10:00:00Z"
    # #1 and #2 are conversation X, #3 is Y.
    assert sent["2"]["conversationId"] == first["conversationId"] != sent["3"]["conversationId"]
    assert [r["emailAddress"]["address"] for r in sent["3"]["toRecipients"]] == ["ann@fabrikam.com"]


def test_worked_example_meetings_and_responses(worked: tuple[ScenarioResult, SandboxServer]) -> None:
    _, sb = worked
    with graph_client(sb) as c:
        bob, carl, dan = (events(sb, c, f"{u}@contoso.com") for u in ("bob", "carl", "dan"))
    assert set(bob) == {"Meeting 4", "Meeting 5"} and set(carl) == set(dan) == {"Meeting 4"}
    four = bob["Meeting 4"]
    assert (four["start"]["dateTime"][:16], four["end"]["dateTime"][:16]) == ("2026-03-05T10:00", "2026-03-05T11:00")
    assert four["isOrganizer"] and four["responseStatus"]["response"] == "organizer"
    assert {a["emailAddress"]["address"]: a["status"]["response"] for a in four["attendees"]} == {
        "ann@fabrikam.com": "accepted",
        "carl@contoso.com": "declined",
        "dan@contoso.com": "accepted",
    }
    assert carl["Meeting 4"]["responseStatus"]["response"] == "declined"
    assert dan["Meeting 4"]["responseStatus"]["response"] == "accepted"
    assert len({e["Meeting 4"]["iCalUId"] for e in (bob, carl, dan)}) == 1
    five = bob["Meeting 5"]
    assert five["organizer"]["emailAddress"] == {"name": "Ann", "address": "ann@fabrikam.com"}
    assert not five["isOrganizer"] and five["responseStatus"]["response"] == "accepted"
    start = datetime.fromisoformat(five["start"]["dateTime"][:19]).replace(tzinfo=UTC)
    assert start == datetime(2026, 3, 12, 15, 0, tzinfo=UTC) > sb.org.now() == T  # scheduled, not completed
    assert five["end"]["dateTime"].startswith("2026-03-12T15:30")


def test_worked_example_tenant_and_crm(worked: tuple[ScenarioResult, SandboxServer]) -> None:
    result, _ = worked
    org = result.org
    assert org.now() == T and org.default_domain == "contoso.com"
    assert sorted(u.mail for u in org.users.values()) == ["bob@contoso.com", "carl@contoso.com", "dan@contoso.com"]
    (ann,) = org.crm.contacts.values()
    assert (ann.email, ann.first_name, ann.last_name, ann.company_id) == ("ann@fabrikam.com", "", "Ann", None)
    assert not org.crm.companies and not org.crm.opportunities and not org.crm.phone_calls


FULL: dict[str, Any] = {
    "tenant": {"name": "Contoso", "domains": ["contoso.com", "contoso.eu"], "now": T, "seed": 3},
    "users": [
        {"email": "mia@contoso.com", "name": "Mia Manager", "role": "manager"},
        {"email": "bob@contoso.com", "name": "Bob Berg", "manager": "mia@contoso.com", "aliases": ["bob@contoso.eu"]},
        {"email": "pat@contoso.com", "mailbox": False, "role": "staff"},
    ],
    "accounts": [
        {"id": "fab", "name": "Fabrikam, Inc.", "website": "https://www.fabrikam.com/", "owner": "bob@contoso.com"},
        {
            "id": "nw",
            "name": "Northwind",
            "domain": "northwind.example",
            "owner": "bob@contoso.com",
            "team": ["mia@contoso.com"],
        },
    ],
    "contacts": [
        {"id": "ann", "first_name": "Ann", "last_name": "Lee", "email": "Ann@Fabrikam.com", "account": "fab"},
        {"id": "joe", "name": "Joe Free", "email": "joe@gmail.com"},
    ],
    "leads": [
        {
            "id": "kim",
            "name": "Kim Park",
            "email": "kim@prospect.example",
            "owner": "bob@contoso.com",
            "topic": "Platform",
            "created": datetime(2026, 2, 1, tzinfo=UTC),
        }
    ],
    "opportunities": [
        {
            "id": "deal",
            "name": "Fabrikam - Platform",
            "account": "fab",
            "owner": "bob@contoso.com",
            "team": ["mia@contoso.com"],
            "stakeholders": ["ann"],
            "state": "won",
            "created": datetime(2026, 1, 5, tzinfo=UTC),
            "close": date(2026, 3, 1),
            "value": 42000,
        }
    ],
    "emails": [
        {
            "id": "a",
            "from": "ann@fabrikam.com",
            "to": ["bob@contoso.com"],
            "cc": ["mia@contoso.com"],
            "time": datetime(2026, 3, 2, 9, tzinfo=UTC),
            "subject": "Pricing",
            "folder": {"bob@contoso.com": "Inbox/Fabrikam"},
            "read": True,
        },
        {
            "id": "b",
            "from": "bob@contoso.com",
            "to": ["ann@fabrikam.com"],
            "time": datetime(2026, 3, 2, 10, tzinfo=UTC),
            "in_reply_to": "a",
            "folder": {"bob@contoso.com": "archive"},
        },
        {
            "id": "c",
            "from": "joe@gmail.com",
            "to": ["bob@contoso.eu"],
            "time": datetime(2026, 3, 3, 9, tzinfo=UTC),
            "conversation": "side",
            "folder": "Deleted Items",
        },
    ],
    "meetings": [
        {
            "id": "weekly",
            "organizer": "bob@contoso.com",
            "start": datetime(2026, 3, 2, 15, tzinfo=UTC),
            "end": datetime(2026, 3, 2, 15, 30, tzinfo=UTC),
            "attendees": [
                {"email": "ann@fabrikam.com", "response": "tentativelyAccepted"},
                {"email": "mia@contoso.com", "type": "optional"},
            ],
            "recurrence": {"pattern": "weekly", "until": date(2026, 3, 23)},
        },
        {
            "id": "off",
            "organizer": "mia@contoso.com",
            "start": datetime(2026, 3, 20, tzinfo=UTC),
            "end": datetime(2026, 3, 21, tzinfo=UTC),
            "all_day": True,
            "attendees": [{"email": "bob@contoso.com", "response": "accepted"}],
            "cancelled": True,
        },
    ],
    "calls": [
        {
            "id": "c1",
            "user": "bob@contoso.com",
            "contact": "ann",
            "direction": "outgoing",
            "start": datetime(2026, 3, 3, 15, tzinfo=UTC),
            "end": datetime(2026, 3, 3, 15, 20, tzinfo=UTC),
            "regarding": "deal",
        },
        {
            "id": "c2",
            "user": "bob@contoso.com",
            "contact": "kim@prospect.example",
            "direction": "incoming",
            "start": datetime(2026, 3, 4, 11, tzinfo=UTC),
            "duration": 5,
        },
    ],
}


def test_every_section_is_built() -> None:
    result = build_org(parse_scenario(copy.deepcopy(FULL)))
    org, crm = result.org, result.org.crm
    bob = org.user("bob@contoso.eu")  # an alias finds him
    assert bob.manager_id == org.user("mia@contoso.com").id and not org.user("pat@contoso.com").has_mailbox
    assert {d.name for d in org.domains} == {"contoso.com", "contoso.eu", "contoso.onmicrosoft.com"}
    accounts = {a.name: a for a in crm.companies.values()}
    assert accounts["Fabrikam, Inc."].domain == "fabrikam.com" and accounts["Northwind"].domain == "northwind.example"
    ann = next(c for c in crm.contacts.values() if c.email == "ann@fabrikam.com")
    assert ann.company_id == accounts["Fabrikam, Inc."].id and ann.id in accounts["Fabrikam, Inc."].contact_ids
    (lead,) = crm.leads.values()
    assert crm.contacts[lead.contact_id].email == "kim@prospect.example" and crm.contacts[lead.contact_id].is_lead
    (opp,) = crm.opportunities.values()
    assert (opp.state, opp.estimated_value, opp.close_date, opp.stakeholder_ids) == (
        "won",
        42000.0,
        date(2026, 3, 1),
        [ann.id],
    )
    assert [(c.duration_minutes, c.direction, c.contact_id) for c in crm.phone_calls] == [
        (20, "outgoing", ann.id),
        (5, "incoming", lead.contact_id),
    ]
    # Mail: filed where the scenario says, the sender's copy too; a reply threads with its original.
    a, b, c = result.emails["a"], result.emails["b"], result.emails["c"]
    place = {
        (m.mailbox, org.folder_path(org.mailboxes[m.mailbox], m.folder_id or ""), m.is_read)
        for m in org.copies_of(a.internet_message_id)
    }
    assert place == {(bob.id, "Inbox/Fabrikam", True), (org.user("mia@contoso.com").id, "Inbox", True)}
    (bob_b,) = org.copies_of(b.internet_message_id)
    assert org.folder_path(org.mailboxes[bob.id], bob_b.folder_id or "") == "Archive"
    assert (
        b.subject == "RE: Pricing" and b.conversation_id == a.conversation_id and b.in_reply_to == a.internet_message_id
    )
    (bob_c,) = org.copies_of(c.internet_message_id)
    assert org.folder_path(org.mailboxes[bob.id], bob_c.folder_id or "") == "Deleted Items"
    assert c.conversation_id not in (a.conversation_id,)
    # Meetings: a weekly series (4 occurrences), a cancelled all-day event left in the attendee's calendar.
    weekly = result.meetings["weekly"]
    bob_events = org.events_in(bob.id, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert [e.start.day for e in bob_events if e.meeting is weekly] == [2, 9, 16, 23]
    (off,) = [e for e in bob_events if e.meeting is result.meetings["off"]]
    assert off.is_cancelled and off.subject.startswith("Canceled: ")


def broken(**changes: Any) -> list[str]:
    data = copy.deepcopy(FULL)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is ...:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(data, "broken.toml")
    assert exc.value.render().startswith("scenario error in broken.toml:")
    return exc.value.problems


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"tenant__now": ...}, "tenant.now: required key is missing"),
        (
            {"tenant__now": datetime(2026, 3, 10, 12)},
            "tenant.now: a date-time with an offset is expected, e.g. 2026-03-01T09:00:00Z",
        ),
        (
            {"meetings__0__atendees": []},
            "meetings[0] (weekly).atendees: unknown key (misspelt, or not part of the scenario format)",
        ),
        ({"users__1__email": "bob"}, "users[1] (bob).email: an email address like name@example.com, got 'bob'"),
        (
            {"users__1__email": "bob@fabrikam.com"},
            "users[1] (bob@fabrikam.com).email: not in the tenant's domains (contoso.com, contoso.eu)",
        ),
        (
            {"accounts__0__owner": "zoe@contoso.com"},
            "accounts[0] (fab).owner: not a user (bob@contoso.com, mia@contoso.com, pat@contoso.com)",
        ),
        ({"accounts__1__domain": ...}, "accounts[1] (nw): give the account a website (or a domain)"),
        ({"contacts__1__account": "acme"}, "contacts[1] (joe).account: no account has this id"),
        ({"contacts__1__id": "ann"}, "contacts[1] (ann): the same id (or email) appears twice in contacts"),
        (
            {"opportunities__0__stakeholders": ["zed"]},
            "opportunities[0] (deal).stakeholders: 'zed' is not a contact id",
        ),
        (
            {"opportunities__0__state": "pending"},
            "opportunities[0] (deal).state: Input should be 'open', 'won' or 'lost'",
        ),
        ({"emails__1__in_reply_to": "z"}, "emails[1] (b).in_reply_to: no earlier email has this id"),
        (
            {"emails__1__conversation": "y"},
            "emails[1] (b).conversation: 'y', but the email it replies to is in a conversation of its own",
        ),
        (
            {"emails__0__conversation": "x", "emails__1__conversation": "y"},
            "emails[1] (b).conversation: 'y', but the email it replies to is in conversation 'x'",
        ),
        (
            {"emails__0__time": datetime(2026, 3, 11, tzinfo=UTC)},
            "emails[0] (a).time: after tenant.now: mail cannot arrive from the future",
        ),
        (
            {"emails__0__folder": "Customers"},
            "emails[0] (a).folder: a well-known folder or a path under one, like Inbox/Customers",
        ),
        (
            {"emails__0__folder": {"pat@contoso.com": "inbox"}},
            "emails[0] (a).folder.pat@contoso.com: not a user with a mailbox among its sender and recipients",
        ),
        ({"emails__2__to": []}, "emails[2] (c): an email needs at least one recipient (to, cc or bcc)"),
        ({"meetings__0__end": datetime(2026, 3, 2, 14, tzinfo=UTC)}, "meetings[0] (weekly): end must be after start"),
        (
            {"meetings__0__attendees__0__response": "maybe"},
            "meetings[0] (weekly).attendees[0].response: Input should be",
        ),
        (
            {"meetings__1__organizer": "ann@fabrikam.com", "meetings__1__attendees": [{"email": "joe@gmail.com"}]},
            "meetings[1] (off).attendees: a meeting organised outside the tenant needs a user with a mailbox among its attendees",
        ),
        ({"meetings__1__organizer": "pat@contoso.com"}, "meetings[1] (off).organizer: this user has no mailbox"),
        ({"calls__0__duration": 20}, "calls[0] (c1): give either end or duration (minutes)"),
        ({"calls__1__contact": "nobody"}, "calls[1] (c2).contact: no contact or lead has this id or email"),
        ({"calls__0__regarding": "nothing"}, "calls[0] (c1).regarding: no record has this id"),
    ],
)
def test_mistakes_are_reported_with_their_key_path(changes: dict[str, Any], problem: str) -> None:
    problems = broken(**changes)
    assert any(p.startswith(problem) for p in problems), problems


def test_all_problems_at_once() -> None:
    problems = broken(contacts__1__account="acme", calls__1__contact="nobody")
    assert len(problems) == 2


def test_files_that_are_not_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        read_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tenant\nname = 1\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        read_scenario(bad)
    local = tmp_path / "local.toml"
    local.write_text('[tenant]\ndomains = ["contoso.com"]\nnow = 2026-03-10T12:00:00\n')
    with pytest.raises(ScenarioError) as exc:
        read_scenario(local)
    assert exc.value.problems == [
        "tenant.now: a date-time with an offset is expected, e.g. 2026-03-01T09:00:00Z",
        "users: required key is missing",
    ]


def test_the_scenario_crm_is_what_dataverse_serves() -> None:
    from .dataverse_support import dv_client, read_all

    result = build_org(parse_scenario(copy.deepcopy(FULL)))
    with SandboxServer(org=result.org) as sb, dv_client(sb) as c:
        contacts, _ = read_all(c, "contacts", {"$select": "emailaddress1,_parentcustomerid_value"})
        accounts, _ = read_all(c, "accounts", {"$select": "name,accountid"})
        opps, _ = read_all(c, "opportunities", {"$select": "name,estimatedvalue"})
        leads, _ = read_all(c, "leads", {"$select": "emailaddress1"})
        calls, _ = read_all(c, "phonecalls", {"$select": "subject"})
    fab = next(a["accountid"] for a in accounts if a["name"] == "Fabrikam, Inc.")
    assert {a["name"] for a in accounts} == {"Fabrikam, Inc.", "Northwind"}
    assert {(x["emailaddress1"], x["_parentcustomerid_value"]) for x in contacts} == {
        ("ann@fabrikam.com", fab),
        ("joe@gmail.com", None),
    }
    assert [(o["name"], o["estimatedvalue"]) for o in opps] == [("Fabrikam - Platform", 42000.0)]
    assert [x["emailaddress1"] for x in leads] == ["kim@prospect.example"]
    # crm_seed names calls itself and keeps only calls to contacts (c2 is to a lead): see the report.
    assert [x["subject"] for x in calls] == ["Call with Ann Lee"]
