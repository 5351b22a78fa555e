"""The report's charts: Vega-Lite specifications rendered to static SVG offline by vl-convert.

Every chart is readable without colour: sides and kinds are told apart by row labels, by position
(above the axis: by us, below: by them) or by the numbers printed on the bars; colour only repeats it.
The SVG is a picture with a text alternative (`role="img"`, `<title>`, `aria-label`); the numbers
themselves are in the table beside each chart.
"""

from __future__ import annotations

import html
import re
from typing import Any

import vl_convert

US, THEM = "#1f4e79", "#e08a2c"  # dark blue / light orange: distinct in greyscale as well
KIND_COLOURS = {"Emails": "#1f4e79", "Meetings": "#e08a2c", "Calls": "#5a9e6f"}
STATE_COLOURS = {"Good": "#2e7d32", "Fair": "#b8860b", "Poor": "#c62828"}
WIDTH = 320
CONFIG: dict[str, Any] = {
    "font": "sans-serif",  # the reader's own sans-serif: no font is embedded or fetched
    "view": {"stroke": None},
    # Few labels: every text on a chart is measured one by one, the bulk of a chart's rendering time.
    "axis": {"labelFontSize": 11, "titleFontSize": 11, "labelLimit": 220, "tickCount": 4},
    "legend": {"labelFontSize": 11, "titleFontSize": 11, "orient": "bottom"},
    "background": "white",
}
_SVG_OPEN = re.compile(r"^<svg\b")


def render(spec: dict[str, Any], label: str) -> str:
    """The chart as an inline SVG element, labelled for screen readers with `label`."""
    svg = vl_convert.vegalite_to_svg({**spec, "config": CONFIG, "description": label})
    text = html.escape(label, quote=True)
    return _SVG_OPEN.sub(f'<svg role="img" aria-label="{text}"', svg, count=1).replace(
        ">", f"><title>{text}</title>", 1
    )


def labelled_bars_spec(
    rows: list[dict[str, Any]], *, colour: dict[str, str], x_max: float | None = None, title: str | None = None
) -> dict[str, Any]:
    """Horizontal bars, one row per label (in the given order), each labelled with its value: "Emails by us: 5".

    rows: {"label", "group" (for the colour), "value", "text" (the value as people read it)}. No axis of
    numbers: the labels say the values, the bars compare them (and cost a third of an axis to draw)."""
    scale: dict[str, Any] = {"domain": [0, x_max]} if x_max is not None else {"domainMin": 0}
    values = [{**r, "label": f"{r['label']}: {r['text']}"} for r in rows]
    spec: dict[str, Any] = {"title": {"text": title, "fontSize": 12, "anchor": "start"}} if title else {}
    return spec | {
        "width": WIDTH,
        "height": {"step": 22},
        "data": {"values": values},
        "mark": {"type": "bar", "cornerRadiusEnd": 2},
        "encoding": {
            "y": {"field": "label", "type": "nominal", "sort": None, "title": None, "axis": {"ticks": False}},
            "x": {"field": "value", "type": "quantitative", "scale": scale, "axis": None},
            "color": {
                "field": "group",
                "type": "nominal",
                "scale": {"domain": list(colour), "range": list(colour.values())},
                "legend": None,
            },
        },
    }


def bars(rows: list[dict[str, Any]], label: str, *, colour: dict[str, str], x_max: float | None = None) -> str:
    return render(labelled_bars_spec(rows, colour=colour, x_max=x_max), label)


def side_by_side(left: dict[str, Any], right: dict[str, Any], label: str) -> str:
    return render({"hconcat": [left, right], "spacing": 40, "resolve": {"scale": {"color": "independent"}}}, label)


def stacked(specs: list[dict[str, Any]], label: str) -> str:
    return render({"vconcat": specs, "spacing": 16, "resolve": {"scale": {"color": "independent"}}}, label)


