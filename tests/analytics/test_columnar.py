"""The column engine (analytics/columnar.py) against the per-record reference (kpis.compute_record_kpis).

Every analytics test already runs both through factory.run; this drives them apart where they are most
likely to differ: times on a coarse grid (so activities fall exactly on the window, lookback, health,
trend and response-window edges), a zone with DST and one whose days start at a DST change, a short
lookback, business hours, calls (open ones too), all-day and declined meetings, reply chains, several
contacts of one account, a lead and opportunities, and records computed a batch at a time over one
shared activity table.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relinsights.analytics import (
    Account,
    Attendee,
    CalendarEvent,
    CallState,
    Contact,
    CrmParty,
    CrmRecords,
    Entity,
    Lead,
    MailMessage,
    Opportunity,
    PhoneCall,
    RecordRef,
    Settings,
    activity_table,
    assign_threads,
    compute_record_kpis,
)
from relinsights.analytics.activity_table import ActivityTable
from relinsights.analytics.columnar import _distinct_rows, compute_kpis
from relinsights.analytics.matching import LinkTable
from relinsights.compute.fingerprint import settings_key
from relinsights.config import HealthConfig, KpiConfig

from .factory import run

INTERNAL = ["bob@contoso.com", "carl@contoso.com"]
EXTERNAL = ["ann@fabrikam.com", "eve@fabrikam.com", "ann.b@fabrikam.com", "zoe@tailspin.com", "max@gmail.com"]
PEOPLE = INTERNAL + EXTERNAL
T = datetime(2026, 3, 29, 12, tzinfo=UTC)  # the week Europe changes to summer time
RECORDS = CrmRecords(
    contacts=(
        Contact("ann", ("ann@fabrikam.com", "ann.b@fabrikam.com"), "fab"),
        Contact("eve", ("eve@fabrikam.com",), "fab"),
        Contact("zoe", ("zoe@tailspin.com",)),
    ),
    accounts=(Account("fab", website_url="https://www.fabrikam.com"),),
    leads=(Lead("max", ("max@gmail.com",)),),
    opportunities=(
        Opportunity("deal", created_on=T - timedelta(days=200), account_id="fab", contact_id="ann"),
        Opportunity("old", created_on=T - timedelta(days=300), contact_id="zoe"),
    ),
)
# Hours before T on which edges fall for the settings below: 14 / 30 / 90 / 104 days, 2 / 24 / 168 hours,
# and the first local midnight of the 60-day series in UTC, Berlin and Santiago.
EDGES = [0, 2, 24, 168, 14 * 24, 30 * 24, 44 * 24, 59 * 24, 60 * 24, 90 * 24, 104 * 24]
EDGES += [59 * 24 + 12, 59 * 24 + 13, 59 * 24 + 9]


@st.composite
def hours_before(draw: st.DrawFn) -> int:
    edge = draw(st.sampled_from(EDGES))
    return edge + draw(st.sampled_from([-1, 0, 0, 1])) if draw(st.booleans()) else draw(st.integers(-72, 110 * 24))


@st.composite
def emails(draw: st.DrawFn) -> list[MailMessage]:
    out: list[MailMessage] = []
    for n in range(draw(st.integers(0, 16))):
        sender = draw(st.sampled_from(PEOPLE))
        others = [p for p in PEOPLE if p != sender]
        to = draw(st.lists(st.sampled_from(others), min_size=1, max_size=3, unique=True))
        cc = draw(st.lists(st.sampled_from([p for p in others if p not in to]), max_size=2, unique=True))
        reply = draw(st.none() | st.integers(0, max(0, n - 1))) if n else None
        out.append(
            MailMessage(
                graph_id=f"m{n}",
                mailbox=sender,
                sent_at=T - timedelta(hours=draw(hours_before())),
                from_address=sender,
                to=tuple(to),
                cc=tuple(cc),
                internet_message_id=f"<m{n}@x>",
                conversation_id=f"c{draw(st.integers(0, 3))}",
                in_reply_to=f"<m{reply}@x>" if reply is not None else None,
            )
        )
    return out


@st.composite
def meetings(draw: st.DrawFn) -> list[CalendarEvent]:
    out: list[CalendarEvent] = []
    for n in range(draw(st.integers(0, 5))):
        organizer = draw(st.sampled_from(PEOPLE))
        attendees = draw(
            st.lists(st.sampled_from([p for p in PEOPLE if p != organizer]), min_size=1, max_size=4, unique=True)
        )
        start = T - timedelta(hours=draw(hours_before()))
        all_day = draw(st.booleans()) and draw(st.booleans())
        out.append(
            CalendarEvent(
                graph_id=f"e{n}",
                mailbox=organizer,
                start=start,
                end=start + timedelta(minutes=draw(st.sampled_from([0, 20, 45, 61, 24 * 60]))),
                organizer=organizer,
                attendees=tuple(
                    Attendee(a, "required", draw(st.sampled_from(["accepted", "declined", "none", None])))
                    for a in attendees
                ),
                ical_uid=f"uid{n}",
                is_all_day=all_day,
            )
        )
    return out


@st.composite
def calls(draw: st.DrawFn) -> list[PhoneCall]:
    out: list[PhoneCall] = []
    for n in range(draw(st.integers(0, 4))):
        user = CrmParty("systemuser", "u-bob", "bob@contoso.com")
        customer = draw(
            st.sampled_from([CrmParty("contact", "ann", None), CrmParty("contact", "zoe", "zoe@tailspin.com")])
        )
        outgoing = draw(st.booleans())
        out.append(
            PhoneCall(
                activity_id=f"call{n}",
                outgoing=outgoing,
                from_parties=(user,) if outgoing else (customer,),
                to_parties=(customer,) if outgoing else (user,),
                actual_end=T - timedelta(hours=draw(hours_before())),
                duration_minutes=draw(st.sampled_from([None, 0, 7.5, 30])),
                state=draw(st.sampled_from([CallState.COMPLETED, CallState.COMPLETED, CallState.OPEN])),
            )
        )
    return out


@st.composite
def tenant_settings(draw: st.DrawFn) -> Settings:
    kpi = KpiConfig(
        email_write_minutes=draw(st.sampled_from([5.0, 0.7])),
        email_read_minutes=draw(st.sampled_from([2.5, 0.3])),
        response_window_hours=draw(st.sampled_from([2.0, 24.0, 168.0])),
        business_hours=draw(st.booleans()),
        health=HealthConfig(
            window_days=draw(st.sampled_from([30, 90])),
            expected_interactions_per_week=draw(st.sampled_from([0.5, 1.0, 3.0])),
        ),
    )
    zone = ZoneInfo(draw(st.sampled_from(["UTC", "Europe/Berlin", "America/Santiago"])))
    return Settings(kpi=kpi, zone=zone, lookback_days=draw(st.sampled_from([30, 365])))


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(emails(), meetings(), calls(), tenant_settings())
def test_the_column_engine_equals_the_per_record_core(
    msgs: list[MailMessage], evs: list[CalendarEvent], phone: list[PhoneCall], cfg: Settings
) -> None:
    # factory.run asserts the equality record by record (every value of RecordKpis) and returns the core's.
    result = run(RECORDS, T, messages=msgs, events=evs, calls=phone, settings=cfg)
    assert set(result.kpis) == set(result.match.links)


@FAST
@given(emails(), meetings(), calls(), tenant_settings(), st.integers(1, 3))
def test_batches_over_one_shared_table_equal_one_pass(
    msgs: list[MailMessage], evs: list[CalendarEvent], phone: list[PhoneCall], cfg: Settings, size: int
) -> None:
    result = run(RECORDS, T, messages=msgs, events=evs, calls=phone, settings=cfg)
    links, identities = result.match.links, result.match.identities
    acts = list({lk.activity.key: lk.activity for ls in links.values() for lk in ls}.values())
    threads = assign_threads(acts)
    table = ActivityTable.of_activities(acts, T, cfg, threads=threads, identities=identities)
    refs = sorted(links)
    health = RECORDS.health_refs()
    batched = [
        k
        for i in range(0, len(refs), size)
        for k in compute_kpis(
            {r: links[r] for r in refs[i : i + size]},
            T,
            cfg,
            threads=threads,
            identities=identities,
            health_for=health,
            table=table,
        )
    ]
    assert batched == [
        compute_record_kpis(r, links[r], T, cfg, threads=threads, identities=identities, with_health=r in health)
        for r in refs
    ]


def test_no_records_give_no_kpis() -> None:
    assert list(compute_kpis({}, T, Settings(), threads={})) == []
    empty = ActivityTable.of_activities([], T, Settings(), threads={}, identities={})
    assert empty.activities.height == 0 and empty.parts.height == 0


def test_a_record_gets_health_only_when_asked() -> None:
    msgs = [
        MailMessage(
            graph_id="m1",
            mailbox="bob@contoso.com",
            sent_at=T - timedelta(days=1),
            from_address="bob@contoso.com",
            to=("ann@fabrikam.com",),
            internet_message_id="<a@x>",
            conversation_id="c",
        ),
    ]
    result = run(RECORDS, T, messages=msgs)
    ann = RecordRef(Entity.CONTACT, "ann")
    got = {k.record: k for k in compute_kpis(result.match.links, T, Settings(), threads={}, health_for=())}
    assert got[ann].health is None and result.of(ann).health is not None
    assert got[ann].counts == result.of(ann).counts


def test_the_trend_reads_whole_threads_that_reach_into_its_window() -> None:
    """As of T - 14 days, only threads with an email in the health window are turned into turns: the whole
    thread, so an email that joins a turn opened before the window opens none of its own."""
    before = T - timedelta(days=14)
    window_start = before - timedelta(days=90)

    def email(n: int, sender: str, to: str, when: datetime, conv: str) -> MailMessage:
        return MailMessage(
            graph_id=f"t{n}",
            mailbox="bob@contoso.com",
            sent_at=when,
            from_address=sender,
            to=(to,),
            internet_message_id=f"<t{n}@x>",
            conversation_id=conv,
        )

    # Our turn opened the day before the window; our second email, the day after, joins it: no new turn.
    msgs = [
        email(1, "bob@contoso.com", "ann@fabrikam.com", window_start - timedelta(days=1), "x"),
        email(2, "bob@contoso.com", "ann@fabrikam.com", window_start + timedelta(days=1), "x"),
    ]
    for i in range(3):  # three of our turns in the window, each answered: responsiveness 1
        sent = window_start + timedelta(days=10 + 10 * i)
        msgs.append(email(10 + i, "bob@contoso.com", "ann@fabrikam.com", sent, f"y{i}"))
        msgs.append(email(20 + i, "ann@fabrikam.com", "bob@contoso.com", sent + timedelta(hours=3), f"y{i}"))
    ann = run(RECORDS, T, messages=msgs).of(RecordRef(Entity.CONTACT, "ann"))  # both engines, held equal
    assert ann.health is not None
    # The earlier score with responsiveness 1 (3 of 3 turns answered), not 0.75 (a fourth, unanswered turn).
    # (engagement 0 within rounding: the window's activities are 50 to 80 days before T - 14 days)
    earlier = [m for m in msgs if m.sent_at <= before]
    alone = run(RECORDS, before, messages=earlier).of(RecordRef(Entity.CONTACT, "ann"))
    assert alone.health is not None and alone.health.parts.responsiveness == 1.0
    assert (ann.health.previous.score, ann.health.previous.state) == (alone.health.score, alone.health.state)


def _fingerprints(msgs: list[MailMessage], cfg: Settings, health: set[RecordRef]) -> dict[RecordRef, str]:
    result = run(RECORDS, T, messages=msgs, settings=cfg)
    links = result.match.links
    assert isinstance(links, LinkTable)
    table = ActivityTable.of_activities(
        links.activities, T, cfg, threads=assign_threads(links.activities), identities={}
    )
    refs = sorted(links)
    return dict(zip(refs, table.fingerprints(links, refs, health, settings_key(cfg)), strict=True))


def test_fingerprints_move_with_exactly_the_records_whose_inputs_moved() -> None:
    def email(n: int, sender: str, to: str, hours: int) -> MailMessage:
        return MailMessage(
            graph_id=f"g{n}",
            mailbox=sender,
            sent_at=T - timedelta(hours=hours),
            from_address=sender,
            to=(to,),
            internet_message_id=f"<f{n}@x>",
            conversation_id=f"c{n}",
        )

    base = [email(1, "bob@contoso.com", "ann@fabrikam.com", 5), email(2, "zoe@tailspin.com", "bob@contoso.com", 9)]
    health = RECORDS.health_refs()
    first = _fingerprints(base, Settings(), health)
    ann, zoe, fab = RecordRef(Entity.CONTACT, "ann"), RecordRef(Entity.CONTACT, "zoe"), RecordRef(Entity.ACCOUNT, "fab")
    assert _fingerprints(list(reversed(base)), Settings(), health) == first  # same inputs, another build
    moved = _fingerprints([base[0], email(2, "zoe@tailspin.com", "bob@contoso.com", 8)], Settings(), health)
    assert moved[zoe] != first[zoe] and moved[ann] == first[ann] and moved[fab] == first[fab]
    cc = _fingerprints([base[0], replace(base[1], cc=("carl@contoso.com",))], Settings(), health)
    assert cc[zoe] != first[zoe] and cc[ann] == first[ann]
    assert _fingerprints(base, Settings(), health - {ann})[ann] != first[ann]  # health is an input too
    assert _fingerprints(base, Settings(lookback_days=30), health)[ann] != first[ann]  # and the settings


def _emails_from_bob() -> list[MailMessage]:
    """Four emails from bob to ann, with none, one or two more on Cc."""
    return [
        MailMessage(
            graph_id=f"g{n}",
            mailbox="bob@contoso.com",
            sent_at=T - timedelta(hours=n),
            from_address="bob@contoso.com",
            to=("ann@fabrikam.com",),
            cc=("carl@contoso.com", "zoe@tailspin.com")[: n % 3],
            internet_message_id=f"<h{n}@x>",
        )
        for n in range(1, 5)
    ]


def fingerprints_of_a_small_tenant() -> dict[str, str]:
    """Fingerprints of a few emails, by record (run in processes of their own below)."""
    return {str(ref): p for ref, p in _fingerprints(_emails_from_bob(), Settings(), RECORDS.health_refs()).items()}


def test_fingerprints_are_the_same_in_every_process() -> None:
    """People and addresses are categoricals whose codes are the process's own (polars' mapping, in the order
    strings first come): a fingerprint must not depend on them, so that each daily run, in a process of its
    own, finds the records whose inputs did not move."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, json, relinsights, polars as pl\n"
        "if sys.argv[1] == 'other-codes':\n"
        "    pl.Series([f'p{i}@y.com' for i in range(50)] + ['zoe@tailspin.com', 'carl@contoso.com']).cast(pl.Categorical)\n"
        "from tests.analytics.test_columnar import fingerprints_of_a_small_tenant\n"
        "print(json.dumps(fingerprints_of_a_small_tenant(), sort_keys=True))\n"
    )
    root = Path(__file__).resolve().parents[2]
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, mode], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        for mode in ("first-codes", "other-codes")
    ]
    assert outs[0] == outs[1] and "contact" in outs[0]


