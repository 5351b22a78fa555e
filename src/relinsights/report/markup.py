"""HTML building blocks of the report: escaped text, tables, widget sections and the page shell.

Pages are self-contained: the style sheet is inline, charts are inline SVG, there is no script, and a
Content-Security-Policy forbids fetching anything, so opening a page never touches the network.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, sans-serif; color: #1a1a1a; margin: 0 auto; max-width: 1100px; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 .25rem; } h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.meta { color: #555; margin: 0 0 1rem; }
nav a { margin-right: 1rem; }
a { color: #0b57a4; }
section.widget { border: 1px solid #d0d0d0; border-radius: 6px; padding: .8rem 1rem; margin: 0 0 1rem; break-inside: avoid; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 0 1rem; }
figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .2rem .6rem .2rem 0; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
td.n, th.n { text-align: right; }
.state-Good { color: #1b5e20; } .state-Fair { color: #8a6100; } .state-Poor { color: #b71c1c; }
.banner { padding: .6rem .8rem; border-radius: 6px; margin: 0 0 1rem; border: 2px solid; }
.banner.ok { border-color: #2e7d32; } .banner.warn { border-color: #c62828; }
ul.summary li { margin: .2rem 0; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
@page { margin: 1.5cm; }
@media print {
  h2 { break-after: avoid; }
  nav, .skip { display: none; }
  body { max-width: none; padding: 0; font-size: 11px; }
  section.widget { border-color: #999; }
  a { color: inherit; text-decoration: none; }
  .grid { display: block; }
}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell; `kpi` names the `kpis show --json` key whose value it shows (a hook for checks)."""

    text: str
    kpi: str | None = None
    numeric: bool = False
    raw_html: bool = False  # text is markup already (a link)

    def render(self, tag: str = "td") -> str:
        attrs = ' class="n"' if self.numeric else ""
        if self.kpi:
            attrs += f' data-kpi="{esc(self.kpi)}"'
        return f"<{tag}{attrs}>{self.text if self.raw_html else esc(self.text)}</{tag}>"


def cell(value: object, kpi: str | None = None) -> Cell:
    return Cell(str(value), kpi, numeric=isinstance(value, int | float))


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], caption: str | None = None) -> str:
    """Cells are `Cell`s or anything else, shown as its text."""

    def as_cell(c: object) -> Cell:
        return c if isinstance(c, Cell) else Cell(str(c))

    head = "".join(as_cell(h).render("th").replace("<th", '<th scope="col"', 1) for h in headers)
    body = "".join("<tr>" + "".join(as_cell(c).render() for c in row) + "</tr>" for row in rows)
    cap = f"<caption class='visually-hidden'>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def widget(key: str, title: str, *parts: str) -> str:
    """One widget: a titled section holding its chart (if any) and its numbers."""
    return (
        f'<section class="widget" id="{esc(key)}" data-widget="{esc(key)}" aria-labelledby="{esc(key)}-h">'
        f'<h2 id="{esc(key)}-h">{esc(title)}</h2>{"".join(parts)}</section>'
    )


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption class='visually-hidden'>{esc(caption)}</figcaption></figure>"


def link(href: str, text: str) -> Cell:
    return Cell(f'<a href="{esc(href)}">{esc(text)}</a>', raw_html=True)


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<nav aria-label="report">{links}</nav><main>{body}</main></body></html>\n'
    )
