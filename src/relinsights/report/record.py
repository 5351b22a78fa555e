"""A record's page: the widgets of Dynamics relationship analytics, from the view `kpis show --json` prints.

Each widget is a section with a chart (where a chart reads better than a number) and the numbers in a
table; every table cell showing a KPI names its key in `data-kpi`, so a check can compare the page with
`kpis show --json` key by key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from relinsights.compute.widgets import _direction, _hours, _minutes, _person, _rate, _ratio, _when
from relinsights.report import charts
from relinsights.report.markup import Cell, cell, esc, figure, link, table, widget

KINDS = (
    ("Emails", "emails_sent", "emails_received"),
    ("Meetings", "meetings_sent", "meetings_received"),
    ("Calls", "calls_made", "calls_received"),
)
PARTS = {"engagement": "E", "recency": "R", "reciprocity": "P", "responsiveness": "Q"}  # kpis.md 5.3
COUNT_HEADERS = ("emails sent", "emails received", "meetings sent", "meetings received", "calls made", "calls received")
Linker = Callable[[str, str], str | None]  # (entity, record id) -> the page's href, if there is one


def title_of(view: dict[str, Any]) -> str:
    rec = view["record"]
    return f"{rec['entity'].capitalize()} {rec.get('name') or rec['id']}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary_sentences(view: dict[str, Any]) -> list[str]:
    """What Dynamics' summary widget says, in plain sentences, most telling first."""
    out: list[str] = []
    h = view.get("health")
    if h:
        out.append(
            f"Relationship health is {h['state']} ({h['score']}), {h['trend'].lower()} "
            f"(it was {h['previous']['score']} two weeks earlier). {h['reason']}"
        )
    for noun, sent, received in KINDS:
        word, ours, theirs = noun.lower(), view[sent], view[received]
        if ours != theirs:
            more, less = ("your team", "the customer") if ours > theirs else ("the customer", "your team")
            d = abs(ours - theirs)
            out.append(f"{d} more {word if d != 1 else word[:-1]} initiated by {more} than by {less}.")
        elif ours:
            out.append(f"As many {word} initiated by your team as by the customer ({ours} each).")
    for who, whose, side in (("The customer", "your team's", "them"), ("Your team", "the customer's", "us")):
        rate, mean = view[f"response_rate_by_{side}"], view[f"average_first_response_time_by_{side}_hours"]
        if rate is not None:
            after = f", after {_hours(mean)} on average" if mean is not None else ""
            out.append(f"{who} answered {_rate(rate)} of {whose} emails{after}.")
    out.append(
        f"Your team invested {_minutes(view['time_spent_by_team_minutes'])}, "
        f"the customer {_minutes(view['time_spent_by_customer_minutes'])}."
    )
    last = view.get("last_interaction")
    if last:
        days = (datetime.fromisoformat(view["as_of"]) - datetime.fromisoformat(last["time"])).days
        out.append(f"Last interaction {_plural(days, 'day')} ago: {_interaction_text(last)}.")
    nxt = view.get("next_interaction")
    if nxt:
        out.append(f"Next interaction: {_interaction_text(nxt)} on {_when(nxt['time'])}.")
    return out


def _interaction_text(i: dict[str, Any]) -> str:
    who = f" by {i['internal_party']}" if i.get("internal_party") and i["direction"] == "outgoing" else ""
    with_ = f" with {i['internal_party']}" if i.get("internal_party") and i["direction"] != "outgoing" else ""
    return f"{i['kind']} {_direction(i['kind'], i['direction'])}{who}{with_}"


def w_summary(view: dict[str, Any]) -> str:
    items = "".join(f"<li>{esc(s)}</li>" for s in summary_sentences(view))
    return widget("summary", "Summary", f'<ul class="summary">{items}</ul>')


