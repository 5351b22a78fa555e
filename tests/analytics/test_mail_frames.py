"""The column build of Graph mail (mail_frames.py) against the object builder (activities.py), value by value."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relinsights.analytics import CrmEmail, MailMessage, build_activities, mail_frames
from relinsights.analytics.activities import normalise_message_id, resolve_address
from relinsights.analytics.frames import (
    SIDE_EXTERNAL,
    SIDE_IGNORED,
    SIDE_INTERNAL,
    ActivityFrames,
    FrameActivities,
    frames_of,
    people_of,
    repeated,
    run_starts,
    sorted_order,
)
from relinsights.analytics.mail_frames import MailRows, build_mail_frames, mail_rows
from relinsights.analytics.parties import InternalUser, PartyKind, PartyRules
from relinsights.analytics.sources import CrmParty
from relinsights.config import KpiConfig

from .factory import SPELLING_USERS, SPELLINGS, copies, mail, rules

T = datetime(2026, 3, 10, 12, tzinfo=UTC)
# Spellings of one id, none, and characters where Python's strip() / lower() and Rust's differ.
MESSAGE_IDS = ["<a@x>", "<A@X>", " a@x ", "<b@x>", "b@x", "<c@x>", "", None, "\x1c<A@X>", "\u2003<Ǆ@x>", "<b@\u1c89>"]


def tenant_rules() -> PartyRules:
    return rules(users=SPELLING_USERS)


def frame_build(messages: list[MailMessage], party_rules: PartyRules, crm_keys: set[str] = frozenset()) -> tuple:  # type: ignore[assignment]
    skipped: Counter[str] = Counter()
    frames, objects = build_mail_frames(mail_rows(messages), crm_keys, party_rules, skipped)
    return ActivityFrames.combine([frames]), objects, {k: v for k, v in sorted(skipped.items()) if v}


def assert_same(messages: list[MailMessage], party_rules: PartyRules) -> None:
    expected = build_activities(rules=party_rules, messages=messages, keep_sources=False)
    frames, objects, skipped = frame_build(messages, party_rules)
    assert objects == []
    assert list(FrameActivities(frames)) == list(expected.activities)
    assert skipped == dict(expected.skipped)
    # And the generic conversion of the objects gives the very same frames.
    assert frames_of(expected.activities).acts.equals(frames.acts)
    assert frames_of(expected.activities).parts.equals(frames.parts)


@st.composite
def mailboxes_of_mail(draw: st.DrawFn) -> list[MailMessage]:
    out: list[MailMessage] = []
    for n in range(draw(st.integers(0, 12))):
        sender = draw(st.sampled_from([*SPELLINGS, None]))
        message = MailMessage(
            graph_id=f"g{n}",
            mailbox=draw(st.sampled_from(["bob@contoso.com", "robert@contoso.com", "carl@contoso.com", "box"])),
            sent_at=None if draw(st.integers(0, 15)) == 0 else T - timedelta(minutes=draw(st.integers(0, 5000))),
            from_address=sender,
            sender_address=draw(st.sampled_from([*SPELLINGS, None])),
            to=tuple(draw(st.lists(st.sampled_from(SPELLINGS), max_size=4))),
            cc=tuple(draw(st.lists(st.sampled_from(SPELLINGS), max_size=3))),
            bcc=tuple(draw(st.lists(st.sampled_from(SPELLINGS), max_size=2))),
            internet_message_id=draw(st.sampled_from(MESSAGE_IDS)),
            conversation_id=draw(st.sampled_from(["c1", "c2", "", None])),
            in_reply_to=draw(st.sampled_from(MESSAGE_IDS)),
            references=tuple(draw(st.lists(st.sampled_from(MESSAGE_IDS), max_size=3))),
            is_draft=draw(st.integers(0, 10)) == 0,
        )
        out.append(message)
        for i in range(draw(st.integers(0, 2))):  # copies in other mailboxes, some with other recipients
            out.append(
                MailMessage(
                    graph_id=f"g{n}-{i}",
                    mailbox=draw(st.sampled_from(["carl@contoso.com", "ann@fabrikam.com", "bob@contoso.com"])),
                    sent_at=message.sent_at and message.sent_at + timedelta(seconds=draw(st.integers(-60, 60))),
                    from_address=draw(st.sampled_from([message.from_address, None, "eve@fabrikam.com"])),
                    to=message.to if draw(st.booleans()) else tuple(reversed(message.to)),
                    cc=tuple(draw(st.lists(st.sampled_from(SPELLINGS), max_size=2))),
                    internet_message_id=message.internet_message_id,
                    conversation_id=draw(st.sampled_from([message.conversation_id, "c3"])),
                )
            )
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mailboxes_of_mail(), st.randoms(use_true_random=False))
def test_frame_build_equals_object_build(messages: list[MailMessage], rnd: object) -> None:
    rnd.shuffle(messages)  # type: ignore[attr-defined]
    assert_same(messages, tenant_rules())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mailboxes_of_mail())
def test_a_key_whose_hash_repeats_alone_makes_the_same_activity(messages: list[MailMessage]) -> None:
    # As if every key's hash collided with another's: each message is grouped, those of one copy alone.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mail_frames, "_maybe_shared", lambda keys: pl.Series([True] * keys.len()))
        assert_same(messages, tenant_rules())


@pytest.mark.parametrize("chunk", [1, 2])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=mailboxes_of_mail())
def test_recipients_put_in_order_some_activities_at_a_time_make_the_same_activities(
    chunk: int, messages: list[MailMessage]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mail_frames, "RECIPIENTS_CHUNK", chunk)
        assert_same(messages, tenant_rules())


def test_an_email_keys_message_id_is_a_view_of_its_bytes_and_none_for_a_graph_id() -> None:
    keys = pl.Series(["email:<a@x>", "email:graph:AAMk=", "email:<a-much-longer-id-than-twelve-bytes@x>"])
    assert mail_frames.message_id(keys).to_list() == ["<a@x>", None, "<a-much-longer-id-than-twelve-bytes@x>"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mailboxes_of_mail(), st.randoms(use_true_random=False))
def test_copies_read_without_sources_make_what_the_object_builder_makes(
    messages: list[MailMessage], rnd: object
) -> None:
    """The database read leaves `source` unknown (mail_frames.with_sources): the build reads the Graph ids of
    the copies of messages one owner holds several of, and only of copies of messages with several copies,
    and makes the object builder's activities and participants. (The lists of conversation and reply ids,
    which only ever join emails into threads, are compared as sets: their order follows the row ids.)"""
    rnd.shuffle(messages)  # type: ignore[attr-defined]
    rows = mail_rows(messages)
    by_row = dict(rows.messages.select("m", "graph_id").iter_rows())
    asked: list[int] = []

    def graph_ids(ids: list[int]) -> list[tuple[int, str]]:
        asked.extend(ids)
        return [(m, by_row[m]) for m in ids]

    unknown = MailRows(rows.messages.with_columns(source=pl.lit(None, pl.Int64)), rows.recipients)
    built, objects = build_mail_frames(unknown, set(), tenant_rules(), Counter(), graph_ids)
    frames = ActivityFrames.combine([built])
    want = frames_of(build_activities(rules=tenant_rules(), messages=messages, keep_sources=False).activities)
    assert objects == []
    assert frames.parts.equals(want.parts)
    lists = ["conversations", "reply_to"]
    assert frames.acts.drop(lists).equals(want.acts.drop(lists))
    for column in lists:
        assert [set(x) for x in frames.acts.get_column(column)] == [set(x) for x in want.acts.get_column(column)]
    copies = Counter(normalise_message_id(m.internet_message_id) or m.graph_id for m in messages)
    assert all(copies[normalise_message_id(messages[m].internet_message_id) or messages[m].graph_id] > 1 for m in asked)


def test_copies_without_sources_and_no_way_to_read_their_graph_ids_are_an_error() -> None:
    rows = mail_rows([mail("bob@contoso.com", ["ann@fabrikam.com"], "2026-03-01 09:00")])
    unknown = MailRows(rows.messages.with_columns(source=pl.lit(None, pl.Int64)), rows.recipients)
    with pytest.raises(ValueError, match="graph_ids"):
        build_mail_frames(unknown, set(), tenant_rules(), Counter())


def test_copies_aliases_and_replies() -> None:
    first = mail(
        "bob@contoso.com", ["ann@fabrikam.com", "carl@contoso.com"], "2026-03-01 09:00", cc=["eve@fabrikam.com"]
    )
    reply = mail(
        "ann@fabrikam.com",
        ["robert@contoso.com"],
        "2026-03-01 10:00",
        cc=["noreply@fabrikam.com", "bob@contoso.com"],
        in_reply_to=first.internet_message_id,
    )
    internal_only = mail("bob@contoso.com", ["carl@contoso.com"], "2026-03-01 11:00")
    robot = mail("noreply@fabrikam.com", ["bob@contoso.com"], "2026-03-01 11:00")
    unkeyed = mail("bad", ["bob@contoso.com"], "2026-03-01 11:00", mid=None)
    draft = mail("bob@contoso.com", ["zoe@tailspin.com"], "2026-03-01 12:00", draft=True)
    messages = [*copies(first, "carl@contoso.com"), reply, internal_only, robot, unkeyed, draft]
    assert_same(messages, tenant_rules())
    frames, _, skipped = frame_build(messages, tenant_rules())
    assert frames.acts.height == 2
    assert skipped == {"draft": 1, "ignored-sender": 1, "no-direction": 1, "no-sender": 1}


def test_a_message_of_several_copies_takes_its_lists_in_source_order_and_its_first_named_sender() -> None:
    """The copies of a message, in the order read or not: its conversations and the ids it replies to come in
    the copies' source order (their Graph ids' here), its sender from its first copy in primary order that
    names one (a copy of no known sender names none)."""
    base = mail("ann@fabrikam.com", ["bob@contoso.com"], "2026-03-01 09:00", conv="c-first")
    others = [
        replace(
            base,
            graph_id=f"{base.graph_id}-{i}",
            mailbox=box,
            conversation_id=conv,
            in_reply_to=reply,
            from_address=sender,
        )
        for i, (box, conv, reply, sender) in enumerate(
            [
                ("carl@contoso.com", "c-second", "<r2@x>", None),
                ("robert@contoso.com", "c-first", "<r1@x>", "eve@fabrikam.com"),
                ("bob@contoso.com", "c-third", "<r2@x>", "ann@fabrikam.com"),
            ]
        )
    ]
    in_order = [base, *others]
    for messages in (in_order, in_order[::-1], [in_order[2], in_order[0], in_order[3], in_order[1]]):
        assert_same(messages, tenant_rules())
        (act,) = FrameActivities(frame_build(messages, tenant_rules())[0])
        assert act.conversations == ("graph:c-first", "graph:c-second", "graph:c-third")
        assert act.reply_to == ("<r2@x>", "<r1@x>")


def test_keys_a_crm_copy_shares_go_to_the_object_builder() -> None:
    tracked = mail("bob@contoso.com", ["ann@fabrikam.com"], "2026-03-01 09:00")
    other = mail("bob@contoso.com", ["eve@fabrikam.com"], "2026-03-01 10:00")
    crm = CrmEmail(
        activity_id="e1",
        sent_at=tracked.sent_at,
        sender=CrmParty(None, None, "bob@contoso.com"),
        to=(CrmParty(None, None, "ann@fabrikam.com"),),
        message_id=tracked.internet_message_id,
    )
    frames, objects, _ = frame_build([tracked, other], tenant_rules(), {"email:" + str(tracked.internet_message_id)})
    assert objects == [tracked]
    assert frames.acts.get_column("key").to_list() == ["email:" + str(other.internet_message_id)]
    both = build_activities(rules=tenant_rules(), messages=objects, crm_emails=[crm], keep_sources=False)
    assert [a.regarding for a in both.activities] == [()] and len(both.activities) == 1


@pytest.mark.parametrize("chunk", [1, 2, 250_000])
def test_copies_a_crm_copy_shares_keep_their_raw_ids_whatever_the_parts_normalised(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw ids are let go a part (ID_CHUNK) at a time as they are normalised, but for the copies the object
    builder takes, which keep theirs as written; the caller's own frame keeps all of its ids."""
    monkeypatch.setattr(mail_frames, "ID_CHUNK", chunk)
    sent = [mail("bob@contoso.com", [f"p{i}@fabrikam.com"], f"2026-03-01 0{i}:00") for i in range(5)]
    tracked = [
        replace(sent[1], internet_message_id=" <Tracked-1@X> "),
        replace(sent[3], internet_message_id="<tracked-3@x>"),
    ]
    messages = [sent[0], tracked[0], sent[2], tracked[1], sent[4]]
    rows = mail_rows(messages)
    theirs = rows.messages
    keys = {"email:<tracked-1@x>", "email:<tracked-3@x>"}
    frames, objects = build_mail_frames(rows, keys, tenant_rules(), Counter())
    assert sorted(objects, key=lambda m: m.graph_id) == sorted(tracked, key=lambda m: m.graph_id)
    assert sorted(ActivityFrames.combine([frames]).acts.get_column("key").to_list()) == sorted(
        f"email:{normalise_message_id(m.internet_message_id)}" for m in (sent[0], sent[2], sent[4])
    )
    assert theirs.get_column("internet_message_id").to_list() == [m.internet_message_id for m in messages]


