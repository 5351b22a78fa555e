"""match_frames (columns) against match_activities (objects, the reference): equal results, field by field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relinsights.analytics import (
    Account,
    Activity,
    CalendarEvent,
    Contact,
    CrmParty,
    CrmRecords,
    Direction,
    Entity,
    Kind,
    Lead,
    MailMessage,
    MatchResult,
    Opportunity,
    OpportunityState,
    Participant,
    PhoneCall,
    RecordIndex,
    RecordRef,
    Role,
    Settings,
    build_activities,
    match_activities,
)
from relinsights.analytics.frames import FrameActivities, frames_of
from relinsights.analytics.match_frames import match_frames
from relinsights.analytics.timeutil import as_utc
from relinsights.config import KpiConfig

from .factory import at, check, mail, rules
from .test_matching import ANN, BOB, CARL, USERS, _opp_records, reasons


def linked(
    records: CrmRecords,
    *,
    messages: Sequence[MailMessage] = (),
    events: Sequence[CalendarEvent] = (),
    calls: Sequence[PhoneCall] = (),
    kpi: KpiConfig | None = None,
    zone: ZoneInfo | None = None,
) -> MatchResult:
    """test_matching's pipeline (build_activities, RecordIndex), both matchers compared."""
    kpi = kpi or KpiConfig()
    r = rules(users=USERS, kpi=kpi)
    acts = build_activities(rules=r, messages=messages, events=events, phone_calls=calls).activities
    return check(acts, RecordIndex(records, r, kpi=kpi, zone=zone or Settings().zone))


# ---------------------------------------------------------------- test_matching's scenarios, widened
# (test_matching.link checks both matchers on its own scenarios)


@pytest.mark.parametrize("kpi", [KpiConfig(), KpiConfig(account_domains={"A2": ["Fabrikam.com"]})])
def test_shared_domain_and_its_mapping(kpi: KpiConfig) -> None:
    records = CrmRecords(
        accounts=[Account("a1", website_url="fabrikam.com"), Account("a2", email="sales@fabrikam.com")]
    )
    messages = [
        mail(BOB, [ANN], "2026-03-01 09:00"),
        mail("zoe@fabrikam.com", [BOB], "2026-03-02 09:00"),
        mail(BOB, ["x@fabrikam.com", "y@eu.fabrikam.com"], "2026-03-03 09:00"),  # one activity, counted once
    ]
    res = linked(records, messages=messages, kpi=kpi)
    assert [a.activities for a in res.ambiguous_domains] == ([3] if not kpi.account_domains else [])


@pytest.mark.parametrize("external", [ANN, "zoe@fabrikam.com", "max@fabrikam.com"])
def test_opportunity_external_set(external: str) -> None:
    linked(_opp_records(), messages=[mail(BOB, [external], "2026-03-01 09:00")])