def gauge_spec(score: int, state: str) -> dict[str, Any]:
    """A ring filled to the score (0..100), the score and the state written in its middle."""
    colour = STATE_COLOURS.get(state, "#6b6b6b")
    return {
        "width": 150,
        "height": 150,
        "layer": [
            {
                "data": {"values": [{"part": "score", "v": score, "o": 0}, {"part": "rest", "v": 100 - score, "o": 1}]},
                "mark": {"type": "arc", "innerRadius": 48, "outerRadius": 70},
                "encoding": {
                    "theta": {"field": "v", "type": "quantitative", "stack": True},
                    "order": {"field": "o"},
                    "color": {
                        "field": "part",
                        "type": "nominal",
                        "scale": {"domain": ["score", "rest"], "range": [colour, "#e6e6e6"]},
                        "legend": None,
                    },
                },
            },
            {
                "data": {"values": [{"t": str(score)}]},
                "mark": {"type": "text", "fontSize": 30, "fontWeight": "bold", "dy": -6},
                "encoding": {"text": {"field": "t"}},
            },
            {
                "data": {"values": [{"t": state}]},
                "mark": {"type": "text", "fontSize": 12, "dy": 18},
                "encoding": {"text": {"field": "t"}},
            },
        ],
    }


def daily_spec(rows: list[dict[str, Any]], days: list[str]) -> dict[str, Any]:
    """The 60-day series: one band per kind, bars up for what we sent or made, down for what we received.

    rows: {"day", "kind", "value"} with value negative for received; `days` is the whole window."""
    return {
        "data": {"values": rows},
        "facet": {
            "row": {
                "field": "kind",
                "type": "nominal",
                "sort": list(KIND_COLOURS),
                "title": None,
                "header": {"labelAngle": 0, "labelAlign": "left", "labelFontSize": 11},
            }
        },
        "spacing": 6,
        "spec": {
            "width": 2 * WIDTH,
            "height": 56,
            "layer": [
                {
                    "mark": {"type": "bar"},
                    "encoding": {
                        "x": {
                            "field": "day",
                            "type": "ordinal",
                            "scale": {"domain": days},
                            "title": None,
                            "axis": {"labelExpr": "slice(datum.value, 5)", "values": days[::7], "labelAngle": 0},
                        },
                        "y": {"field": "value", "type": "quantitative", "title": None, "axis": {"tickCount": 2}},
                        "color": {
                            "field": "kind",
                            "type": "nominal",
                            "scale": {"domain": list(KIND_COLOURS), "range": list(KIND_COLOURS.values())},
                            "legend": None,
                        },
                    },
                },
                {"mark": {"type": "rule", "color": "#333"}, "encoding": {"y": {"datum": 0}}},
            ],
        },
        "resolve": {"scale": {"y": "independent"}},
    }


def weekly_spec(rows: list[dict[str, Any]], weeks: list[str]) -> dict[str, Any]:
    """Activities per week, stacked by kind, the week's total printed on top. rows: {"week", "kind", "value"}."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["week"]] = totals.get(r["week"], 0) + r["value"]
    x = {
        "field": "week",
        "type": "ordinal",
        "scale": {"domain": weeks},
        "title": "week starting",
        "axis": {"labelAngle": 0, "labelExpr": "slice(datum.value, 5)"},
    }
    return {
        "width": 2 * WIDTH,
        "height": 160,
        "layer": [
            {
                "data": {"values": rows},
                "mark": {"type": "bar"},
                "encoding": {
                    "x": x,
                    "y": {"field": "value", "type": "quantitative", "stack": True, "title": "activities"},
                    "color": {
                        "field": "kind",
                        "type": "nominal",
                        "scale": {"domain": list(KIND_COLOURS), "range": list(KIND_COLOURS.values())},
                        "title": None,
                    },
                },
            },
            {
                "data": {"values": [{"week": w, "value": n} for w, n in totals.items()]},
                "mark": {"type": "text", "dy": -6, "fontSize": 11},
                "encoding": {"x": x, "y": {"field": "value", "type": "quantitative"}, "text": {"field": "value"}},
            },
        ],
    }