def test_nothing_in_nothing_out() -> None:
    assert_same([], tenant_rules())


# Pieces of addresses where the resolver's steps can go wrong as columns: brackets, "mailto:", spaces Python
# strips and Rust does not (\x1c), dots at a domain's ends, "+" tags, upper case, beyond ASCII.
ADDRESS_PIECES = [
    "bob", "Robert", "olga", "ann", "noreply", "no-reply+x", "+x", "<x", "x y", "mailto:", "MAILTO:", "<", ">",
    " ", "\t", "\x1c", "\u2003", "@", "@@", ".", "-", "_", "contoso.com", "Contoso.COM", "fabrikam.com",
    "sub.bad.com", "bad.com", "b", "-b.com", "bücher.de", "Zoë",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.lists(st.sampled_from(ADDRESS_PIECES), max_size=6).map("".join),
            st.tuples(*[st.lists(st.sampled_from(ADDRESS_PIECES), max_size=3).map("".join)] * 2).map("@".join),
        ),
        max_size=40,
    )
)
def test_addresses_resolve_as_columns_exactly_as_the_object_builder_resolves_them(values: list[str]) -> None:
    users = [
        *SPELLING_USERS,
        InternalUser("<x@contoso.com"),
        InternalUser("Ann@Other.org", ("mailto:ann@fabrikam.com",)),
    ]
    kpi = KpiConfig(excluded_domains=["bad.com"], excluded_addresses=["Eve@Fabrikam.com"])
    party_rules = PartyRules(internal_domains=["contoso.com"], users=users, kpi=kpi)
    # An address canonical once but not twice (mailto:mailto:@contoso.com is mailto:@contoso.com, which is no
    # address) classifies as invalid: it does not count, as an ignored one does not (people_of: ignored).
    sides = {
        PartyKind.INTERNAL: SIDE_INTERNAL,
        PartyKind.EXTERNAL: SIDE_EXTERNAL,
        PartyKind.IGNORED: SIDE_IGNORED,
        PartyKind.INVALID: SIDE_IGNORED,
    }
    raw = [
        *values,
        *SPELLINGS,
        *("mailto:ann@fabrikam.com", "MAILTO:Bob@Contoso.com", "mailto:mailto:ann@fabrikam.com"),
        "mailto:mailto:@contoso.com",
        *("mailto:>@contoso.com", "mailto:>x@contoso.com", "mailto:<x@contoso.com"),  # (">" found by hypothesis)
        *("x y@contoso.com", "a\x1c@fabrikam.com", "< <bob@contoso.com", "Ann@Sub.Bad.com."),
        *("no-reply+x@fabrikam.com", "noreply+tag@contoso.com", "ann+tag@fabrikam.com"),
    ]
    got = {row[0]: row[1:] for row in people_of(party_rules, pl.Series(raw, dtype=pl.String)).iter_rows()}
    assert set(got) == set(raw)
    for value in raw:
        who = resolve_address(party_rules, value)
        assert got[value] == ((who.person, sides[who.kind], who.address) if who else (None, None, None)), value


