"""Memory-saving representations of the analytics core: same values, fewer objects."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relinsights.analytics import (
    Account,
    Activity,
    Contact,
    CrmEmail,
    CrmParty,
    CrmRecords,
    Direction,
    Kind,
    Link,
    PhoneCall,
    RecordIndex,
    Settings,
    activity_table,
    assign_threads,
    build_activities,
    match_activities,
)
from relinsights.analytics.activity_table import (
    _ByKey,
    components,
    settle_threads,
    settled_groups,
    thread_groups,
    token_hashes,
)
from relinsights.analytics.frames import (
    ACT_SCHEMA,
    KIND,
    PART_SCHEMA,
    ActivityFrames,
    FrameActivities,
    frames_of,
)
from relinsights.analytics.matching import LinkTable

from .factory import copies, event_copy, mail, meeting, rules
from .test_matching import ANN, BOB, CARL, USERS, acc, con

ZOE = "zoe@fabrikam.com"


def _threads_by_search(activities: list[Activity]) -> dict[str, str]:
    """The reference for assign_threads, written independently: a graph of emails, conversation ids and
    message ids (an email is joined to its conversations, its own id and every id it refers to), its
    connected components found by search, each named by its smallest email key."""
    emails = [a for a in activities if a.kind is Kind.EMAIL]
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for a in emails:
        node = ("email", a.key)
        edges.setdefault(node, set())
        others = [("conv", c) for c in a.conversations] + [("id", m) for m in (a.message_id, *a.reply_to) if m]
        for other in others:
            edges[node].add(other)
            edges.setdefault(other, set()).add(node)
    name: dict[tuple[str, str], str] = {}
    for start in edges:
        if start in name:
            continue
        component, todo = {start}, [start]
        while todo:
            for nxt in edges[todo.pop()] - component:
                component.add(nxt)
                todo.append(nxt)
        smallest = min((k for kind, k in component if kind == "email"), default="")
        name.update(dict.fromkeys(component, smallest))
    return {a.key: name[("email", a.key)] for a in emails}


def test_links_are_stored_compactly_and_made_equal_on_demand() -> None:
    records = CrmRecords(
        contacts=[Contact("ann", (ANN,), parent_account_id="fab"), Contact("zoe", (ZOE,), parent_account_id="fab")],
        accounts=[Account("fab", website_url="fabrikam.com")],
    )
    r = rules(users=USERS)
    messages = [
        mail(BOB, [ANN], "2026-03-01 09:00"),
        mail(ZOE, [CARL], "2026-03-02 09:00"),
        mail(BOB, [ANN, ZOE], "2026-03-03 09:00", cc=[CARL]),
        mail(ANN, [BOB], "2026-03-04 09:00"),
    ]
    acts = build_activities(rules=r, messages=messages).activities
    res = match_activities(acts, RecordIndex(records, r, zone=Settings().zone))
    table = res.links
    assert isinstance(table, LinkTable)
    assert list(table) == [acc("fab"), con("ann"), con("zoe")] and len(table) == 3 and acc("fab") in table
    assert res.link_count == sum(len(v) for v in table.values()) == 9

    account = table[acc("fab")]
    assert [lk.activity for lk in account] == list(acts)  # in activity order, the activities themselves
    assert all(type(lk) is Link and lk.record == acc("fab") for lk in account)
    assert [(lk.reasons, lk.members) for lk in account] == [
        (("account-contact", "account-domain"), {ANN}),
        (("account-contact", "account-domain"), {ZOE}),
        (("account-contact", "account-domain"), {ANN, ZOE}),
        (("account-contact", "account-domain"), {ANN}),
    ]
    # Made on demand: equal every time, and the (reasons, members) objects are shared between links.
    assert table[acc("fab")] == account and table[acc("fab")] is not account
    assert account[0].members is account[3].members and account[0].reasons is account[2].reasons
    assert table[con("ann")][0].reasons is table[con("zoe")][0].reasons
    # A plain dict of the same links compares equal (and so do results holding either).
    plain = {ref: table[ref] for ref in table}
    assert table == plain and plain == table and res.links_of(con("zoe")) == plain[con("zoe")]
    assert res.links_of(acc("nobody")) == ()
    assert repr(table).startswith("LinkTable({RecordRef(")
    assert list(table.pairs(acc("fab"))[::2]) == [0, 1, 2, 3] and list(table.pairs(con("zoe"))[::2]) == [1, 2]


def test_one_build_shares_participants_groups_and_conversations() -> None:
    r = rules(users=USERS)
    messages = [
        mail(BOB, [ANN], "2026-03-01 09:00", conv="c1"),
        mail(BOB, [ANN], "2026-03-02 09:00", conv="c1"),
        mail(ANN, [BOB], "2026-03-03 09:00", conv="c1"),
        mail(ANN, [BOB], "2026-03-04 09:00", conv="c2"),
        mail(BOB, [ANN, ZOE], "2026-03-05 09:00", conv="c2"),
    ]
    a1, a2, a3, a4, a5 = build_activities(rules=r, messages=messages).activities
    assert a1.participants is a2.participants  # the same people in the same roles: one tuple
    assert a3.participants is a4.participants
    bob_from, ann_to = a1.participants
    ann_from, bob_to = a3.participants
    assert bob_from.person == bob_to.person and bob_from != bob_to  # one person, two roles: two participants
    assert (ann_to.role, ann_from.role) == ("to", "from")
    assert a5.participants[:2] == a1.participants and a5.participants[1] is ann_to  # other group, same people
    assert a1.conversations == ("graph:c1",) and a1.conversations is a2.conversations is a3.conversations
    assert a4.conversations == ("graph:c2",) and a4.conversations is a5.conversations

    # Nothing is shared between builds, and each build's activities equal the other's.
    again = build_activities(rules=r, messages=messages).activities
    assert again == (a1, a2, a3, a4, a5) and again[0].participants is not a1.participants
    assert again[0].participants[0] is not a1.participants[0]


def test_activities_without_sources_are_the_same_activities() -> None:
    r = rules(users=USERS)
    m = mail(BOB, [ANN], "2026-03-01 09:00", mid="<x1@test>")
    bob, ann = CrmParty("systemuser", "su-bob", BOB), CrmParty("contact", "ann", ANN)
    crm = CrmEmail("A1", m.sent_at, sender=bob, to=(ann,), message_id="X1@test")  # the same email, tracked
    meet = meeting(BOB, {ANN: "accepted"}, "2026-03-02 10:00", "2026-03-02 11:00")
    call = PhoneCall("C1", True, (bob,), (ann,), actual_end=datetime(2026, 3, 3, 9, tzinfo=UTC))
    rows = {
        "messages": [*copies(m, CARL), mail(ZOE, [CARL], "2026-03-04 09:00")],
        "events": [meet, event_copy(meet, CARL)],
        "crm_emails": [crm],
        "phone_calls": [call],
    }
    full = build_activities(rules=r, **rows)  # type: ignore[arg-type]
    lean = build_activities(rules=r, keep_sources=False, **rows)  # type: ignore[arg-type]
    assert [len(a.sources) for a in full.activities] == [3, 2, 1, 1]
    assert all(a.sources == () for a in lean.activities)
    assert lean.activities == tuple(replace(a, sources=()) for a in full.activities)
    assert lean.skipped == full.skipped


T = datetime(2026, 3, 10, 12, tzinfo=UTC)
_ids = st.sampled_from(["<a@x>", "<b@x>", "<c@x>", "<d@x>", "<e@x>", "<f@x>"])


@st.composite
def thread_inputs(draw: st.DrawFn) -> list[Activity]:
    """Emails (and a few meetings) sharing keys, conversations, message ids and references at random."""
    out = []
    for n in range(draw(st.integers(0, 25))):
        mid = draw(st.none() | _ids)
        key = draw(st.sampled_from([f"email:{mid}" if mid else f"email:graph:g{n}", f"email:k{n % 4}"]))
        out.append(
            Activity(
                key=key,
                kind=draw(st.sampled_from([Kind.EMAIL] * 5 + [Kind.MEETING])),
                direction=Direction.OUTGOING,
                time=T - timedelta(minutes=n),
                end=T - timedelta(minutes=n),
                participants=(),
                message_id=mid,
                conversations=tuple(
                    draw(st.lists(st.sampled_from(["graph:c1", "graph:c2", "crm:c1", "c3"]), max_size=2))
                ),
                reply_to=tuple(draw(st.lists(_ids, max_size=3))),
            )
        )
    return out


@given(thread_inputs())
def test_threads_equal_an_independent_graph_search(activities: list[Activity]) -> None:
    expected = _threads_by_search(activities)
    got = assign_threads(activities)
    assert got == expected and list(got) == list(expected)


def test_threads_join_through_ids_nobody_holds() -> None:
    def email(key: str, mid: str | None, conv: str = "", refs: tuple[str, ...] = ()) -> Activity:
        return Activity(
            key,
            Kind.EMAIL,
            Direction.INCOMING,
            T,
            T,
            (),
            message_id=mid,
            conversations=(conv,) if conv else (),
            reply_to=refs,
        )

    acts = [
        email("email:<z@x>", "<z@x>", "graph:c1"),
        email("email:<y@x>", "<y@x>", "graph:c2", refs=("<parent@x>",)),  # the parent is not synced...
        email("email:<x@x>", "<x@x>", refs=("<parent@x>",)),  # ...its two replies still share a thread
        email("email:<w@x>", "<w@x>", "crm:c1"),
        email("email:<v@x>", "<v@x>", "graph:c1"),
        email("email:<u@x>", "<u@x>", "c1"),  # conversation ids compare with their namespace
    ]
    assert (
        assign_threads(acts)
        == _threads_by_search(acts)
        == {
            "email:<z@x>": "email:<v@x>",
            "email:<y@x>": "email:<x@x>",
            "email:<x@x>": "email:<x@x>",
            "email:<w@x>": "email:<w@x>",
            "email:<v@x>": "email:<v@x>",
            "email:<u@x>": "email:<u@x>",
        }
    )
    # One message id under two keys (not from the builder, which keys an email by its id): one thread,
    # whichever comes first.
    pair = [email("email:crm:A1", "<t@x>"), email("email:<t@x>", "<t@x>")]
    for acts in (pair, pair[::-1]):
        assert assign_threads(acts) == _threads_by_search(acts)
        assert set(assign_threads(acts).values()) == {"email:<t@x>"}


def _components_by_search(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Each node's component named by its least node, by a plain search (the test's own reference)."""
    near: dict[int, set[int]] = {}
    for u, v in edges:
        near.setdefault(u, set()).add(v)
        near.setdefault(v, set()).add(u)
    out = [-1] * n
    for start in range(n):  # in increasing order: a component is first reached from its least node
        if out[start] < 0:
            out[start], todo = start, [start]
            while todo:
                for m in near.get(todo.pop(), ()):
                    if out[m] < 0:
                        out[m] = start
                        todo.append(m)
    return out


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))
    )
)
def test_components_equal_a_plain_search(graph: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = graph
    u, v = (np.array([e[i] for e in edges], dtype=np.int64) for i in (0, 1))
    assert components(n, u, v).tolist() == _components_by_search(n, edges)


def test_components_of_long_shuffled_chains_take_a_few_rounds() -> None:
    # Paths whose nodes are numbered at random: each round hooks only some roots under smaller ones, so
    # these need several rounds (a path numbered in order needs one).
    rng = np.random.default_rng(7)
    order = rng.permutation(5000)
    paths = np.split(order, [1000, 3500])  # three paths of 1,000, 2,500 and 1,500 nodes
    u = np.concatenate([p[:-1] for p in paths])
    v = np.concatenate([p[1:] for p in paths])
    labels = components(5000, v, u)
    for p in paths:
        assert set(labels[p].tolist()) == {int(p.min())}
    assert components(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]


def test_participant_lookups_keep_the_first_row_of_a_person_and_find_by_pair() -> None:
    rows = pl.DataFrame(
        {"a": [0, 0, 0, 1, 2, 2], "person": [5, 3, 5, 5, 1, 0], "role": [1, 2, 3, 4, 5, 6]},
        schema={"a": pl.Int32, "person": pl.Int32, "role": pl.Int8},
    )
    look = _ByKey(rows, ["role"])
    asked = pl.DataFrame({"a": [0, 0, 1, 2, 1, 3], "person": [5, 3, 5, 0, 3, 0]})
    # (a, person) (0, 5) is there twice: the first row's role; (1, 3) and (3, 0) are not there at all.
    assert look.find(asked, "a", "person").rows() == [(0, 5, 1), (0, 3, 2), (1, 5, 4), (2, 0, 6)]
    assert look.has(pl.Series([0, 1, None, 2], dtype=pl.Int32), pl.Series([3, 3, 5, 1])).to_list() == [
        True,
        False,
        False,
        True,
    ]


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2**31 - 1), st.integers(0, 100)), max_size=300),
    st.lists(st.tuples(st.none() | st.integers(0, 45), st.integers(0, 2**31 - 1)), max_size=100),
    st.randoms(use_true_random=False),
)
def test_participant_lookups_find_what_a_dict_of_the_first_rows_finds(
    rows: list[tuple[int, int, int]], asked: list[tuple[int | None, int]], rnd: object
) -> None:
    # Activities of no, one or many people (a person twice, too), people asked of activities that are not
    # there, before or after all others, and asked again (a few of the rows' own pairs are asked).
    asked += [(a, p) for a, p, _ in rows[::3]]
    rnd.shuffle(asked)  # type: ignore[attr-defined]
    first: dict[tuple[int, int], int] = {}
    for a, person, role in rows:
        first.setdefault((a, person), role)
    look = _ByKey(
        pl.DataFrame(rows, schema={"a": pl.Int32, "person": pl.Int32, "role": pl.Int32}, orient="row"), ["role"]
    )
    frame = pl.DataFrame(asked, schema={"a": pl.Int32, "person": pl.Int32}, orient="row")
    expected = [(a, p, first[a, p]) for a, p in asked if a is not None and (a, p) in first]
    assert look.find(frame.drop_nulls(), "a", "person").rows() == expected
    got = look.has(frame.get_column("a"), frame.get_column("person")).to_list()
    assert got == [a is not None and (a, p) in first for a, p in asked]