def w_health(view: dict[str, Any]) -> str:
    h = view.get("health")
    if not h:
        return widget(
            "health",
            "Relationship health",
            "<p>No health score: it is kept for contacts, accounts, open leads and open opportunities only.</p>",
        )
    parts = h["parts"]
    bars = [
        {"label": name.capitalize(), "group": "part", "value": parts[name], "text": f"{parts[name]:.2f}"}
        for name in PARTS
    ]
    label = f"Health gauge at {h['score']} of 100, {h['state']}, trend {h['trend']}; parts: " + ", ".join(
        f"{name} {parts[name]:.2f}" for name in PARTS
    )
    svg = charts.side_by_side(
        charts.gauge_spec(h["score"], h["state"]),
        charts.labelled_bars_spec(bars, colour={"part": charts.US}, x_max=1, title="parts (0 to 1)"),
        label,
    )
    rows = [
        ("score", Cell(str(h["score"]), "health.score", numeric=True)),
        ("state", Cell(h["state"], "health.state")),
        ("trend", Cell(h["trend"], "health.trend")),
        ("two weeks earlier", Cell(f"{h['previous']['score']} {h['previous']['state']}", "health.previous")),
        *(
            (f"{name} ({letter})", Cell(f"{parts[name]:.2f}", f"health.parts.{name}", numeric=True))
            for name, letter in PARTS.items()
        ),
        ("why", Cell(h["reason"], "health.reason")),
    ]
    return widget("health", "Relationship health", figure(svg, label), table(["", "value"], rows, "health"))


def w_interactions(view: dict[str, Any]) -> str:
    rows, chart_rows = [], []
    for noun, sent, received in KINDS:
        rows.append([noun, cell(view[sent], sent), cell(view[received], received)])
        for side, key in (("by us", sent), ("by them", received)):
            n = view[key]
            chart_rows.append({"label": f"{noun} {side}", "group": side, "value": n, "text": str(n)})
    label = "Customer interactions initiated by us and by them: " + ", ".join(
        f"{r['label']} {r['value']}" for r in chart_rows
    )
    svg = charts.bars(chart_rows, label, colour={"by us": charts.US, "by them": charts.THEM})
    body = table(["kind", "initiated by us", "initiated by them"], rows, "interactions")
    return widget("interactions", "Customer interactions", figure(svg, label), body)


def w_ratio(view: dict[str, Any]) -> str:
    ours, theirs = view["sent_received_ratio_by_us"], view["sent_received_ratio_by_them"]
    chart_rows = [
        {"label": f"by {side}", "group": f"by {side}", "value": v, "text": _ratio(v)}
        for side, v in (("us", ours), ("them", theirs))
        if v is not None
    ]
    label = f"Email sent/received ratio: by us {_ratio(ours)}, by them {_ratio(theirs)}"
    parts = []
    if chart_rows:
        parts.append(
            figure(
                charts.bars(
                    chart_rows,
                    label,
                    colour={"by us": charts.US, "by them": charts.THEM},
                ),
                label,
            )
        )
    rows = [
        ["by us", Cell(_ratio(ours), "sent_received_ratio_by_us", numeric=True)],
        ["by them", Cell(_ratio(theirs), "sent_received_ratio_by_them", numeric=True)],
    ]
    parts.append(table(["side", "sent / received"], rows, "email ratio"))
    return widget("ratio", "Email sent/received ratio", *parts)


def w_activities(view: dict[str, Any]) -> str:
    first, last = date.fromisoformat(view["series_first_day"]), date.fromisoformat(view["series_last_day"])
    days = [date.fromordinal(d).isoformat() for d in range(first.toordinal(), last.toordinal() + 1)]
    sparse: dict[str, dict[str, int]] = view.get("relationship_activities") or {}
    chart_rows = []
    table_rows = []
    for day in sorted(sparse):
        counts = sparse[day]
        for noun, sent, received in KINDS:
            if counts.get(sent):
                chart_rows.append({"day": day, "kind": noun, "value": counts[sent]})
            if counts.get(received):
                chart_rows.append({"day": day, "kind": noun, "value": -counts[received]})
        table_rows.append(
            [day, *(cell(counts.get(k, 0), f"relationship_activities.{day}.{k}") for _, s, r in KINDS for k in (s, r))]
        )
    total = sum(sum(c.values()) for c in sparse.values())
    label = f"Relationship activities per day from {days[0]} to {days[-1]}: {total} in all, on {len(sparse)} days"
    bands = [{"day": days[-1], "kind": noun, "value": 0} for noun, _, _ in KINDS]  # every kind gets its band
    svg = charts.render(charts.daily_spec(chart_rows + bands, days), label)
    headers = ["day", *COUNT_HEADERS]
    body = (
        f"<details><summary>{_plural(len(sparse), 'day')} with activity</summary>"
        f"{table(headers, table_rows, 'activities per day')}</details>"
    )
    note = "<p>Per day and kind: bars above the line were sent or made by us, bars below it received from the customer.</p>"
    return widget("activities", "Relationship activities (60 days)", note, figure(svg, label), body)