@pytest.mark.parametrize("chunk", [1, 3, 4, 250_000])
def test_message_ids_normalise_a_chunk_at_a_time_as_python_does(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail_frames, "ID_CHUNK", chunk)
    ids = MESSAGE_IDS * 3
    got = mail_frames.normalise_ids(pl.Series(ids, dtype=pl.String))
    assert got.to_list() == [normalise_message_id(v) for v in ids]


# Ids as they come, and near misses of the plain "<...>" the column path only lower-cases: spaces (Python's
# and not Rust's too), brackets inside, letters beyond ASCII.
_ID_CHARACTERS = st.sampled_from(["<", ">", " ", "\t", "\x1c", "\u2003", "a", "B", "@", ".", "1", "É", "Ǆ", "ß"])


_IDS = st.text(_ID_CHARACTERS, max_size=8)


@given(st.lists(st.none() | _IDS.map(lambda v: f"<{v}>") | _IDS, max_size=30))
def test_any_message_id_normalises_as_python_does(ids: list[str | None]) -> None:
    got = mail_frames.normalise_ids(pl.Series(ids, dtype=pl.String))
    assert got.to_list() == [normalise_message_id(v) for v in ids]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-(2**40), 2**40)), max_size=40, unique_by=lambda p: p[1]))
def test_a_copys_primary_place_is_its_place_in_mailbox_and_source_order(copies_: list[tuple[int, int]]) -> None:
    # Ranks as read (1..n: one 64-bit key) and any other numbers (two columns sorted) give the same places.
    for pairs in (copies_, [(box, rank) for rank, (box, _) in enumerate(copies_, start=1)]):
        box = pl.Series([b for b, _ in pairs], dtype=pl.UInt32)
        source = pl.Series([s for _, s in pairs], dtype=pl.Int64)
        in_order = sorted(range(len(pairs)), key=lambda i: pairs[i])
        assert mail_frames._places(box, source).to_list() == [in_order.index(i) for i in range(len(pairs))]