def _partition(groups: list[int | None]) -> set[frozenset[int]]:
    rows: dict[int, set[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            rows.setdefault(g, set()).add(i)
    return {frozenset(r) for r in rows.values()}


@settings(deadline=None)  # its first example waits for polars to start its threads
@given(thread_inputs())
def test_settled_threads_are_the_same_threads_and_hold_none_of_the_ids(activities: list[Activity]) -> None:
    acts = list({a.key: a for a in reversed(activities)}.values())  # the builder gives each key one activity
    frames = frames_of(acts)
    settled = settle_threads(frames)
    # Both engines find the threads they found over the ids, named as they were (each by its smallest key).
    assert assign_threads(FrameActivities(settled)) == assign_threads(acts)
    threads = _partition(thread_groups(frames.acts).to_list())
    assert _partition(thread_groups(settled.acts).to_list()) == threads
    # The frames say so, and the activity table then reads each email's thread from its token.
    assert settled.settled and not frames.settled
    assert _partition(settled_groups(settled.acts).to_list()) == threads
    # What an email keeps of its ids is one short token; everything else is as it was.
    emails = settled.acts.filter(pl.col("kind") == KIND[Kind.EMAIL])
    assert emails.get_column("message_id").null_count() == emails.height
    assert emails.get_column("reply_to").list.len().sum() == 0
    assert emails.get_column("conversations").list.len().to_list() == [1] * emails.height
    others = ~pl.col("kind").eq(KIND[Kind.EMAIL])
    assert settled.acts.filter(others).equals(frames.acts.filter(others))
    assert settled.acts.drop("message_id", "conversations", "reply_to").equals(
        frames.acts.drop("message_id", "conversations", "reply_to")
    )
    assert settled.parts.equals(frames.parts)


@settings(deadline=None)
@given(thread_inputs())
def test_threads_are_the_same_where_ids_share_a_hash(activities: list[Activity]) -> None:
    """Emails naming the same id are found by the id's hash; where two ids share it, the second hash tells
    them apart and the ids themselves are grouped: here every id has the same first hash."""
    acts = list({a.key: a for a in reversed(activities)}.values())
    frames = frames_of(acts)

    def colliding(tokens: pl.Series) -> tuple[pl.Series, pl.Series]:
        return pl.zeros(tokens.len(), pl.UInt64, eager=True), token_hashes(tokens)[1]

    with patch.object(activity_table, "token_hashes", colliding):
        settled = settle_threads(frames)
    assert assign_threads(FrameActivities(settled)) == assign_threads(acts)


def test_frame_activities_let_their_frames_go_and_keep_their_length() -> None:
    """The KPI job lets the frames go once its activity table is built: the sequence keeps its length (links
    are counted by it), its frames are gone, and an activity asked for after is an error, not a wrong one."""
    messages = [mail(BOB, [ANN], "2026-03-01 09:00"), mail(ANN, [BOB], "2026-03-02 09:00")]
    acts = build_activities(rules=rules(users=USERS), messages=messages).activities
    lazy = FrameActivities(frames_of(acts))
    assert list(lazy) == [replace(a, sources=()) for a in acts] and len(acts) == 2
    lazy.release()
    assert len(lazy) == 2 and lazy.frames.acts.height == 0 and lazy.frames.parts.height == 0
    with pytest.raises(IndexError):
        lazy[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.text("ab<>", min_size=1, max_size=4)),
        unique_by=lambda row: row[1],
        max_size=30,
    ),
    st.randoms(use_true_random=False),
)
def test_combined_activities_are_in_time_then_key_order_with_their_participants(
    rows: list[tuple[int | None, str]], rnd: object
) -> None:
    """Activities combined are sorted by (time, key), nulls first; the participants follow their activities."""
    rnd.shuffle(rows)  # type: ignore[attr-defined]
    acts = pl.DataFrame(rows, schema={"t": pl.Int64, "key": pl.String}, orient="row")
    first = frames_of([])
    piece = ActivityFrames(
        acts.with_columns(**{c: pl.lit(None, dtype=d) for c, d in ACT_SCHEMA.items() if c not in ("t", "key")}).select(
            list(ACT_SCHEMA)
        ),
        pl.DataFrame(
            {"a": range(len(rows)), "person": [k for _, k in rows]},
            schema={"a": pl.Int32, "person": PART_SCHEMA["person"]},
        ).with_columns(**{c: pl.lit(None, dtype=d) for c, d in PART_SCHEMA.items() if c not in ("a", "person")}),
    )
    both = ActivityFrames.combine([first, piece])
    ordered = sorted(rows, key=lambda row: (row[0] is not None, row[0] or 0, row[1]))
    assert both.acts.select("t", "key").rows() == ordered
    # Each participant (here named after its activity's key) points at its activity's new row.
    assert both.parts.select("a", "person").rows() == [(i, k) for i, (_, k) in enumerate(ordered)]