def w_time(view: dict[str, Any]) -> str:
    team, customer = view["time_spent_by_team_minutes"], view["time_spent_by_customer_minutes"]
    chart_rows = [
        {"label": "Team", "group": "by us", "value": team / 60, "text": _minutes(team)},
        {"label": "Customer", "group": "by them", "value": customer / 60, "text": _minutes(customer)},
    ]
    label = f"Time invested: team {_minutes(team)}, customer {_minutes(customer)}"
    svg = charts.bars(chart_rows, label, colour={"by us": charts.US, "by them": charts.THEM})
    rows = [
        ["team", Cell(_minutes(team), "time_spent_by_team_minutes", numeric=True)],
        ["customer", Cell(_minutes(customer), "time_spent_by_customer_minutes", numeric=True)],
    ]
    return widget("time", "Time invested", figure(svg, label), table(["side", "time"], rows, "time invested"))


def w_responses(view: dict[str, Any]) -> str:
    time_rows, rate_rows = [], []
    for side in ("us", "them"):
        for stat in ("average", "median"):
            v = view[f"{stat}_first_response_time_by_{side}_hours"]
            if v is not None:
                time_rows.append(
                    {
                        "label": f"by {side}, {'mean' if stat == 'average' else 'median'}",
                        "group": f"by {side}",
                        "value": v,
                        "text": _hours(v),
                    }
                )
        rate = view[f"response_rate_by_{side}"]
        if rate is not None:
            rate_rows.append({"label": f"by {side}", "group": f"by {side}", "value": 100 * rate, "text": _rate(rate)})
    colour = {"by us": charts.US, "by them": charts.THEM}
    label = "Response time and rate: " + "; ".join(
        f"by {s} mean {_hours(view[f'average_first_response_time_by_{s}_hours'])}, "
        f"median {_hours(view[f'median_first_response_time_by_{s}_hours'])}, rate {_rate(view[f'response_rate_by_{s}'])}"
        for s in ("us", "them")
    )
    parts = []
    if time_rows or rate_rows:
        specs = []
        if time_rows:
            specs.append(charts.labelled_bars_spec(time_rows, colour=colour, title="first response time"))
        if rate_rows:
            specs.append(charts.labelled_bars_spec(rate_rows, colour=colour, x_max=100, title="response rate"))
        parts.append(figure(charts.stacked(specs, label), label))
    turns = view["turns"]
    rows = [
        [
            f"by {side}",
            Cell(
                _hours(view[f"average_first_response_time_by_{side}_hours"]),
                f"average_first_response_time_by_{side}_hours",
                numeric=True,
            ),
            Cell(
                _hours(view[f"median_first_response_time_by_{side}_hours"]),
                f"median_first_response_time_by_{side}_hours",
                numeric=True,
            ),
            Cell(_rate(view[f"response_rate_by_{side}"]), f"response_rate_by_{side}", numeric=True),
            Cell(f"{turns[key]['answered']} of {turns[key]['judged']}", f"turns.{key}", numeric=True),
        ]
        for side, key in (("us", "customer"), ("them", "ours"))
    ]
    headers = ["side", "mean first response", "median", "response rate", "turns answered"]
    parts.append(table(headers, rows, "responses"))
    return widget("responses", "Response time and response rate", *parts)


def w_top_contacts(view: dict[str, Any]) -> str:
    chart_rows, rows = [], []
    for side in ("ours", "theirs"):
        for i, p in enumerate(view.get(f"top_contacts_{side}") or []):
            who = _person(p)
            chart_rows.append(
                {"label": f"{side}: {who}", "group": side, "value": p["activities"], "text": str(p["activities"])}
            )
            k = f"top_contacts_{side}.{i}"
            rows.append(
                [
                    side,
                    Cell(who, f"{k}.person"),
                    cell(p["emails"], f"{k}.emails"),
                    cell(p["meetings"], f"{k}.meetings"),
                    cell(p["calls"], f"{k}.calls"),
                    cell(p["activities"], f"{k}.activities"),
                    Cell(_when(p["last_contacted"]), f"{k}.last_contacted"),
                ]
            )
    if not rows:
        return widget("top-contacts", "Top contacts", "<p>No contacts yet.</p>")
    label = "Top contacts, ours and theirs, by activities: " + "; ".join(
        f"{r['label']} {r['value']}" for r in chart_rows
    )
    svg = charts.bars(chart_rows, label, colour={"ours": charts.US, "theirs": charts.THEM})
    headers = ["side", "person", "emails", "meetings", "calls", "activities", "last contacted"]
    return widget("top-contacts", "Top contacts", figure(svg, label), table(headers, rows, "top contacts"))