@given(st.lists(st.integers(0, 2**64 - 1) | st.sampled_from([0, 7, 2**64 - 1]), max_size=40))
def test_a_value_is_repeated_where_it_occurs_more_than_once(values: list[int]) -> None:
    """The copies' hashes that repeat (`_maybe_shared`, `with_sources`): found in sorted order."""
    counts = Counter(values)
    assert repeated(pl.Series(values, dtype=pl.UInt64)).to_list() == [counts[v] > 1 for v in values]


@given(st.lists(st.integers(0, 5), max_size=30).map(sorted))
def test_a_run_starts_at_the_first_row_and_at_each_row_unlike_the_one_before(values: list[int]) -> None:
    """Runs of equal values (an activity's participants, a record's links, days by record)."""
    expected = [i for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert run_starts(np.array(values, dtype=np.uint32)).tolist() == expected


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 9)), unique=True, max_size=30),
    st.sampled_from([1, 2**60, -1]),
    st.booleans(),
)
def test_the_sorted_order_by_a_packed_key_is_the_columns_order_whether_it_can_pack_them_or_not(
    rows: list[tuple[int, int, int]], scale: int, with_null: bool
) -> None:
    """By one key where the columns fit; where a column needs 63 bits, holds a negative value or a null, by the
    columns themselves (the KPIs' turns, the mail build's primary places)."""
    frame = pl.DataFrame(rows, schema={"r": pl.Int32, "thread": pl.Int64, "krank": pl.Int32}, orient="row")
    frame = frame.with_columns(pl.col("thread") * scale, payload=pl.int_range(pl.len()))
    if with_null and frame.height:
        frame = frame.with_columns(krank=pl.when(pl.col("payload") == 0).then(None).otherwise(pl.col("krank")))
    order = sorted_order(frame, "r", "thread", "krank")
    assert frame.gather(order).equals(frame.sort("r", "thread", "krank"))


