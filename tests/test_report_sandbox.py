"""The report of a sandbox organisation: synced over TLS, mirrored, computed, then written by the CLI.

Each record page must show what `kpis show --json` prints for that record; and headless Chromium
(Debian's `chromium`, driven by Playwright) opens the pages from disk: every widget rendered with its
chart, no console error, no request leaving the page; a screenshot is kept in the test's directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from relinsights.cli import app
from relinsights.compute import compute_tenant
from relinsights.config import load_config
from relinsights.db import make_engine, migrate
from relinsights.sandbox.server import SandboxServer
from report_pages import WIDGETS, charted_widgets, read_page
from test_compute_sandbox import synced
from test_report import check_widgets

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One record of each kind (an opportunity with similar won ones) and the overview, from the CLI."""
    base = tmp_path_factory.mktemp("report")
    with SandboxServer(size="small", seed=7, state_dir=base / "sandbox") as sandbox:
        config = sandbox.write_daemon_config(base)
        engine = make_engine(load_config(config).database_url)
        migrate(engine)
        tenant = synced(sandbox, engine, base)
        compute_tenant(engine, tenant, as_of=sandbox.org.now())
    cfg = ["--config", str(config)]
    ranked = json.loads(runner.invoke(app, ["kpis", "list", "--limit", "0", "--json", *cfg]).stdout)
    picked: dict[str, str] = {}
    for row in ranked:
        view = json.loads(runner.invoke(app, ["kpis", "show", f"{row['entity']}:{row['id']}", "--json", *cfg]).stdout)
        if row["entity"] == "opportunity" and not (view.get("similar_won") or {}).get("matches"):
            continue
        picked.setdefault(row["entity"], f"{row['entity']}:{row['id']}")
    assert set(picked) == {"contact", "account", "lead", "opportunity"}, picked
    out = base / "out"
    res = runner.invoke(
        app, ["report", *cfg, "--out", str(out), *(a for r in picked.values() for a in ("--record", r))]
    )
    assert res.exit_code == 0, res.output
    views = {
        f"{q.replace(':', '-')}.html": json.loads(runner.invoke(app, ["kpis", "show", q, "--json", *cfg]).stdout)
        for q in picked.values()
    }
    yield {"out": out, "records": picked, "config": cfg, "views": views}
    engine.dispose()


def test_each_record_page_shows_what_kpis_show_json_prints(report: dict[str, Any]) -> None:
    for name, show in report["views"].items():
        check_widgets((report["out"] / "sandbox" / name).read_text(), show)


def test_the_overview_links_the_pages_written_and_ranks_every_scored_record(report: dict[str, Any]) -> None:
    html = (report["out"] / "sandbox" / "index.html").read_text()
    overview = read_page(html)
    assert {"cold", "weekly", "ranked", "sync-health"} <= set(overview.widgets)
    assert "<strong>Numbers can be trusted:</strong> all" in html
    ranked = json.loads(runner.invoke(app, ["kpis", "list", "--limit", "0", "--json", *report["config"]]).stdout)
    assert html.count('data-kpi="health.score"') >= len(ranked)  # the ranking, plus the cold ones again
    for query in report["records"].values():
        assert f'href="{query.replace(":", "-")}.html"' in html
    status = json.loads(runner.invoke(app, ["status", "--json", *report["config"]]).stdout)
    assert all(row["mailbox"] in overview.text["sync-health"] for row in status["mailboxes"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_every_widget_offline(report: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    pages = [report["out"] / "index.html", report["out"] / "sandbox" / "index.html"]
    pages += [report["out"] / "sandbox" / f"{q.replace(':', '-')}.html" for q in report["records"].values()]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for path in pages:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                requests: list[str] = []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("request", lambda r, requests=requests: requests.append(r.url))
                page.goto(path.as_uri(), wait_until="load")
                assert errors == [], (path.name, errors)
                assert requests == [path.as_uri()], (path.name, requests)  # the page itself, nothing else
                if path.parent.name == "sandbox":
                    drawn = page.evaluate(
                        """() => Object.fromEntries([...document.querySelectorAll('section[data-widget]')].map(
                            s => [s.dataset.widget, [...s.querySelectorAll('svg')].filter(
                                g => g.getBoundingClientRect().width > 50 && g.getBoundingClientRect().height > 30
                                     && g.querySelectorAll('path, rect').length > 1).length]))"""
                    )
                    if path.name != "index.html":
                        assert set(WIDGETS) <= set(drawn)
                        assert {w for w, n in drawn.items() if n} == charted_widgets(report["views"][path.name]), drawn
                    else:
                        assert drawn["weekly"] == 1, drawn
                page.screenshot(path=str(tmp_path / f"{path.parent.name}-{path.stem}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(shots) == len(pages) and all((tmp_path / s).stat().st_size > 10_000 for s in shots)