@pytest.mark.parametrize(
    ("at_a_time", "n"), [("HASH_ROWS", 1), ("HASH_ROWS", 3), ("FINGERPRINT_RECORDS", 1), ("FINGERPRINT_RECORDS", 2)]
)
def test_fingerprints_hash_participants_and_links_some_at_a_time_alike(
    at_a_time: str, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Participant rows (HASH_ROWS) and records' links (FINGERPRINT_RECORDS) hashed a few at a time."""
    msgs = _emails_from_bob()
    whole = _fingerprints(msgs, Settings(), RECORDS.health_refs())
    assert len(whole) > 2
    monkeypatch.setattr(activity_table, at_a_time, n)
    assert _fingerprints(msgs, Settings(), RECORDS.health_refs()) == whole


def _in_a_new_process(probe: str, env: dict[str, str]) -> str:
    """What `probe` prints, run by a new interpreter with only `env` (what polars finds when it loads)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout


def test_polars_returns_freed_memory_at_once_from_one_arena_unless_the_admin_says_otherwise() -> None:
    # polars' allocator as it was set up: arenas (one more for very large allocations) and how long freed pages
    # stay, dirty and muzzy (ms).
    probe = (
        "import relinsights, polars; from relinsights.compute.jemalloc import polars_jemalloc;"
        "j = polars_jemalloc(); print(j.arenas(), j.decay_ms(), j.decay_ms(kind='muzzy'))"
    )
    assert _in_a_new_process(probe, {}).split() == ["2", "0", "0"]
    theirs = _in_a_new_process(probe, {"_RJEM_MALLOC_CONF": "narenas:2"})
    assert theirs.split() == ["3", "500", "1000"]  # (polars' own decay defaults)


def test_polars_collects_in_memory_unless_the_admin_says_otherwise() -> None:
    probe = "import relinsights, polars; print(polars.Config.state(if_set=True).get('POLARS_ENGINE_AFFINITY'))"
    assert _in_a_new_process(probe, {}).strip() == "in-memory"
    assert _in_a_new_process(probe, {"POLARS_ENGINE_AFFINITY": "streaming"}).strip() == "streaming"


@given(
    st.lists(st.lists(st.integers(0, 3), min_size=7, max_size=7), max_size=30),
    st.sampled_from([1, 2**40]),
)
def test_distinct_rows_are_numpys_unique_rows_packed_or_not(rows: list[list[int]], scale: int) -> None:
    # Small counts are packed into one integer; counts of 2**40 do not fit and take numpy's unique by rows.
    matrix = np.array(rows, dtype=np.int64).reshape(-1, 7) * scale
    distinct, which = _distinct_rows(matrix)
    expected, _ = np.unique(matrix, axis=0, return_inverse=True)
    assert sorted(map(tuple, distinct.tolist())) == sorted(map(tuple, expected.tolist()))
    assert len({tuple(r) for r in distinct.tolist()}) == len(distinct)
    assert (distinct[which] == matrix).all()