ADDRESS_OR_NONE = st.one_of(st.none(), st.sampled_from([*SPELLINGS, "not an address", ""]))


@given(st.lists(st.lists(ADDRESS_OR_NONE, max_size=12), min_size=1, max_size=4))
def test_each_address_is_its_row_among_the_distinct_addresses_of_every_column(columns: list[list[str | None]]) -> None:
    """The build's columns of addresses, coded by one mapping: each value's row holds that very value (and so
    its person), the same value has the same row in every column, a null has none."""
    party_rules = rules(users=SPELLING_USERS)
    who, rows = mail_frames._resolved(party_rules, [pl.Series(c, dtype=pl.String) for c in columns])
    assert who.get_column("raw").n_unique() == who.height  # (each distinct value once)
    assert set(who.get_column("raw")) == {v for c in columns for v in c if v is not None}
    raw = who.get_column("raw").to_list()
    for column, row in zip(columns, rows, strict=True):
        assert [raw[w] if w is not None else None for w in row.to_list()] == column


def test_mailboxes_rank_by_their_owners_and_a_mailbox_that_is_no_address_by_itself() -> None:
    party_rules = rules(users=SPELLING_USERS)
    boxes = pl.Series(["Robert@Contoso.com", "carl@contoso.com", "bob@contoso.com", "shared box"])
    who = people_of(party_rules, boxes)
    ranks = mail_frames.owner_ranks(who, pl.Series([0, 1, 2, 3], dtype=pl.UInt32)).to_list()
    # bob's two spellings are one owner; "shared box" is its own
    assert ranks[0] == ranks[2] and len({ranks[0], ranks[1], ranks[3]}) == 3
    assert sorted({ranks[0], ranks[1], ranks[3]}) == [1, 2, 3]


