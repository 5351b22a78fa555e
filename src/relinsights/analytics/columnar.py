"""Every record's KPIs at once (kpis.md section 5), as column operations over links, activities and people.

`compute_kpis` returns for each record the very `RecordKpis` that `compute_record_kpis` (kpis.py) returns;
that per-record code stays the readable reference this is tested equal to (tests/analytics/test_columnar.py).
The per-record walk visits every link and participant once per record, so a contact's emails are walked
again for its account and each opportunity; here each step is one polars operation over all the records'
links, and only the final per-record formulas run in Python (the core's own: `side_response`,
`snapshot_from_measures`, `health_of`, `minutes_spent`; `ActivityTable.interactions` is `interaction_of` over columns).

The columns are the run's `ActivityTable` (activity_table.py) and the records' links over it.

Exactness: times are integer microseconds; sums that depend on order (time spent, engagement volume) are
exact (math.fsum) in both implementations over the same terms; each float term is computed by the same
operation (a product, or the core's own function) in both; local days are found between the day starts
zoneinfo gives (`start_of_local_day`), not with polars' own time zone database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from relinsights.analytics.activities import Activity, Direction, Role
from relinsights.analytics.activity_table import (
    OURS,
    THEIRS,
    ActivityTable,
    ReasonTuples,
    link_rows,
    member_rows,
    reason_tuples,
)
from relinsights.analytics.frames import DIRECTION, ROLE, at_us, run_starts, sorted_order, us, us_delta
from relinsights.analytics.health import (
    HealthSnapshot,
    health_of,
    round_half_up,
    snapshot_from_measures,
)
from relinsights.analytics.kpis import (
    TOP_CONTACTS,
    Counts,
    DailyCounts,
    DailySeries,
    RecordKpis,
    TopContact,
    empty_day,
    minutes_spent,
    series_dates,
)
from relinsights.analytics.matching import Link, LinkTable
from relinsights.analytics.records import RecordRef
from relinsights.analytics.responses import ResponseKpis, SideResponse, response_hours, side_response
from relinsights.analytics.settings import Settings
from relinsights.analytics.timeutil import local_date

_FROM = ROLE[Role.FROM]
EMAIL, MEETING, CALL = 0, 1, 2
_SLOTS = 6  # a record's six counts, by kind and then direction (Counts' order)
# The link columns the KPIs over the lookback window read (joins carry only what they need).
_COUNTED = (
    "r",
    "a",
    "mid",
    "rid",
    "kind",
    "dir",
    "t",
    "krank",
    "all_day",
    "dur",
    "thread",
    "side",
    "opener",
)  # a turn's side: opened by us / by the customer (responses.Side)
_NO_RESPONSE = side_response(turns=0, judged=0, answered=0, hours=())


def compute_kpis(
    links: Mapping[RecordRef, Sequence[Link]],
    as_of: datetime,
    settings: Settings,
    *,
    threads: Mapping[str, str] | None = None,
    identities: Mapping[str, str] | None = None,
    health_for: Collection[RecordRef] = (),
    refs: Sequence[RecordRef] | None = None,
    table: ActivityTable | None = None,
) -> Iterator[RecordKpis]:
    """The KPIs of the records `refs` (default: every record of `links`, sorted) as of T, in that order;
    health for those in `health_for`.

    `table` (the run's activities as columns, built once) lets a caller compute records a batch at a time.
    With a `LinkTable` and a table built over its activities, links are read as the positions they are
    stored as, without making Link objects."""
    refs = sorted(links) if refs is None else refs
    if not refs:
        return
    if table is None:
        if isinstance(links, LinkTable):
            acts: Sequence[Activity] = links.activities
        else:
            acts = list({id(lk.activity): lk.activity for ref in refs for lk in links[ref]}.values())
        table = ActivityTable.of_activities(acts, as_of, settings, threads=threads, identities=identities or {})
    yield from _Frames(table, links, refs).records(set(health_for))


class _Frames:
    """Some records' links as a table over the run's `ActivityTable`, and the KPIs over them."""

    def __init__(
        self, table: ActivityTable, links: Mapping[RecordRef, Sequence[Link]], refs: Sequence[RecordRef]
    ) -> None:
        self.table, self.refs = table, refs
        self.acts, self.parts, self.names, self.addresses = table.acts, table.parts, table.names, table.addresses
        self.as_of, self.before, self.settings = table.as_of, table.before, table.settings
        self.reasons: ReasonTuples
        self.members: pl.DataFrame
        self.links: pl.DataFrame
        if isinstance(links, LinkTable) and links.activities is table.acts:
            self._read_table(links, refs)
        else:
            self._read_links(links, refs)
        # `a` is the table's row number: its columns are gathered, not joined (the table is the run's whole year).
        self.links = pl.concat([self.links, table.link_columns[self.links.get_column("a")]], how="horizontal")

    def _read_table(self, links: LinkTable, refs: Sequence[RecordRef]) -> None:
        """Links as stored: (activity position, shape) pairs; a shape's members and reasons by its index."""
        rec, act, shape = link_rows(links, refs)
        self.links = pl.DataFrame({"r": rec, "a": act, "mid": shape, "rid": shape})
        self.members, self.reasons = self.table.shapes_of(links)

    def _read_links(self, links: Mapping[RecordRef, Sequence[Link]], refs: Sequence[RecordRef]) -> None:
        """Links as Link objects, which share their members and reasons: numbered by identity."""
        index, code = self.table.index, self.table.code
        member_ids: dict[int, int] = {}
        member_sets: list[frozenset[str]] = []
        reason_ids: dict[int, int] = {}
        reasons: list[tuple[str, ...]] = []
        l_rec: list[int] = []
        l_act: list[int] = []
        l_mem: list[int] = []
        l_rsn: list[int] = []
        for r, ref in enumerate(refs):
            for lk in links[ref]:
                mid = member_ids.get(id(lk.members))
                if mid is None:
                    mid = member_ids[id(lk.members)] = len(member_sets)
                    member_sets.append(lk.members)
                rid = reason_ids.get(id(lk.reasons))
                if rid is None:
                    rid = reason_ids[id(lk.reasons)] = len(reasons)
                    reasons.append(lk.reasons)
                l_rec.append(r)
                l_act.append(index[id(lk.activity)])
                l_mem.append(mid)
                l_rsn.append(rid)
        self.reasons = reason_tuples(reasons)
        self.members = member_rows(code, member_sets)
        self.links = pl.DataFrame(
            {"r": l_rec, "a": l_act, "mid": l_mem, "rid": l_rsn},
            schema={"r": pl.Int32, "a": pl.Int32, "mid": pl.Int32, "rid": pl.Int32},
        )

    # ------------------------------------------------------------------ per-record assembly

    def records(self, health_for: set[RecordRef]) -> Iterator[RecordKpis]:
        s, as_of = self.settings, self.as_of
        lookback = timedelta(days=s.lookback_days)
        counted = _picked(self.links, completed(self.as_of) & (pl.col("t") >= us(as_of - lookback)), "decay_now")
        counts = _tallies(counted, len(self.refs))
        members = self._member_rows(counted)
        team, customer = self._time_spent(counted, members)
        turns = self._turns(counted.filter(pl.col("kind") == EMAIL), as_of)
        responses = self._responses(turns)
        last = self.table.interactions(_pick(counted, descending=True))
        # (lazy: the filter copies only the columns _pick reads)
        upcoming = self.links.lazy().filter((pl.col("kind") != EMAIL) & (pl.col("t") > us(as_of)))
        nxt = self.table.interactions(_pick(upcoming, descending=False))
        ours = self._top(self.table.internal_attending(counted.select("r", "a", "kind", "t")), "person")
        theirs = self._top(members.filter(pl.col("attended")), "who")
        last_day = local_date(as_of, s.zone)
        days = series_dates(last_day)
        daily = self._daily(days)
        reasons = self._reasons(counted)
        wanted = [r for r, ref in enumerate(self.refs) if ref in health_for]
        health_now = self._health_measures(as_of, wanted, counted, turns)
        health_before = self._health_measures(self.before, wanted)
        empty = DailySeries(empty_day(d) for d in days)  # a record's series is mostly these shared empty days
        for r, ref in enumerate(self.refs):
            c = Counts(*counts[r])
            t_team, t_cust = team.get(r, (0, 0, [])), customer.get(r, (0, 0, []))
            health = None
            if r in health_now:
                health = health_of(health_now[r], health_before[r], s)
            yield RecordKpis(
                record=ref,
                as_of=as_of,
                counts=c,
                time_spent_by_team_minutes=round_half_up(minutes_spent(*t_team, s)),
                time_spent_by_customer_minutes=round_half_up(minutes_spent(*t_cust, s)),
                ratio_by_us=c.sent / c.received if c.received else None,
                ratio_by_them=c.received / c.sent if c.sent else None,
                responses=responses.get(r, ResponseKpis(_NO_RESPONSE, _NO_RESPONSE)),
                last_interaction=last.get(r),
                next_interaction=nxt.get(r),
                top_contacts_ours=ours.get(r, ()),
                top_contacts_theirs=theirs.get(r, ()),
                daily=_series(empty, daily.get(r, ())),
                health=health,
                reasons=reasons.get(r, {}),
            )

    # ------------------------------------------------------------------ the KPIs, each over every record

    def _member_rows(self, links: pl.DataFrame) -> pl.DataFrame:
        """One row per (link, participant of the activity in the link's external members)."""
        rows = links.select("r", "a", "mid", "kind", "t", "all_day", "dur").join(self.members, on="mid")
        return self.table.participants(rows)

    def _time_spent(
        self, counted: pl.DataFrame, members: pl.DataFrame
    ) -> tuple[dict[int, tuple[int, int, list[float]]], ...]:
        """Per record: (emails written, emails read, meeting and call minutes) for the team and the customer."""
        timed = pl.col("kind").eq(CALL) | (pl.col("kind").eq(MEETING) & ~pl.col("all_day"))
        n = len(self.refs)
        # Emails written and read, counted by activity once and added up by record (a row per participant
        # of each link, grouped by record: 0.55 s of the KPIs at 2,000,000 activities; this, 0.2).
        emails = counted.select("r", "a").filter(counted.get_column("kind") == EMAIL)
        rec = emails.get_column("r").to_numpy()
        wrote, other = self.table.internal_writers_readers(emails.get_column("a"))
        # (by weights, as floats: exact, for whole numbers below 2**53)
        team_mail = (
            np.bincount(rec, weights=wrote, minlength=n).astype(np.int64),
            np.bincount(rec, weights=other, minlength=n).astype(np.int64),
        )
        timed_rows = counted.filter(timed)
        team_terms = (
            timed_rows.with_columns(n=self.table.internal_attending_count(timed_rows.get_column("a")))
            .select(
                "r",
                term=pl.when(pl.col("kind") == CALL).then(pl.col("dur")).otherwise(pl.col("dur") * pl.col("n")),
            )
            .group_by("r")
            .agg(pl.col("term"))
        )
        theirs = members.select("r", "role").filter(members.get_column("kind") == EMAIL)
        their_rec, their_sent = theirs.get_column("r").to_numpy(), (theirs.get_column("role") == _FROM).to_numpy()
        cust_mail = (
            np.bincount(their_rec[their_sent], minlength=n),
            np.bincount(their_rec[~their_sent], minlength=n),
        )
        meeting_members = (
            members.filter((pl.col("kind") == MEETING) & ~pl.col("all_day") & pl.col("attended"))
            .group_by("r", "a", "mid")
            .agg(n=pl.len(), dur=pl.col("dur").first())
        )
        cust_terms = (
            pl.concat(
                [
                    meeting_members.select("r", term=pl.col("dur") * pl.col("n")),
                    counted.filter(pl.col("kind") == CALL).select("r", term=pl.col("dur")),
                ]
            )
            .group_by("r")
            .agg(pl.col("term"))
        )
        return _spent(team_mail, team_terms), _spent(cust_mail, cust_terms)

    def _turns(self, emails: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
        """The turns of 5.1 of every record's emails as of T (responses.build_turns): one row per turn."""
        window = us_delta(timedelta(hours=self.settings.kpi.response_window_hours))
        e = emails.select("r", "a", "t", "krank", "thread", "side", "opener")
        e = e.gather(sorted_order(e, "r", "thread", "krank"))
        group_start = (pl.col("r") != pl.col("r").shift(1)) | (pl.col("thread") != pl.col("thread").shift(1))
        e = e.with_columns(group_start=group_start.fill_null(True))
        e = e.with_columns(
            run_start=pl.col("group_start") | (pl.col("side") != pl.col("side").shift(1)).fill_null(True)
        )
        opens = e.filter(pl.col("run_start")).with_columns(
            closed=(~pl.col("group_start").shift(-1)).fill_null(False),
            close_a=pl.col("a").shift(-1),
            close_t=pl.col("t").shift(-1),
        )
        opens = opens.with_columns(
            to_opener=self.table.is_recipient(opens.get_column("close_a"), opens.get_column("opener"))
        )
        answered = pl.col("closed") & (pl.col("close_t") - pl.col("t") <= window) & pl.col("to_opener").fill_null(False)
        turns = opens.select(
            "r",
            "side",
            "t",
            "a",
            "close_a",
            "close_t",
            judged=pl.col("closed") | (us(as_of) - pl.col("t") > window),
            answered=answered,
            hours=pl.when(answered).then((pl.col("close_t") - pl.col("t")).cast(pl.Float64) / 1_000_000.0 / 3600.0),
        )
        kpi = self.settings.kpi
        if kpi.business_hours and turns.height:
            hours = [
                response_hours(at_us(t), at_us(close_t), kpi, self.settings.zone) if ok else None
                for t, close_t, ok in turns.select("t", "close_t", "answered").iter_rows()
            ]
            turns = turns.with_columns(hours=pl.Series(hours, dtype=pl.Float64))
        return turns

    def _responses(self, turns: pl.DataFrame) -> dict[int, ResponseKpis]:
        stats = turns.group_by("r", "side").agg(
            n=pl.len(),
            judged=pl.col("judged").sum(),
            answered=(pl.col("judged") & pl.col("answered")).sum(),
            hours=pl.col("hours").filter(pl.col("judged") & pl.col("answered")).drop_nulls(),
        )
        sides: dict[int, dict[int, SideResponse]] = {}
        for r, sd, n, judged, answered, hours in stats.iter_rows():
            sides.setdefault(r, {})[sd] = side_response(turns=n, judged=judged, answered=answered, hours=hours)
        return {
            r: ResponseKpis(by_us=x.get(THEIRS, _NO_RESPONSE), by_them=x.get(OURS, _NO_RESPONSE))
            for r, x in sides.items()
        }

    def _top(self, rows: pl.DataFrame, who: str) -> dict[int, tuple[TopContact, ...]]:
        """Top contacts (kpis._top) from (record, activity, person) rows of the people who took part."""
        people = rows.group_by("r", who).agg(
            emails=pl.col("a").filter(pl.col("kind") == EMAIL).n_unique(),
            meetings=pl.col("a").filter(pl.col("kind") == MEETING).n_unique(),
            calls=pl.col("a").filter(pl.col("kind") == CALL).n_unique(),
            last=pl.col("t").max(),
            lo=pl.col("addr").min(),
            hi=pl.col("addr").max(),
        )
        ranked = (
            people.with_columns(total=pl.col("emails") + pl.col("meetings") + pl.col("calls"))
            .sort(["r", "total", "last", who], descending=[False, True, True, False])
            .group_by("r", maintain_order=True)
            .head(TOP_CONTACTS)
        )
        # A person's addresses: most have one (lo == hi), and only the ranked few with several are listed (a
        # list for every person of every record was 40% of this step at 2,000,000 activities).
        addr_list = pl.when(pl.col("lo").is_null()).then(pl.lit([], pl.List(pl.Int32))).otherwise(pl.concat_list("lo"))
        several = ranked.filter(pl.col("lo") != pl.col("hi")).select("r", who)
        if several.height:
            listed = (
                rows.join(several, on=["r", who], how="semi")
                .group_by("r", who)
                .agg(several=pl.col("addr").drop_nulls().unique().sort())
            )
            ranked = ranked.join(listed, on=["r", who], how="left", maintain_order="left")
            addr_list = pl.coalesce("several", addr_list)
        ranked = ranked.select("r", who, "emails", "meetings", "calls", "last", addrs=addr_list)
        out: dict[int, list[TopContact]] = {}
        address = self.addresses.__getitem__
        for r, w, emails, meetings, calls, last, addrs in ranked.iter_rows():
            out.setdefault(r, []).append(
                TopContact(
                    person=self.names[w],
                    addresses=tuple(map(address, addrs)),
                    emails=emails,
                    meetings=meetings,
                    calls=calls,
                    last_contacted=at_us(last),
                )
            )
        return {r: tuple(v) for r, v in out.items()}

    def _daily(self, days: Sequence[date]) -> dict[int, list[tuple[int, DailyCounts]]]:
        """The 60-day series `days`: per record, (position in `days`, that day's six counts) of its active days.

        Tallied by (record, day, kind and direction) in one count; equal (day, counts) are made once (most
        records' days repeat a few small tallies), and each record's days are a slice of them in order: not a
        polars group by and a Python step per record and day (0.44 s at 2,000,000 activities; this, 0.18)."""
        first = days[0].toordinal()
        span = len(days)
        wanted = self.links.select(completed(self.as_of) & pl.col("day").is_between(first, first + span - 1))
        active = self.links.select("r", "day", "kind", "dir").filter(wanted.to_series())
        r, day = (active.get_column(c).to_numpy().astype(np.int64) for c in ("r", "day"))
        cell = (r * span + day - first) * _SLOTS + _slot(active)
        tally = np.bincount(cell, minlength=len(self.refs) * span * _SLOTS).reshape(-1, _SLOTS)
        cells = np.flatnonzero(tally.any(axis=1))  # (record, day) with activity, in order
        if not len(cells):
            return {}
        distinct, which = _distinct_rows(np.column_stack([cells % span, tally[cells]]))
        made = [(d, DailyCounts(days[d], Counts(*c))) for d, *c in distinct.tolist()]
        per_cell = [made[i] for i in which.tolist()]
        records = cells // span
        starts = run_starts(records).tolist()
        ends = [*starts[1:], len(per_cell)]
        return {rec: per_cell[a:b] for rec, a, b in zip(records[starts].tolist(), starts, ends, strict=True)}

    def _reasons(self, counted: pl.DataFrame) -> dict[int, dict[str, int]]:
        """Per record, how many of its links give each reason: the links tallied by (record, tuple of reasons)
        in one count, and each tuple's reasons added once per record."""
        tuple_of, tuples = self.reasons
        n = max(len(tuples), 1)
        rec, rid = (counted.get_column(c).to_numpy().astype(np.int64) for c in ("r", "rid"))
        tally = np.bincount(rec * n + tuple_of[rid])
        counts = tally.tolist()
        out: dict[int, Counter[str]] = {}
        for key in np.flatnonzero(tally).tolist():
            c, links = out.setdefault(key // n, Counter()), counts[key]
            for reason in tuples[key % n]:
                c[reason] += links
        return {r: dict(sorted(c.items())) for r, c in out.items()}

    def _health_measures(
        self, at: datetime, wanted: list[int], counted: pl.DataFrame | None = None, turns: pl.DataFrame | None = None
    ) -> dict[int, HealthSnapshot]:
        """Health as of `at` (T, or T - 14 days for the trend) of the records `wanted`: health.health_snapshot.

        As of T, `counted` (the lookback's completed links, with `decay_now`) and `turns` are what the other
        KPIs read; as of T - 14 days they are found here."""
        if not wanted:
            return {}
        s = self.settings
        lookback_start = us(at - timedelta(days=s.lookback_days))
        window_start = us(at - timedelta(days=s.kpi.health.window_days))
        decay = "decay_now" if at == self.as_of else "decay_before"
        if counted is not None and window_start >= lookback_start:  # (the window is inside the lookback)
            done = counted.filter(pl.col("r").is_in(wanted))
        else:
            done = _picked(
                self.links,
                pl.col("r").is_in(wanted) & completed(at) & (pl.col("t") >= min(lookback_start, window_start)),
                decay,
            )
        lookback = done.filter(pl.col("t") >= lookback_start)
        if turns is None:
            # Only turns opened in the window count, and a turn opens at an email of its own thread: the
            # threads with no email in the window are left out whole (their turns all open before it).
            emails = lookback.filter(pl.col("kind") == EMAIL)
            touched = emails.filter(pl.col("t") >= window_start).select("r", "thread").unique()
            turns = self._turns(emails.join(touched, on=["r", "thread"], how="semi"), at)
        ours = (
            turns.filter((pl.col("side") == OURS) & (pl.col("t") >= window_start))
            .group_by("r")
            .agg(judged=pl.col("judged").sum(), answered=(pl.col("judged") & pl.col("answered")).sum())
        )
        window = (
            done.filter(pl.col("t") >= window_start)
            .group_by("r")
            .agg(n=pl.len(), initiated=(pl.col("dir") == DIRECTION[Direction.INCOMING]).sum(), decayed=pl.col(decay))
        )
        back = lookback.group_by("r").agg(n=pl.len(), last=pl.col("t").max())
        win = {r: (n, i, d) for r, n, i, d in window.iter_rows()}
        bk = {r: (n, last) for r, n, last in back.iter_rows()}
        resp = {r: (j, a) for r, j, a in ours.iter_rows()}
        out: dict[int, HealthSnapshot] = {}
        for r in wanted:
            n_window, initiated, decayed = win.get(r, (0, 0, []))
            n_lookback, last = bk.get(r, (0, None))
            judged, answered = resp.get(r, (0, 0))
            out[r] = snapshot_from_measures(
                at,
                s,
                decayed=decayed,
                last=at_us(last) if last is not None else None,
                window_activities=n_window,
                customer_initiated=initiated,
                lookback_activities=n_lookback,
                judged_our_turns=judged,
                answered_our_turns=answered,
            )
        return out


def completed(at: datetime) -> pl.Expr:
    """Activity.completed(at) over activity columns: a meeting by its end, an email or call by its time unless
    pending."""
    t = us(at)
    return (
        pl.when(pl.col("kind") == MEETING).then(pl.col("end") <= t).otherwise(~pl.col("pending") & (pl.col("t") <= t))
    )


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows of a non-negative integer matrix, each row's number among them): np.unique's, of the
    rows packed into one integer when they fit (np.unique by rows sorts them as bytes: 30 ms for 26,000)."""
    widths = [max(int(c.max()) if len(c) else 0, 1).bit_length() for c in rows.T]  # (a column's bits, 1 or more)
    if sum(widths) > 63:
        distinct, which = np.unique(rows, axis=0, return_inverse=True)
        return distinct, which.ravel()
    shifts = np.cumsum([0, *widths[:-1]], dtype=np.int64)
    packed = (rows.astype(np.int64) << shifts).sum(axis=1)
    _, first, which = np.unique(packed, return_index=True, return_inverse=True)
    return rows[first], which.ravel()


def _picked(links: pl.DataFrame, wanted: pl.Expr, decay: str) -> pl.DataFrame:
    """The links `wanted`, with the columns the KPIs over the lookback read (_COUNTED and the `decay` weight).

    Only those columns are copied (a batch's links carry them all), and into one chunk: a lazy filter's output
    came in several, and a group by record (the KPIs do a dozen a batch) took 8-10 ms on it, against 1 ms on
    one chunk (a batch of about 1,000 records at 2,000,000 activities)."""
    return links.select(*_COUNTED, decay).filter(links.select(wanted).to_series())


def _pick(links: pl.LazyFrame | pl.DataFrame, *, descending: bool) -> dict[int, int]:
    """Per record, the activity with the greatest (or least) (time, key): its `krank`."""
    place = pl.col("krank").arg_max() if descending else pl.col("krank").arg_min()
    best = links.lazy().group_by("r").agg(pl.col("a").get(place)).collect()
    return dict(best.iter_rows())


def _series(empty: DailySeries, active: Sequence[tuple[int, DailyCounts]]) -> DailySeries:
    """A record's series: the empty days with its active ones (their places in it, and their counts) set in."""
    if not active:
        return empty
    days = list(empty)
    for i, day in active:
        days[i] = day
    return DailySeries(days, [day for _, day in active])


def _slot(links: pl.DataFrame) -> np.ndarray:
    """Each link's place among its record's six counts."""
    return links.get_column("kind").to_numpy().astype(np.int64) * 2 + links.get_column("dir").to_numpy()


def _tallies(links: pl.DataFrame, records: int) -> list[list[int]]:
    """Each record's six counts, in one count over its links."""
    r = links.get_column("r").to_numpy().astype(np.int64)
    return np.bincount(r * _SLOTS + _slot(links), minlength=records * _SLOTS).reshape(-1, _SLOTS).tolist()


def _spent(mail: tuple[np.ndarray, np.ndarray], terms: pl.DataFrame) -> dict[int, tuple[int, int, list[float]]]:
    """Per record (by number): (emails written, emails read, the minutes' terms), where any is not nothing."""
    written, read = (x.tolist() for x in mail)
    out: dict[int, tuple[int, int, list[float]]] = {
        r: (written[r], read[r], []) for r in np.flatnonzero(mail[0] + mail[1]).tolist()
    }
    for r, values in terms.iter_rows():
        out[r] = (written[r], read[r], values)
    return out
