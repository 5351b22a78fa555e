"""Reading a report page back: its widgets, and the KPI values each widget shows (`data-kpi` cells).

`expected_cells` is the display contract, written out independently of the report's code: what each
widget must show for a record, given what `kpis show --json` printed for it.
"""

from __future__ import annotations

from datetime import datetime
from html.parser import HTMLParser
from typing import Any

COUNT_KEYS = ("emails_sent", "emails_received", "meetings_sent", "meetings_received", "calls_made", "calls_received")
WIDGETS = ("summary", "health", "interactions", "ratio", "activities", "time", "responses", "top-contacts", "last-next")


class PageReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.widgets: dict[str, dict[str, str]] = {}  # widget -> data-kpi -> text
        self.svgs: dict[str, int] = {}  # widget -> charts in it
        self.text: dict[str, str] = {}  # widget -> all its text
        self._widget: str | None = None
        self._depth = 0
        self._kpi: str | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-widget"):
            self._widget, self._depth = a["data-widget"], 0
            self.widgets[self._widget], self.svgs[self._widget], self.text[self._widget] = {}, 0, ""
        if self._widget is None:
            return
        if tag == "section":
            self._depth += 1
        if tag == "svg":
            self.svgs[self._widget] += 1
        if a.get("data-kpi"):
            self._kpi, self._buf = a["data-kpi"], []

    def handle_endtag(self, tag: str) -> None:
        if self._widget is None:
            return
        if tag in ("td", "th", "span") and self._kpi:
            self.widgets[self._widget][self._kpi] = "".join(self._buf).strip()
            self._kpi = None
        if tag == "section":
            self._depth -= 1
            if self._depth == 0:
                self._widget = None

    def handle_data(self, data: str) -> None:
        if self._kpi is not None:
            self._buf.append(data)
        if self._widget is not None:
            self.text[self._widget] += data


def read_page(html: str) -> PageReader:
    reader = PageReader()
    reader.feed(html)
    return reader


def _hours(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} h"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _minutes(m: int) -> str:
    return f"{m} min ({m / 60:.1f} h)"


def _when(s: str | None) -> str:
    return "-" if not s else datetime.fromisoformat(s).strftime("%Y-%m-%d %H:%M UTC")


def _person(p: dict[str, Any]) -> str:
    return p["addresses"][0] if p["person"].startswith("contact:") and p["addresses"] else p["person"]


def charted_widgets(view: dict[str, Any]) -> set[str]:
    """The widgets that must carry a chart: every one with something to draw."""
    out = (
        {"health", "interactions", "activities", "time"}
        if view.get("health")
        else {"interactions", "activities", "time"}
    )
    if any(view[f"sent_received_ratio_by_{s}"] is not None for s in ("us", "them")):
        out.add("ratio")
    if any(
        view[f"{k}_by_{s}{u}"] is not None
        for s in ("us", "them")
        for k, u in (("average_first_response_time", "_hours"), ("response_rate", ""))
    ):
        out.add("responses")
    if view.get("top_contacts_ours") or view.get("top_contacts_theirs"):
        out.add("top-contacts")
    if (view.get("similar_won") or {}).get("matches"):
        out.add("similar-won")
    return out


def expected_cells(view: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Widget -> data-kpi key -> the text it must show, for a record's `kpis show --json` view."""
    out: dict[str, dict[str, str]] = {
        "interactions": {k: str(view[k]) for k in COUNT_KEYS},
        "ratio": {k: _ratio(view[k]) for k in ("sent_received_ratio_by_us", "sent_received_ratio_by_them")},
        "time": {k: _minutes(view[k]) for k in ("time_spent_by_team_minutes", "time_spent_by_customer_minutes")},
        "responses": {},
        "activities": {
            f"relationship_activities.{day}.{k}": str(counts[k])
            for day, counts in (view.get("relationship_activities") or {}).items()
            for k in COUNT_KEYS
        },
        "top-contacts": {},
        "last-next": {
            f"{k}.time": _when((view.get(k) or {}).get("time")) for k in ("last_interaction", "next_interaction")
        },
    }
    for side, turns in (("us", "customer"), ("them", "ours")):
        out["responses"].update(
            {
                f"average_first_response_time_by_{side}_hours": _hours(
                    view[f"average_first_response_time_by_{side}_hours"]
                ),
                f"median_first_response_time_by_{side}_hours": _hours(
                    view[f"median_first_response_time_by_{side}_hours"]
                ),
                f"response_rate_by_{side}": _rate(view[f"response_rate_by_{side}"]),
                f"turns.{turns}": f"{view['turns'][turns]['answered']} of {view['turns'][turns]['judged']}",
            }
        )
    for side in ("ours", "theirs"):
        for i, p in enumerate(view.get(f"top_contacts_{side}") or []):
            k = f"top_contacts_{side}.{i}"
            out["top-contacts"].update(
                {
                    f"{k}.person": _person(p),
                    **{f"{k}.{n}": str(p[n]) for n in ("emails", "meetings", "calls", "activities")},
                    f"{k}.last_contacted": _when(p["last_contacted"]),
                }
            )
    h = view.get("health")
    out["health"] = (
        {
            "health.score": str(h["score"]),
            "health.state": h["state"],
            "health.trend": h["trend"],
            "health.previous": f"{h['previous']['score']} {h['previous']['state']}",
            "health.reason": h["reason"],
            **{f"health.parts.{p}": f"{v:.2f}" for p, v in h["parts"].items()},
        }
        if h
        else {}
    )
    similar = view.get("similar_won")
    if similar:
        out["similar-won"] = {}
        for i, m in enumerate(similar["matches"]):
            k = f"similar_won.matches.{i}"
            out["similar-won"].update(
                {
                    f"{k}.activities": str(m["activities"]) if m["activities"] is not None else "-",
                    f"{k}.time_spent_by_team_minutes": _minutes(m["time_spent_by_team_minutes"] or 0),
                    f"{k}.time_spent_by_customer_minutes": _minutes(m["time_spent_by_customer_minutes"] or 0),
                    **{
                        f"{k}.{n}": _hours(m[n])
                        for n in (
                            "average_first_response_time_by_us_hours",
                            "average_first_response_time_by_them_hours",
                        )
                    },
                    **{f"{k}.{n}": _rate(m[n]) for n in ("response_rate_by_us", "response_rate_by_them")},
                }
            )
    return out