def test_addresses_coded_or_as_strings_make_the_same_activities() -> None:
    """The database read gives addresses as categoricals of its own (CODED); frames with strings instead (as
    an empty holder has them) are coded as the builder reads them, to the same activities."""
    messages = [
        *copies(mail("ann@fabrikam.com", ["bob@contoso.com"], "2026-03-01 09:00", cc=["carl@x.com"]), "carl@x.com"),
        mail("bob@contoso.com", ["ann@fabrikam.com", "noreply@fabrikam.com"], "2026-03-01 10:00"),
        mail("Carl@Contoso.com", ["dora@gmail.com"], "2026-03-02 10:00"),
    ]
    coded = mail_rows(messages)
    assert {coded.messages.schema[c] for c in ("mailbox", "from_address", "sender_address")} == {mail_frames.CODED}
    assert coded.recipients.schema["role"] == coded.recipients.schema["address"] == mail_frames.CODED
    strings = MailRows(
        coded.messages.cast({c: pl.String for c in ("mailbox", "from_address", "sender_address")}),
        coded.recipients.cast({"role": pl.String, "address": pl.String}),
    )
    built = [build_mail_frames(rows, set(), tenant_rules(), Counter())[0] for rows in (coded, strings)]
    assert built[0].acts.height == 3
    assert built[0].acts.equals(built[1].acts) and built[0].parts.equals(built[1].parts)


def test_the_reads_categories_go_once_the_builder_has_taken_the_rows(tmp_path: Path) -> None:
    """Every address of a year of mail is in the read's categories: they go with the last column of them, once
    the builder has taken the rows. The holder it leaves empty types its addresses as strings (a column of
    CODED, even without rows, kept them to the end of the run: 23 MiB at 2,000,000 activities)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from collections import Counter
            from datetime import UTC, datetime
            import polars as pl
            from relinsights.analytics.mail_frames import build_mail_frames, mail_rows
            from relinsights.analytics.parties import PartyRules
            from relinsights.analytics.sources import MailMessage

            def held() -> int:
                return pl.Categories("read", "relinsights").to_series().len()

            at = datetime(2026, 3, 1, tzinfo=UTC)
            rows = mail_rows(
                MailMessage(graph_id=f"g{i}", mailbox="bob@contoso.com", sent_at=at, from_address="bob@contoso.com",
                            to=(f"p{i}@fabrikam.com",), internet_message_id=f"<m{i}@x>", conversation_id="c")
                for i in range(50)
            )
            before = held()
            frames, _ = build_mail_frames(rows, set(), PartyRules(internal_domains=["contoso.com"]), Counter())
            print(before, held(), frames.acts.height, len(rows))
            """
        )
    )
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["52", "0", "50", "0"]  # (51 addresses and "to" before; none after)