WINDOW_CASES = [
    ("2026-01-31 23:59", None),
    ("2026-02-01 00:00", None),
    ("2026-06-01 00:00", None),
    ("2026-03-11 23:59", date(2026, 3, 10)),
    ("2026-03-12 00:00", date(2026, 3, 10)),
    ("2026-03-11 09:00", datetime.fromisoformat("2026-03-10T09:00+00:00")),
    ("2026-03-11 09:01", datetime.fromisoformat("2026-03-10T09:00+00:00")),
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Los_Angeles"])
@pytest.mark.parametrize(("when", "close"), WINDOW_CASES)
def test_opportunity_window(when: str, close: date | None, zone: str) -> None:
    state = OpportunityState.WON if close else OpportunityState.OPEN
    records = _opp_records(state=state, actual_close_date=close)
    linked(records, messages=[mail(BOB, [ANN], when)], zone=ZoneInfo(zone))


def test_opportunity_window_to_the_microsecond() -> None:
    """Activities one microsecond either side of createdon and of the window's end (date-only and instant)."""
    created = at("2026-02-01 00:00")
    for close in (date(2026, 3, 10), datetime(2026, 3, 10, 9, 0, tzinfo=timezone(timedelta(hours=2)))):
        records = _opp_records(state=OpportunityState.LOST, actual_close_date=close)
        r = rules(users=USERS)
        index = RecordIndex(records, r, zone=ZoneInfo("Europe/Berlin"))
        until = index.opp_until["o1"]
        assert until is not None
        tick = timedelta(microseconds=1)
        times = [created - tick, created, until - tick, until, until + tick]
        check([_act(f"k{i}", t, [_int(BOB), _ext(ANN)]) for i, t in enumerate(times)], index)


def test_naive_created_on_is_utc() -> None:
    base = _opp_records()
    records = replace(base, opportunities=[replace(base.opportunities[0], created_on=datetime(2026, 2, 1, 0, 0))])
    r = rules(users=USERS)
    index = RecordIndex(records, r)
    acts = [_act("a", at("2026-01-31 23:59"), [_int(BOB), _ext(ANN)]), _act("b", at("2026-02-01 00:00"), [_int(BOB)])]
    acts.append(_act("c", at("2026-02-01 00:00"), [_int(BOB), _ext(ANN)]))
    res = check(acts, index)
    assert [lk.activity.key for lk in res.links_of(RecordRef(Entity.OPPORTUNITY, "o1"))] == ["c"]


@pytest.mark.parametrize(
    ("sender", "team", "kpi"),
    [
        (CARL, (), KpiConfig()),
        (CARL, ("su-carl",), KpiConfig()),
        (CARL, (), KpiConfig(opportunity_requires_team=False)),
        (BOB, (), KpiConfig()),
    ],
)
def test_opportunity_team(sender: str, team: tuple[str, ...], kpi: KpiConfig) -> None:
    linked(_opp_records(team_member_ids=team), messages=[mail(sender, [ANN], "2026-03-01 09:00")], kpi=kpi)


@pytest.mark.parametrize("sender", [BOB, CARL])
@pytest.mark.parametrize("owner", ["su-bob", None])
@pytest.mark.parametrize("requires", [False, True])
def test_lead_owner_rule(sender: str, owner: str | None, requires: bool) -> None:
    records = CrmRecords(leads=[Lead("l1", ("lea@startup.example",), owner_id=owner)])
    kpi = KpiConfig(lead_requires_owner=requires)
    linked(records, messages=[mail(sender, ["lea@startup.example"], "2026-03-01 09:00")], kpi=kpi)


def test_regarding_outside_the_window_and_unknown() -> None:
    records = _opp_records(state=OpportunityState.LOST, actual_close_date=date(2026, 2, 10))
    bob, stranger = CrmParty("systemuser", "su-bob"), CrmParty("contact", "nobody")
    calls = [
        PhoneCall("c1", True, (bob,), (stranger,), actual_end=at("2026-03-01 09:00"), regarding=_ref("opportunity:o1")),
        PhoneCall("c2", True, (bob,), (stranger,), actual_end=at("2026-03-01 10:00"), regarding=_ref("opportunity:zz")),
    ]
    res = linked(records, calls=calls)
    assert reasons(res) == {"opportunity:o1": [("regarding",)]}


# ---------------------------------------------------------------- the subtle cases, on hand-made activities


def _ref(text: str) -> RecordRef:
    entity, _, rid = text.partition(":")
    return RecordRef(Entity(entity), rid)


def _int(person: str, address: str | None = None) -> Participant:
    return Participant(person, True, Role.FROM, address or person)


def _ext(address: str | None, party: str | None = None, person: str | None = None, role: Role = Role.TO) -> Participant:
    who = person or address or party
    assert who is not None
    return Participant(who, False, role, address, _ref(party) if party else None)


def _act(key: str, when: datetime, parts: list[Participant], regarding: Sequence[str] = ()) -> Activity:
    return Activity(
        key=key,
        kind=Kind.EMAIL,
        direction=Direction.OUTGOING,
        time=when,
        end=when,
        participants=tuple(parts),
        regarding=tuple(_ref(r) for r in regarding),
    )


SUBTLE = CrmRecords(
    contacts=[
        Contact("ann", (ANN,), parent_account_id="fab"),
        Contact("zoe", ("zoe@fabrikam.com",), parent_account_id="gone"),  # parent not in the mirror
        Contact("twin1", ("twin@tailspin.com",)),
        Contact("twin2", ("twin@tailspin.com",), parent_account_id="tail"),
    ],
    accounts=[Account("fab", website_url="fabrikam.com", primary_contact_id="zoe"), Account("tail")],
    leads=[Lead("l1", (ANN,), owner_id="su-carl"), Lead("l2", ("lea@startup.example",))],
    opportunities=[
        Opportunity("o1", at("2026-02-01 00:00"), account_id="fab", contact_id="ann", owner_id="su-bob"),
        Opportunity("o2", at("2026-02-01 00:00"), contact_id="twin2", stakeholder_contact_ids=("twin2", "ann")),
    ],
)
T0 = at("2026-03-01 09:00")


@pytest.mark.parametrize(
    "kpi",
    [KpiConfig(), KpiConfig(lead_requires_owner=True, opportunity_requires_team=False)],
)
@pytest.mark.parametrize(
    ("parts", "regarding"),
    [
        # Found by its address and by its party in one participant: contact-email only (setdefault).
        ([_int(BOB), _ext(ANN, "contact:ann")], ()),
        # By the address of one participant and the party of another: both reasons, both members.
        ([_int(BOB), _ext(ANN), _ext(None, "contact:ann")], ()),
        ([_int(BOB), _ext("zoe@fabrikam.com", "contact:ann")], ()),
        # Party records: an account, a lead, a contact or lead not in the mirror, an opportunity (never).
        ([_int(BOB), _ext(None, "account:tail"), _ext(None, "lead:l2"), _ext(None, "lead:zz")], ()),
        ([_int(BOB), _ext(None, "contact:ghost"), _ext(None, "opportunity:o1"), _ext(None, "account:gone")], ()),
        # Two contacts share an address: both hit, one of them leading to its account and opportunity.
        ([_int(CARL), _ext("twin@tailspin.com")], ()),
        # No internal participant: everything cleared, but regarding keeps the record with its members.
        ([_ext(ANN), _ext("zoe@fabrikam.com")], ("account:fab", "opportunity:o1", "contact:zoe")),
        ([_ext(ANN)], ("contact:ann", "contact:ann", "lead:zz", "contact:nobody")),
        # Regarding records nobody hit, and one a participant hit.
        ([_int(BOB), _ext(ANN)], ("lead:l2", "opportunity:o2", "contact:ann")),
        # An internal participant at a contact's address never hits.
        ([_int(BOB, ANN), _ext("nobody@fabrikam.com")], ()),
        ([_int(CARL), _int(BOB), _ext(ANN, "lead:l1"), _ext("lea@startup.example", "account:fab")], ()),
        ([], ("account:fab",)),
    ],
)
def test_subtle_cases(parts: list[Participant], regarding: tuple[str, ...], kpi: KpiConfig) -> None:
    index = RecordIndex(SUBTLE, rules(users=USERS, kpi=kpi), kpi=kpi)
    acts = [
        _act("a", T0, parts, regarding),
        _act("b", T0 + timedelta(hours=1), [_int(BOB), _ext(ANN)]),
        _act("c", T0 + timedelta(hours=1), [*parts, _int(CARL)], regarding),
    ]
    check(acts, index)


@pytest.mark.parametrize("team", [False, True])
@pytest.mark.parametrize("owner", [False, True])
@pytest.mark.parametrize("drop", ["contacts", "leads", "accounts", "opportunities"])
def test_an_entity_with_no_records(drop: str, owner: bool, team: bool) -> None:
    """Records are numbered entity by entity; an empty entity must not shift the others' rules."""
    records = replace(SUBTLE, **{drop: []})
    kpi = KpiConfig(lead_requires_owner=owner, opportunity_requires_team=team)
    index = RecordIndex(records, rules(users=USERS, kpi=kpi), kpi=kpi)
    acts = [
        _act("a", T0, [_int(CARL), _ext(ANN), _ext("twin@tailspin.com")], ("lead:l2",)),
        _act("b", T0 + timedelta(hours=1), [_int(BOB), _ext(ANN, "account:tail"), _ext(None, "lead:l2")]),
    ]
    check(acts, index)


def test_over_frame_activities() -> None:
    """As a run calls it: the activities are the frames' own, made lazily (and never by match_frames)."""
    index = RecordIndex(SUBTLE, rules(users=USERS))
    acts = [
        _act("a", T0, [_int(BOB), _ext(ANN), _ext("zoe@fabrikam.com", "contact:twin1")], ("lead:l2",)),
        _act("b", T0 + timedelta(hours=1), [_ext(ANN)], ("account:fab",)),
    ]
    frames = frames_of(acts)
    lazy = FrameActivities(frames)
    got = match_frames(frames, index, lazy)
    assert got.links.activities is lazy  # type: ignore[attr-defined]
    assert dict(got.links) == dict(match_activities(lazy, index).links)


def test_regarding_keeps_cleared_members() -> None:
    index = RecordIndex(SUBTLE, rules(users=USERS))
    res = check([_act("a", T0, [_ext(ANN), _ext("x@fabrikam.com")], ("account:fab",))], index)
    (lk,) = res.links_of(_ref("account:fab"))
    assert lk.reasons == ("regarding",) and lk.members == {ANN, "x@fabrikam.com"}


def test_empty() -> None:
    records = CrmRecords(
        accounts=[Account("a1", website_url="fabrikam.com"), Account("a2", website_url="fabrikam.com")]
    )
    res = check([], RecordIndex(records, rules(users=USERS)))
    assert res.links == {} and [a.activities for a in res.ambiguous_domains] == [0]
    assert check([], RecordIndex(CrmRecords(), rules())).links == {}
    # Activities, no records.
    acts = [_act("a", T0, [_int(BOB), _ext(ANN, "contact:ann")], ("account:fab",)), _act("b", T0, [])]
    assert check(acts, RecordIndex(CrmRecords(), rules(users=USERS))).links == {}


# ---------------------------------------------------------------- generated records and activities


INTERNAL = ["bob@contoso.com", "carl@contoso.com", "dan@contoso.com", "systemuser:su-x"]
SYSTEM_USERS = ["su-bob", "su-carl", "su-dan", "su-x"]
DOMAINS = ["fabrikam.com", "eu.fabrikam.com", "tailspin.com", "shared.com", "gmail.com", "nowhere.org"]
ADDRESSES = [f"{name}@{dom}" for name in ("ann", "zoe") for dom in DOMAINS]
CREATED = [at("2026-02-01 00:00"), at("2026-02-15 12:30"), datetime(2026, 3, 1, 8, 0)]  # the last one naive
CLOSED: list[date | datetime | None] = [
    None,
    date(2026, 3, 10),
    date(2026, 2, 28),
    datetime(2026, 3, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 10, 9, 0, tzinfo=timezone(timedelta(hours=-5))),
]
ZONES = [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("Pacific/Auckland")]
START = at("2026-01-15 00:00")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Activity], RecordIndex]:
    n_acc, n_con, n_lead, n_opp = (
        draw(st.integers(0, 5)),
        draw(st.integers(0, 8)),
        draw(st.integers(0, 3)),
        draw(st.integers(1, 5)),
    )
    account_ids = [f"a{i}" for i in range(n_acc)]
    contact_ids = [f"c{i}" for i in range(n_con)]
    maybe_account = st.one_of(st.none(), st.sampled_from([*account_ids, "gone"]))
    maybe_contact = st.one_of(st.none(), st.sampled_from([*contact_ids, "ghost"]))
    maybe_user = st.one_of(st.none(), st.sampled_from(SYSTEM_USERS))
    site = st.one_of(st.none(), st.sampled_from(DOMAINS), st.sampled_from([f"https://www.{d}/x" for d in DOMAINS]))
    accounts = [
        Account(
            a,
            website_url=draw(site),
            email=draw(st.one_of(st.none(), st.sampled_from([f"info@{d}" for d in DOMAINS]))),
            primary_contact_id=draw(maybe_contact),
        )
        for a in account_ids
    ]
    # Two accounts always own shared.com; the tenant mapping sometimes gives it (or another) to one.
    accounts += [Account("s1", website_url="shared.com"), Account("s2", email="x@shared.com")]
    account_ids += ["s1", "s2"]
    contacts = [
        Contact(c, tuple(draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3))), draw(maybe_account))
        for c in contact_ids
    ]
    # A record synced twice (one id, two rows), now and then.
    contacts += (
        [
            replace(c, parent_account_id=draw(maybe_account))
            for c in draw(st.lists(st.sampled_from(contacts), max_size=1))
        ]
        if contacts
        else []
    )
    leads = [
        Lead(f"l{i}", tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=3))), owner_id=draw(maybe_user))
        for i in range(n_lead)
    ]
    leads += draw(st.lists(st.sampled_from(leads), max_size=1)) if leads else []
    opportunities = []
    for i in range(n_opp):
        close = draw(st.sampled_from(CLOSED))
        state = OpportunityState.OPEN if close is None else draw(st.sampled_from([*OpportunityState]))
        opportunities.append(
            Opportunity(
                f"o{i}",
                created_on=draw(st.sampled_from(CREATED)),
                state=state,
                account_id=draw(maybe_account),
                contact_id=draw(maybe_contact),
                owner_id=draw(maybe_user),
                team_member_ids=tuple(draw(st.lists(st.sampled_from(SYSTEM_USERS), max_size=2))),
                stakeholder_contact_ids=tuple(draw(st.lists(st.sampled_from([*contact_ids, "ghost"]), max_size=3))),
                actual_close_date=close,
            )
        )
    records = CrmRecords(contacts, leads, accounts, opportunities)
    kpi = KpiConfig(
        opportunity_requires_team=draw(st.booleans()),
        lead_requires_owner=draw(st.booleans()),
        account_domains=draw(st.sampled_from([{}, {"S1": ["shared.com"]}, {"a0": ["nowhere.org"]}])),
    )
    index = RecordIndex(records, rules(users=USERS, kpi=kpi), kpi=kpi, zone=draw(st.sampled_from(ZONES)))

    # Times at every window's edges (a microsecond either side) and anywhere between.
    tick = timedelta(microseconds=1)
    edges = [as_utc(t) + d for t in CREATED for d in (-tick, timedelta(0))]
    edges += [t + d for t in index.opp_until.values() if t is not None for d in (timedelta(0), tick)]
    when = st.one_of(st.sampled_from(edges), st.integers(0, 120 * 24 * 60).map(lambda m: START + timedelta(minutes=m)))
    known = [str(r) for r in sorted(index.known)]
    refs = st.sampled_from([*known, "contact:ghost", "opportunity:zz", "lead:zz", "account:gone"])
    party = st.one_of(st.none(), refs)
    internal = st.builds(
        lambda person, role: Participant(person, True, role, person if "@" in person else None),
        st.sampled_from(INTERNAL),
        st.sampled_from([*Role]),
    )
    external = st.builds(
        lambda address, ref, role: Participant(
            address or ref or "anon", False, role, address, _ref(ref) if ref else None
        ),
        st.one_of(st.none(), st.sampled_from([*ADDRESSES, "bob@contoso.com"])),
        party,
        st.sampled_from([*Role]),
    )
    acts = []
    for i in range(draw(st.integers(0, 25))):
        t = draw(when)
        parts = draw(st.lists(internal, max_size=2)) + draw(st.lists(external, max_size=3))
        acts.append(
            Activity(
                key=f"k{i:02d}",
                kind=draw(st.sampled_from([*Kind])),
                direction=draw(st.sampled_from([*Direction])),
                time=t,
                end=t,
                participants=tuple(draw(st.permutations(parts))),
                regarding=tuple(_ref(r) for r in draw(st.one_of(st.just([]), st.lists(refs, max_size=2)))),
            )
        )
    acts.sort(key=lambda a: (a.time, a.key))
    return acts, index


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_generated_equal_to_the_reference(scenario: tuple[list[Activity], RecordIndex]) -> None:
    acts, index = scenario
    check(acts, index)