def w_interactions_last_next(view: dict[str, Any]) -> str:
    rows = []
    for label, key in (("last", "last_interaction"), ("next", "next_interaction")):
        i = view.get(key)
        rows.append(
            [
                label,
                Cell(_when(i["time"]) if i else "-", f"{key}.time"),
                Cell(_interaction_text(i) if i else "none", f"{key}.kind"),
            ]
        )
    return widget("last-next", "Last and next interaction", table(["", "when", "what"], rows, "last and next"))


def w_similar(view: dict[str, Any], names: dict[str, str | None], href: Linker) -> str:
    similar = view.get("similar_won")
    if not similar:
        return widget(
            "similar-won", "Similar won opportunities", "<p>Not computed yet (weekly, for open opportunities).</p>"
        )
    how = (
        "by estimated value only (fewer than 30 won opportunities)"
        if similar["fallback"]
        else "nearest by value, industry, size, business unit and cycle"
    )
    chart_rows, rows = [], []
    for i, m in enumerate(similar["matches"]):
        name = names.get(m["opportunity_id"]) or m["opportunity_id"][:8]
        target = href("opportunity", m["opportunity_id"])
        k = f"similar_won.matches.{i}"
        chart_rows.append(
            {
                "label": f"{i + 1}. {name}",
                "group": "won",
                "value": m["activities"] or 0,
                "text": str(m["activities"] or 0),
            }
        )
        rows.append(
            [
                link(target, name) if target else Cell(name),
                cell(m["activities"] if m["activities"] is not None else "-", f"{k}.activities"),
                Cell(_minutes(m["time_spent_by_team_minutes"] or 0), f"{k}.time_spent_by_team_minutes", numeric=True),
                Cell(
                    _minutes(m["time_spent_by_customer_minutes"] or 0),
                    f"{k}.time_spent_by_customer_minutes",
                    numeric=True,
                ),
                Cell(
                    _hours(m["average_first_response_time_by_us_hours"]),
                    f"{k}.average_first_response_time_by_us_hours",
                    numeric=True,
                ),
                Cell(_rate(m["response_rate_by_us"]), f"{k}.response_rate_by_us", numeric=True),
                Cell(
                    _hours(m["average_first_response_time_by_them_hours"]),
                    f"{k}.average_first_response_time_by_them_hours",
                    numeric=True,
                ),
                Cell(_rate(m["response_rate_by_them"]), f"{k}.response_rate_by_them", numeric=True),
            ]
        )
    parts = [f"<p>{esc(how)}; as of {esc(similar['as_of'][:10])}, from {similar['eligible_won']} won.</p>"]
    if chart_rows:
        label = "Activities of the similar won opportunities: " + ", ".join(
            f"{r['label']} {r['value']}" for r in chart_rows
        )
        parts.append(figure(charts.bars(chart_rows, label, colour={"won": charts.US}), label))
    headers = [
        "opportunity",
        "activities",
        "time by team",
        "time by customer",
        "response time by us",
        "rate by us",
        "response time by them",
        "rate by them",
    ]
    parts.append(table(headers, rows, "similar won opportunities"))
    return widget("similar-won", "Similar won opportunities", *parts)


def record_body(view: dict[str, Any], names: dict[str, str | None], href: Linker) -> str:
    rec = view["record"]
    head = (
        f"<h1>{esc(title_of(view))}</h1><p class='meta'>{esc(rec['entity'])} {esc(rec['id'])} · tenant "
        f"{esc(view['tenant'])} · as of {esc(_when(view['as_of']))}"
    )
    if not view["linked"]:
        return head + "</p><p>No activity is linked to this record as of then.</p>"
    head += f" · accuracy {esc(view['accuracy'])} · {view['activities']} activities</p>"
    if view["accuracy"] != "Complete":
        head += "<p class='banner warn'>Partial: a mailbox in scope failed to sync, so these numbers may be low.</p>"
    sections = [
        w_summary(view),
        w_health(view),
        "<div class='grid'>",
        w_interactions(view),
        w_ratio(view),
        "</div>",
        w_activities(view),
        "<div class='grid'>",
        w_time(view),
        w_responses(view),
        "</div>",
        w_top_contacts(view),
        w_interactions_last_next(view),
    ]
    if rec["entity"] == "opportunity":
        sections.append(w_similar(view, names, href))
    return head + "".join(sections)
