"""One record's KPIs on a terminal, as the widgets of a Dynamics form: summary, counts, time, responses,
ratios, last and next interaction, top contacts, health, a 60-day sparkline; and the attention list."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from relinsights.compute.payload import COUNT_KEYS

BLOCKS = " ▁▂▃▄▅▆▇█"
STATE_STYLE = {"Good": "green", "Fair": "yellow", "Poor": "red"}
TREND_MARK = {"Improving": "↑", "Steady": "→", "Declining": "↓"}


def sparkline(values: list[int]) -> str:
    """One character per value: blank for 0, then eight block heights up to the largest value."""
    top = max(values, default=0)
    if top <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[math.ceil(8 * v / top)] if v > 0 else BLOCKS[0] for v in values)


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")


def _hours(value: float | None) -> str:
    return f"{value:.2f} h" if value is not None else "-"


def _rate(value: float | None) -> str:
    return f"{100 * value:.0f}%" if value is not None else "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _minutes(value: int) -> str:
    return f"{value} min ({value / 60:.1f} h)"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _direction(kind: str, direction: str) -> str:
    """kpis.md's words: emails and meetings are sent / received, calls made / received."""
    if direction == "outgoing":
        return "made" if kind == "call" else "sent"
    return "received"


def _person(p: dict[str, Any]) -> str:
    # A contact's key is "contact:<id>": its address reads better on a terminal.
    return p["addresses"][0] if p["person"].startswith("contact:") and p["addresses"] else p["person"]


def daily_totals(view: dict[str, Any]) -> list[int]:
    first = date.fromisoformat(view["series_first_day"])
    last = date.fromisoformat(view["series_last_day"])
    sparse = view.get("relationship_activities") or {}
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [sum(sparse.get(d.isoformat(), {}).get(k, 0) for k in COUNT_KEYS) for d in days]


def _title(view: dict[str, Any]) -> str:
    rec = view["record"]
    name = rec.get("name") or "(name unknown)"
    return f"[bold]{rec['entity'].capitalize()} {name}[/] ({rec['entity']}:{rec['id']})"


def render_show(out: Console, view: dict[str, Any]) -> None:
    out.print(_title(view))
    if not view["linked"]:
        out.print(f"no activity linked to this record as of {_when(view['as_of'])}")
        return
    h = view.get("health")
    last = view.get("last_interaction")
    summary = f"{view['activities']} activities"
    if h:
        style = STATE_STYLE.get(h["state"], "")
        summary += (
            f"; health [{style}]{h['score']} {h['state']}[/], trend {h['trend']}"
            if style
            else (f"; health {h['score']} {h['state']}, trend {h['trend']}")
        )
    if last:
        summary += f"; last {last['kind']} {_direction(last['kind'], last['direction'])} {_when(last['time'])}"
    out.print(f"as of {_when(view['as_of'])} · accuracy {view['accuracy']} · {summary}", highlight=False)

    counts = Table(title="activities (lookback window)", title_justify="left", box=None, pad_edge=False)
    for col in ("kind", "sent / made", "received"):
        counts.add_column(col, justify="right" if col != "kind" else "left")
    counts.add_row("emails", str(view["emails_sent"]), str(view["emails_received"]))
    counts.add_row("meetings", str(view["meetings_sent"]), str(view["meetings_received"]))
    counts.add_row("calls", str(view["calls_made"]), str(view["calls_received"]))
    out.print(counts)

    out.print(
        f"time invested: team {_minutes(view['time_spent_by_team_minutes'])}, "
        f"customer {_minutes(view['time_spent_by_customer_minutes'])}",
        highlight=False,
    )
    turns = view["turns"]
    out.print(
        "responses by us: "
        f"mean {_hours(view['average_first_response_time_by_us_hours'])}, "
        f"median {_hours(view['median_first_response_time_by_us_hours'])}, "
        f"rate {_rate(view['response_rate_by_us'])} "
        f"({turns['customer']['answered']}/{turns['customer']['judged']} customer turns)",
        highlight=False,
    )
    out.print(
        "responses by them: "
        f"mean {_hours(view['average_first_response_time_by_them_hours'])}, "
        f"median {_hours(view['median_first_response_time_by_them_hours'])}, "
        f"rate {_rate(view['response_rate_by_them'])} "
        f"({turns['ours']['answered']}/{turns['ours']['judged']} of our turns)",
        highlight=False,
    )
    out.print(
        f"sent/received ratio: by us {_ratio(view['sent_received_ratio_by_us'])}, "
        f"by them {_ratio(view['sent_received_ratio_by_them'])}",
        highlight=False,
    )
    for label, key in (("last interaction", "last_interaction"), ("next interaction", "next_interaction")):
        i = view.get(key)
        text = (
            f"{_when(i['time'])} {i['kind']} {_direction(i['kind'], i['direction'])}"
            + (f" ({i['internal_party']})" if i["internal_party"] else "")
            if i
            else "-"
        )
        out.print(f"{label}: {text}", highlight=False)

    for side in ("ours", "theirs"):
        people = view.get(f"top_contacts_{side}") or []
        line = "; ".join(
            f"{_person(p)} {p['activities']} ({_n(p['emails'], 'email')}, {_n(p['meetings'], 'meeting')}, "
            f"{_n(p['calls'], 'call')}; last {_when(p['last_contacted'])[:10]})"
            for p in people
        )
        out.print(f"top contacts ({side}): {line or '-'}", highlight=False)

    if h:
        parts = h["parts"]
        out.print(
            f"health: {h['score']} {h['state']}, trend {h['trend']} "
            f"(14 days earlier {h['previous']['score']} {h['previous']['state']}); "
            f"E {parts['engagement']:.2f} R {parts['recency']:.2f} "
            f"P {parts['reciprocity']:.2f} Q {parts['responsiveness']:.2f}",
            highlight=False,
        )
        out.print(f"  why: {h['reason']}", highlight=False)
    totals = daily_totals(view)
    out.print(
        f"last 60 days: {view['series_first_day']} │{sparkline(totals)}│ {view['series_last_day']} "
        f"(peak {max(totals, default=0)}/day)",
        highlight=False,
    )
    similar = view.get("similar_won")
    if similar:
        label = "by value only, fewer than 30 won" if similar["fallback"] else "nearest"
        items = ", ".join(
            f"{m['opportunity_id'][:8]} ({m['activities']} activities, rate by them {_rate(m['response_rate_by_them'])})"
            for m in similar["matches"]
        )
        out.print(f"similar won ({label}, {similar['as_of'][:10]}): {items or '-'}", highlight=False)


def render_list(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="relationships needing attention first")
    for col in ("record", "name", "health", "trend", "activities", "last interaction", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = STATE_STYLE.get(r["health_state"], "")
        health = f"{r['health_score']} {r['health_state']}"
        table.add_row(
            f"{r['entity']}:{r['id'][:8]}",
            r["name"] or "-",
            f"[{style}]{health}[/]" if style else health,
            f"{TREND_MARK.get(r['health_trend'], '')} {r['health_trend']}".strip(),
            str(r["activities"]),
            _when(r["last_interaction"])[:10],
            r["reason"] or "",
        )
    out.print(table)
