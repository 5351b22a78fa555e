from __future__ import annotations

from datetime import date, datetime

import pytest

from relinsights.analytics import (
    Account,
    Activity,
    CalendarEvent,
    Contact,
    CrmParty,
    CrmRecords,
    Entity,
    InternalUser,
    Lead,
    MailMessage,
    MatchResult,
    Opportunity,
    OpportunityState,
    PartyRules,
    PhoneCall,
    RecordIndex,
    RecordRef,
    Settings,
    build_activities,
)
from relinsights.analytics.matching import website_domain
from relinsights.config import KpiConfig

from .factory import at, check, mail, meeting, rules

ANN, JOE = "ann@fabrikam.com", "joe@gmail.com"
BOB, CARL = "bob@contoso.com", "carl@contoso.com"
USERS = [InternalUser(BOB, systemuser_id="su-bob"), InternalUser(CARL, systemuser_id="su-carl")]


def acc(i: str) -> RecordRef:
    return RecordRef(Entity.ACCOUNT, i)


def con(i: str) -> RecordRef:
    return RecordRef(Entity.CONTACT, i)


def opp(i: str) -> RecordRef:
    return RecordRef(Entity.OPPORTUNITY, i)


def link(
    records: CrmRecords,
    messages: list[MailMessage] = [],  # noqa: B006 - read only
    events: list[CalendarEvent] = [],  # noqa: B006
    calls: list[PhoneCall] = [],  # noqa: B006
    kpi: KpiConfig | None = None,
    party_rules: PartyRules | None = None,
) -> tuple[list[Activity], MatchResult]:
    kpi = kpi or KpiConfig()
    r = party_rules or rules(users=USERS, kpi=kpi)
    acts = list(build_activities(rules=r, messages=messages, events=events, phone_calls=calls).activities)
    return acts, check(acts, RecordIndex(records, r, kpi=kpi, zone=Settings().zone))


def reasons(result: MatchResult) -> dict[str, list[tuple[str, ...]]]:
    return {str(ref): [lk.reasons for lk in links] for ref, links in result.links.items()}


def test_contact_and_account_links_with_reasons() -> None:
    records = CrmRecords(
        contacts=[Contact("ann", (ANN,), parent_account_id="fab")],
        accounts=[Account("fab", website_url="https://www.fabrikam.com/about")],
    )
    _, res = link(records, [mail(BOB, [ANN, "zoe@eu.fabrikam.com"], "2026-03-01 09:00")])
    assert reasons(res) == {
        "account:fab": [("account-contact", "account-domain")],
        "contact:ann": [("contact-email",)],
    }
    (acc_link,) = res.links_of(acc("fab"))
    assert acc_link.members == {ANN, "zoe@eu.fabrikam.com"}
    assert res.links_of(con("ann"))[0].members == {ANN}


def test_free_mail_domain_never_matches_an_account() -> None:
    records = CrmRecords(
        contacts=[Contact("joe", (JOE,), parent_account_id="a1")],
        accounts=[Account("a1", email="info@gmail.com"), Account("a2", website_url="www.gmail.com")],
    )
    _, res = link(records, [mail(BOB, [JOE, "someone@gmail.com"], "2026-03-01 09:00")])
    # Joe links to his account through his contact record only; nobody links by gmail.com.
    assert reasons(res) == {"account:a1": [("account-contact",)], "contact:joe": [("contact-email",)]}
    assert res.links_of(acc("a1"))[0].members == {JOE}
    assert res.ambiguous_domains == ()  # nor is gmail.com reported as shared by a1 and a2


def test_domain_shared_by_two_accounts_is_unresolved_and_reported() -> None:
    records = CrmRecords(
        accounts=[Account("a1", website_url="fabrikam.com"), Account("a2", email="sales@fabrikam.com")]
    )
    messages = [mail(BOB, [ANN], "2026-03-01 09:00"), mail("zoe@fabrikam.com", [BOB], "2026-03-02 09:00")]
    _, res = link(records, messages)
    assert res.links == {}
    (amb,) = res.ambiguous_domains
    assert (amb.domain, amb.account_ids, amb.activities) == ("fabrikam.com", ("a1", "a2"), 2)


def test_tenant_mapping_resolves_a_shared_domain() -> None:
    records = CrmRecords(
        accounts=[Account("a1", website_url="fabrikam.com"), Account("a2", email="sales@fabrikam.com")]
    )
    kpi = KpiConfig(account_domains={"A2": ["Fabrikam.com"]})
    _, res = link(records, [mail(BOB, [ANN], "2026-03-01 09:00")], kpi=kpi)
    assert reasons(res) == {"account:a2": [("account-domain",)]}
    assert res.ambiguous_domains == ()


def test_website_domain_parsing() -> None:
    assert website_domain("www.Fabrikam.com") == "www.fabrikam.com"
    assert website_domain("https://shop.fabrikam.co.uk:8443/x?y") == "shop.fabrikam.co.uk"
    assert website_domain("  ") is None
    assert website_domain("http://[::1") is None


def _opp_records(**kw: object) -> CrmRecords:
    o = Opportunity(
        "o1",
        created_on=at("2026-02-01 00:00"),
        account_id="fab",
        contact_id="ann",
        owner_id="SU-BOB",
        stakeholder_contact_ids=("zoe",),
        **kw,  # type: ignore[arg-type]
    )
    return CrmRecords(
        contacts=[Contact("ann", (ANN,)), Contact("zoe", ("zoe@fabrikam.com",)), Contact("max", ("max@fabrikam.com",))],
        accounts=[Account("fab", primary_contact_id="max")],
        opportunities=[o],
    )


