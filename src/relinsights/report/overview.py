"""A tenant's overview page: can the numbers be trusted (sync health), activity per week, the relationships
that went cold, and every relationship ranked by health.

Decisions:
- *went cold*: health trend Declining and no customer-initiated activity (received email, meeting or
  call) in the last `COLD_DAYS` days of the 60-day series;
- *activity per week*: distinct completed activities linked to at least one CRM record, by tenant-local
  week (Monday first), over the last `WEEKS` weeks up to the KPIs' as-of.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from relinsights.compute.widgets import TREND_MARK, _when
from relinsights.report import charts
from relinsights.report.markup import Cell, cell, esc, figure, link, table, widget
from relinsights.report.record import COUNT_HEADERS
from relinsights.status import MailboxStatus, age_text

COLD_DAYS = 30
WEEKS = 12
RECEIVED = ("emails_received", "meetings_received", "calls_received")
KIND_NOUN = {"email": "Emails", "meeting": "Meetings", "call": "Calls"}
TRUSTED = ("ok", "no_mailbox")  # a mailbox without Exchange has nothing to sync: not a fault


@dataclass
class Overview:
    tenant: str
    as_of: datetime | None
    as_of_day: date | None  # tenant-local day of the as-of
    run: dict[str, Any] | None  # the latest KPI run: mode, tier, accuracy, finished_at
    ranked: list[dict[str, Any]]  # `kpis list` rows, needing attention first
    unscored: list[tuple[str, str, str | None]]  # (entity, id, name) with activity but no health score
    payloads: dict[tuple[str, str], dict[str, Any]]  # of the ranked records, for the cold test
    weekly: Counter[tuple[date, str, str]] = field(default_factory=Counter)  # (week, kind, direction) -> n
    mailboxes: list[MailboxStatus] = field(default_factory=list)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def weeks_until(as_of_day: date) -> list[date]:
    last = week_start(as_of_day)
    return [last - timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]


def went_cold(row: dict[str, Any], payload: dict[str, Any], series_last_day: date) -> bool:
    if row["health_trend"] != "Declining":
        return False
    since = (series_last_day - timedelta(days=COLD_DAYS - 1)).isoformat()
    series: dict[str, dict[str, int]] = payload.get("relationship_activities") or {}
    return not any(counts.get(k, 0) for day, counts in series.items() if day >= since for k in RECEIVED)


def _trust(o: Overview) -> str:
    bad = [m for m in o.mailboxes if m.status not in TRUSTED]
    partial = bool(o.run and o.run["accuracy"] != "Complete")
    if not o.mailboxes:
        return "<p class='banner warn'>No mailbox has synced yet: the numbers come from the CRM alone.</p>"
    if bad or partial:
        names = ", ".join(f"{m.mailbox} ({m.status})" for m in bad[:10]) + (" ..." if len(bad) > 10 else "")
        return (
            f"<p class='banner warn' role='status'><strong>Check before trusting:</strong> {len(bad)} of "
            f"{len(o.mailboxes)} mailboxes are not syncing{': ' + esc(names) if bad else ''}; "
            f"KPI accuracy {esc(o.run['accuracy'] if o.run else 'unknown')}.</p>"
        )
    lag = max((m.cursor_age_s or 0.0) for m in o.mailboxes)
    return (
        f"<p class='banner ok' role='status'><strong>Numbers can be trusted:</strong> all {len(o.mailboxes)} "
        f"mailboxes synced (longest lag {esc(age_text(lag))}); KPI accuracy Complete.</p>"
    )


def _sync_health(o: Overview) -> str:
    rows = [
        [
            m.mailbox,
            Cell(m.status),
            m.last_success or "never",
            Cell(age_text(m.cursor_age_s), numeric=True),
            cell(m.error_count),
            (m.last_error or "")[:160],
        ]
        for m in o.mailboxes
    ]
    headers = ["mailbox", "status", "last success", "lag", Cell("errors", numeric=True), "last error"]
    return widget("sync-health", "Sync health per mailbox", table(headers, rows, "sync health"))


def _weekly(o: Overview) -> str:
    if o.as_of_day is None:
        return ""
    weeks = weeks_until(o.as_of_day)
    by_kind: Counter[tuple[str, str]] = Counter()
    for (w, k, _d), n in o.weekly.items():
        by_kind[(w.isoformat(), KIND_NOUN[k])] += n
    chart_rows = [{"week": w, "kind": k, "value": n} for (w, k), n in sorted(by_kind.items())]
    label = f"Activities per week over the last {WEEKS} weeks, {sum(by_kind.values())} in all, stacked by kind"
    svg = charts.render(charts.weekly_spec(chart_rows, [w.isoformat() for w in weeks]), label)
    rows = []
    for w in weeks:
        per = {(k, d): n for (wk, k, d), n in o.weekly.items() if wk == w}
        counts = [per.get((k, d), 0) for k in KIND_NOUN for d in ("outgoing", "incoming")]
        rows.append([w.isoformat(), *(cell(n) for n in counts), cell(sum(counts))])
    headers = ["week starting", *COUNT_HEADERS, "total"]
    return widget(
        "weekly",
        "Activity per week",
        figure(svg, label),
        f"<details><summary>numbers per week</summary>{table(headers, rows, 'activity per week')}</details>",
    )


def _record_cell(r: dict[str, Any], href: Callable[[str, str], str | None]) -> Cell:
    name = r["name"] or r["id"][:8]
    target = href(r["entity"], r["id"])
    return link(target, name) if target else Cell(name)


def _ranked_rows(rows: list[dict[str, Any]], href: Callable[[str, str], str | None]) -> list[list[str | Cell]]:
    return [
        [
            cell(i + 1),
            _record_cell(r, href),
            r["entity"],
            cell(r["health_score"], "health.score"),
            Cell(
                f"<span class='state-{esc(r['health_state']).replace(' ', '-')}'>{esc(r['health_state'])}</span>",
                "health.state",
                raw_html=True,
            ),
            Cell(f"{TREND_MARK.get(r['health_trend'], '')}\u00a0{r['health_trend']}".strip(), "health.trend"),
            cell(r["activities"], "activities"),
            _when(r["last_interaction"])[:10],
            r["reason"] or "",
        ]
        for i, r in enumerate(rows)
    ]


RANK_HEADERS = ["#", "record", "entity", "score", "state", "trend", "activities", "last interaction", "why"]


def overview_body(o: Overview, href: Callable[[str, str], str | None]) -> str:
    head = f"<h1>Relationships of {esc(o.tenant)}</h1>"
    if o.as_of is None:
        return head + "<p>No KPIs computed yet: run <code>relinsights compute --once</code>.</p>" + _sync_health(o)
    run = o.run or {}
    head += (
        f"<p class='meta'>as of {esc(_when(o.as_of.isoformat()))} · {esc(run.get('tier', '?'))} tier · "
        f"{len(o.ranked)} relationships with a health score, {len(o.unscored)} more with activity</p>"
    )
    last_day = o.as_of_day or o.as_of.date()
    cold = [r for r in o.ranked if went_cold(r, o.payloads.get((r["entity"], r["id"]), {}), last_day)]
    cold_part = (
        table(RANK_HEADERS, _ranked_rows(cold, href), "went cold")
        if cold
        else "<p>None: every declining relationship heard from the customer lately.</p>"
    )
    others = "".join(
        f"<li>{_record_cell({'entity': e, 'id': i, 'name': n}, href).render('span')} ({esc(e)})</li>"
        for e, i, n in o.unscored
    )
    return (
        head
        + _trust(o)
        + widget(
            "cold",
            f"Went cold ({len(cold)})",
            f"<p>Declining, and no email, meeting or call from the customer in the last {COLD_DAYS} days.</p>",
            cold_part,
        )
        + _weekly(o)
        + widget(
            "ranked",
            "Relationships by health, needing attention first",
            table(RANK_HEADERS, _ranked_rows(o.ranked, href), "ranked"),
        )
        + (widget("unscored", "Other records with activity (no health score)", f"<ul>{others}</ul>") if others else "")
        + _sync_health(o)
    )
