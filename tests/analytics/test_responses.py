from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from relinsights.analytics import Activity, MailMessage, Side, build_activities
from relinsights.analytics.responses import Turn, assign_threads, build_turns, summarise_turns
from relinsights.analytics.timeutil import working_seconds
from relinsights.config import KpiConfig

from .factory import at, mail, rules

ANN, ZOE = "ann@fabrikam.com", "zoe@fabrikam.com"
BOB, CARL = "bob@contoso.com", "carl@contoso.com"
UTC = ZoneInfo("UTC")


def emails(*messages: MailMessage) -> list[Activity]:
    return list(build_activities(rules=rules(), messages=messages).activities)


def turns(*messages: MailMessage, as_of: datetime, kpi: KpiConfig | None = None, zone: ZoneInfo = UTC) -> list[Turn]:
    return build_turns(emails(*messages), as_of=as_of, kpi=kpi or KpiConfig(), zone=zone)


def test_turn_joins_same_side_and_closes_on_other_side() -> None:
    ts = turns(
        mail(ANN, [BOB], "2026-03-01 09:00", conv="X"),
        mail(ZOE, [BOB], "2026-03-01 10:00", conv="X"),  # same side: joins Ann's turn
        mail(BOB, [ANN], "2026-03-01 12:00", conv="X"),
        as_of=at("2026-03-02 00:00"),
    )
    first, second = sorted(ts, key=lambda t: t.opened_at)
    assert (first.side, first.opener, first.answered, first.response_hours) == (Side.THEIRS, ANN, True, 3.0)
    assert (second.side, second.judged, second.answered) == (Side.OURS, False, False)


def test_reply_must_include_the_opener() -> None:
    (first, _) = turns(
        mail(ANN, [BOB], "2026-03-01 09:00", conv="X"),
        mail(BOB, [ZOE], "2026-03-01 10:00", conv="X"),
        as_of=at("2026-03-20 00:00"),
    )
    assert first.judged and not first.answered and first.closing_key is not None


@pytest.mark.parametrize(
    ("delay", "answered"), [(timedelta(hours=168), True), (timedelta(hours=168, seconds=1), False)]
)
def test_response_window_edge_for_answers(delay: timedelta, answered: bool) -> None:
    reply_at = (at("2026-03-01 09:00") + delay).strftime("%Y-%m-%d %H:%M:%S")
    first = turns(
        mail(ANN, [BOB], "2026-03-01 09:00", conv="X"),
        mail(BOB, [ANN], reply_at, conv="X"),
        as_of=at("2026-04-01 00:00"),
    )[0]
    assert first.answered is answered and first.judged


@pytest.mark.parametrize(("age", "judged"), [(timedelta(hours=168), False), (timedelta(hours=168, seconds=1), True)])
def test_open_turn_is_judged_only_when_older_than_the_window(age: timedelta, judged: bool) -> None:
    (only,) = turns(mail(BOB, [ANN], "2026-03-01 09:00"), as_of=at("2026-03-01 09:00") + age)
    assert only.judged is judged and not only.answered


def test_in_reply_to_links_threads_across_conversations() -> None:
    first = mail(ANN, [BOB], "2026-03-01 09:00", conv="X")
    reply = mail(BOB, [ANN], "2026-03-01 11:00", conv="OTHER", in_reply_to=first.internet_message_id)
    other = mail(BOB, [ANN], "2026-03-01 12:00", conv="Y")
    acts = emails(first, reply, other)
    threads = assign_threads(acts)
    assert threads[acts[0].key] == threads[acts[1].key] != threads[acts[2].key]
    ts = build_turns(acts, as_of=at("2026-03-02 00:00"), kpi=KpiConfig(), zone=UTC, threads=threads)
    assert [t.response_hours for t in ts if t.answered] == [2.0]


def test_two_replies_to_an_unsynced_parent_share_a_thread() -> None:
    a = mail(ANN, [BOB], "2026-03-01 09:00", conv="P", in_reply_to="<lost@x>")
    b = mail(BOB, [ANN], "2026-03-01 10:00", conv="Q", in_reply_to="<LOST@x>")
    acts = emails(a, b)
    threads = assign_threads(acts)
    assert threads[acts[0].key] == threads[acts[1].key]


def test_empty_versus_zero() -> None:
    nothing = summarise_turns([])
    assert (nothing.by_us.rate, nothing.by_us.mean_hours, nothing.by_them.rate) == (None, None, None)
    ignored = summarise_turns(turns(mail(BOB, [ANN], "2026-03-01 09:00"), as_of=at("2026-03-20 00:00")))
    assert (ignored.by_them.rate, ignored.by_them.mean_hours) == (0.0, None)
    assert ignored.by_us.rate is None


def test_mean_and_median_hours() -> None:
    ts = turns(
        mail(ANN, [BOB], "2026-03-01 09:00", conv="A"),
        mail(BOB, [ANN], "2026-03-01 10:00", conv="A"),
        mail(ANN, [BOB], "2026-03-02 09:00", conv="B"),
        mail(BOB, [ANN], "2026-03-02 11:00", conv="B"),
        mail(ANN, [BOB], "2026-03-03 09:00", conv="C"),
        mail(BOB, [ANN], "2026-03-04 21:00", conv="C"),
        as_of=at("2026-03-05 00:00"),
    )
    by_us = summarise_turns(ts).by_us
    assert (by_us.mean_hours, by_us.median_hours, by_us.rate) == (13.0, 2.0, 1.0)


def test_alias_of_the_opener_counts_as_the_opener() -> None:
    from relinsights.analytics import InternalUser

    r = rules(users=[InternalUser(BOB, aliases=("robert@contoso.com",))])
    acts = list(
        build_activities(
            rules=r,
            messages=[
                mail(BOB, [ANN], "2026-03-01 09:00", conv="X"),
                mail(ANN, ["robert@contoso.com"], "2026-03-01 10:00", conv="X"),
            ],
        ).activities
    )
    first = build_turns(acts, as_of=at("2026-03-02 00:00"), kpi=KpiConfig(), zone=UTC)[0]
    assert first.answered


def test_business_hours_count_only_working_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    kpi = KpiConfig(business_hours=True)
    # Friday 16:00 Paris (15:00 UTC) -> Monday 10:00 Paris (09:00 UTC): 1 h on Friday + 1 h on Monday.
    ts = turns(
        mail(ANN, [BOB], "2026-03-06 15:00", conv="X"),
        mail(BOB, [ANN], "2026-03-09 09:00", conv="X"),
        as_of=at("2026-03-10 00:00"),
        kpi=kpi,
        zone=paris,
    )
    assert ts[0].response_hours == 2.0
    # Off: elapsed time.
    ts = turns(
        mail(ANN, [BOB], "2026-03-06 15:00", conv="X"),
        mail(BOB, [ANN], "2026-03-09 09:00", conv="X"),
        as_of=at("2026-03-10 00:00"),
        zone=paris,
    )
    assert ts[0].response_hours == 66.0


def test_working_seconds_across_a_dst_change_and_custom_days() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2026-03-29 is the spring-forward Sunday; make Sunday a workday 01:00-05:00 local (3 real hours).
    secs = working_seconds(
        at("2026-03-28 00:00"), at("2026-03-30 00:00"), zone=paris, day_start=time(1), day_end=time(5), workdays=[7]
    )
    assert secs == 3 * 3600
    assert (
        working_seconds(
            at("2026-03-02 10:00"), at("2026-03-02 09:00"), zone=UTC, day_start=time(9), day_end=time(17), workdays=[1]
        )
        == 0
    )