@pytest.mark.parametrize(
    ("external", "reason"),
    [
        (ANN, "opportunity-contact"),
        ("zoe@fabrikam.com", "opportunity-stakeholder"),
        ("max@fabrikam.com", "opportunity-account-primary-contact"),
    ],
)
def test_opportunity_external_set(external: str, reason: str) -> None:
    _, res = link(_opp_records(), [mail(BOB, [external], "2026-03-01 09:00")])
    assert [lk.reasons for lk in res.links_of(opp("o1"))] == [(reason,)]


@pytest.mark.parametrize(
    ("when", "close", "linked"),
    [
        ("2026-01-31 23:59", None, False),  # before createdon
        ("2026-02-01 00:00", None, True),
        ("2026-06-01 00:00", None, True),  # open: no end
        ("2026-03-11 23:59", date(2026, 3, 10), True),  # close date + 1 day, to its end
        ("2026-03-12 00:00", date(2026, 3, 10), False),
        ("2026-03-11 09:00", datetime.fromisoformat("2026-03-10T09:00+00:00"), True),  # instant + 24 h
        ("2026-03-11 09:01", datetime.fromisoformat("2026-03-10T09:00+00:00"), False),
    ],
)
def test_opportunity_window(when: str, close: date | None, linked: bool) -> None:
    state = OpportunityState.WON if close else OpportunityState.OPEN
    _, res = link(_opp_records(state=state, actual_close_date=close), [mail(BOB, [ANN], when)])
    assert bool(res.links_of(opp("o1"))) is linked
    assert res.links_of(con("ann"))  # the contact links whatever the window


def test_opportunity_needs_owner_or_team_member() -> None:
    message = mail(CARL, [ANN], "2026-03-01 09:00")
    _, res = link(_opp_records(), [message])
    assert res.links_of(opp("o1")) == ()
    _, res = link(_opp_records(team_member_ids=("su-carl",)), [message])
    assert [lk.reasons for lk in res.links_of(opp("o1"))] == [("opportunity-contact",)]
    _, res = link(_opp_records(), [message], kpi=KpiConfig(opportunity_requires_team=False))
    assert res.links_of(opp("o1"))


def test_lead_owner_rule() -> None:
    records = CrmRecords(leads=[Lead("l1", ("lea@startup.example",), owner_id="su-bob")])
    by_carl = [mail(CARL, ["lea@startup.example"], "2026-03-01 09:00")]
    _, res = link(records, by_carl)
    assert reasons(res) == {"lead:l1": [("lead-email",)]}
    _, res = link(records, by_carl, kpi=KpiConfig(lead_requires_owner=True))
    assert res.links == {}
    _, res = link(
        records, [mail(BOB, ["lea@startup.example"], "2026-03-01 09:00")], kpi=KpiConfig(lead_requires_owner=True)
    )
    assert reasons(res) == {"lead:l1": [("lead-email",)]}


def test_regarding_always_links_even_outside_the_window() -> None:
    records = _opp_records(state=OpportunityState.LOST, actual_close_date=date(2026, 2, 10))
    bob = CrmParty("systemuser", "su-bob")
    stranger = CrmParty("contact", "nobody")
    call = PhoneCall("c1", True, (bob,), (stranger,), actual_end=at("2026-03-01 09:00"), regarding=opp("o1"))
    _, res = link(records, calls=[call])
    assert reasons(res) == {"opportunity:o1": [("regarding",)]}
    unknown = PhoneCall("c2", True, (bob,), (stranger,), actual_end=at("2026-03-01 09:00"), regarding=opp("zz"))
    assert link(records, calls=[unknown])[1].links == {}


def test_call_party_links_to_its_contact_and_account() -> None:
    records = CrmRecords(contacts=[Contact("ann", (), parent_account_id="fab")], accounts=[Account("fab")])
    call = PhoneCall(
        "c1",
        True,
        (CrmParty("systemuser", "su-bob"),),
        (CrmParty("contact", "ann", "+1 555"),),
        actual_end=at("2026-03-01 09:00"),
    )
    _, res = link(records, calls=[call])
    assert reasons(res) == {"account:fab": [("account-contact",)], "contact:ann": [("contact-party",)]}
    assert res.links_of(con("ann"))[0].members == {"contact:ann"}


def test_received_meeting_without_internal_attendee_does_not_link() -> None:
    records = CrmRecords(contacts=[Contact("ann", (ANN,))])
    e = meeting(ANN, {"joe@fabrikam.com": "accepted"}, "2026-03-05 10:00", "2026-03-05 11:00", mailbox=BOB)
    acts, res = link(records, events=[e])
    assert len(acts) == 1 and res.links == {}


def test_identities_merge_a_contacts_addresses() -> None:
    records = CrmRecords(
        contacts=[
            Contact("ann", (ANN, "ann@home.example")),
            Contact("x", ("shared@f.example",)),
            Contact("y", ("shared@f.example",)),
        ]
    )
    _, res = link(records)
    assert res.identities == {ANN: "contact:ann", "ann@home.example": "contact:ann"}
