"""`relinsights report`: each widget shows the record's `kpis show --json` values; the overview's
sync health, weekly activity and cold list; bad input (SQLite and PostgreSQL for the database parts)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from typer.testing import CliRunner

from relinsights.cli import app
from relinsights.compute import compute_tenant
from relinsights.config import TenantConfig
from relinsights.report.markup import page
from relinsights.report.overview import went_cold
from relinsights.report.record import record_body, summary_sentences
from report_pages import WIDGETS, charted_widgets, expected_cells, read_page
from test_compute_db import ANN, ANN_ID, T, tenant, worked_example, write_config

__all__ = ["tenant"]  # the fixture, imported for the database tests
runner = CliRunner()


def view(**overrides: Any) -> dict[str, Any]:
    """A `kpis show --json` view of an opportunity, every widget filled, some values empty (null)."""
    v: dict[str, Any] = {
        "tenant": "contoso",
        "record": {
            "entity": "opportunity",
            "id": "0e0e0e0e-0000-4000-8000-000000000001",
            "name": "Fabrikam <Big> deal",
        },
        "as_of": "2026-03-10T12:00:00+00:00",
        "linked": True,
        "series_first_day": "2026-01-10",
        "series_last_day": "2026-03-10",
        "computed_at": "2026-03-10T12:01:00+00:00",
        "accuracy": "Partial",
        "emails_sent": 7,
        "emails_received": 9,
        "meetings_sent": 5,
        "meetings_received": 2,
        "calls_made": 1,
        "calls_received": 0,
        "activities": 24,
        "time_spent_by_team_minutes": 395,
        "time_spent_by_customer_minutes": 250,
        "sent_received_ratio_by_us": 0.7777777777777778,
        "sent_received_ratio_by_them": 1.2857142857142858,
        "average_first_response_time_by_us_hours": 4.5,
        "median_first_response_time_by_us_hours": 3.25,
        "response_rate_by_us": 0.875,
        "average_first_response_time_by_them_hours": None,
        "median_first_response_time_by_them_hours": None,
        "response_rate_by_them": 0.0,
        "turns": {
            "customer": {"turns": 8, "judged": 8, "answered": 7},
            "ours": {"turns": 3, "judged": 2, "answered": 0},
        },
        "last_interaction": {
            "time": "2026-03-05T10:00:00+00:00",
            "kind": "meeting",
            "direction": "outgoing",
            "activity_key": "meeting:uid-4",
            "internal_party": "bob@contoso.com",
        },
        "next_interaction": None,
        "top_contacts_ours": [
            {
                "person": "bob@contoso.com",
                "addresses": ["bob@contoso.com"],
                "activities": 20,
                "emails": 14,
                "meetings": 5,
                "calls": 1,
                "last_contacted": "2026-03-05T10:00:00+00:00",
            },
        ],
        "top_contacts_theirs": [
            {
                "person": "contact:c1",
                "addresses": ["ann@fabrikam.com"],
                "activities": 16,
                "emails": 12,
                "meetings": 4,
                "calls": 0,
                "last_contacted": "2026-03-04T09:00:00+00:00",
            },
        ],
        "relationship_activities": {
            "2026-03-02": dict.fromkeys(
                (
                    "emails_sent",
                    "emails_received",
                    "meetings_sent",
                    "meetings_received",
                    "calls_made",
                    "calls_received",
                ),
                0,
            )
            | {"emails_sent": 2, "meetings_received": 1},
            "2026-03-05": {
                "emails_sent": 0,
                "emails_received": 3,
                "meetings_sent": 1,
                "meetings_received": 0,
                "calls_made": 1,
                "calls_received": 0,
            },
        },
        "health": {
            "score": 48,
            "state": "Fair",
            "trend": "Declining",
            "parts": {"engagement": 1.0, "recency": 0.61, "reciprocity": 0.25, "responsiveness": 0.0},
            "measures": {},
            "weakest_part": "responsiveness",
            "reason": "The customer answered 0 of 2 of our emails within 168 hours over the last 90 days.",
            "previous": {"score": 57, "state": "Fair"},
        },
        "similar_won": {
            "as_of": "2026-03-09T00:00:00+00:00",
            "fallback": True,
            "eligible_won": 4,
            "matches": [
                {
                    "opportunity_id": "aa",
                    "distance": 0.1,
                    "activities": 30,
                    "time_spent_by_team_minutes": 600,
                    "time_spent_by_customer_minutes": 300,
                    "average_first_response_time_by_us_hours": 2.0,
                    "response_rate_by_us": 0.9,
                    "average_first_response_time_by_them_hours": 5.5,
                    "response_rate_by_them": 0.8,
                },
                {
                    "opportunity_id": "bb",
                    "distance": 0.4,
                    "activities": 0,
                    "time_spent_by_team_minutes": 0,
                    "time_spent_by_customer_minutes": 0,
                    "average_first_response_time_by_us_hours": None,
                    "response_rate_by_us": None,
                    "average_first_response_time_by_them_hours": None,
                    "response_rate_by_them": None,
                },
            ],
        },
    }
    return v | overrides


def check_widgets(html: str, v: dict[str, Any]) -> None:
    """Every widget is there, shows exactly the view's values, and has its chart where it should."""
    page_ = read_page(html)
    wanted = expected_cells(v)
    assert set(WIDGETS) <= set(page_.widgets), set(WIDGETS) - set(page_.widgets)
    for widget, cells in wanted.items():
        shown = page_.widgets[widget]
        assert {k: shown.get(k) for k in cells} == cells, widget
    assert {w for w, n in page_.svgs.items() if n} == charted_widgets(v)


def test_each_widget_shows_the_values_of_the_view() -> None:
    v = view()
    html = page("t", record_body(v, {"aa": "Won deal A"}, lambda e, i: f"{e}-{i}.html" if i == "aa" else None))
    check_widgets(html, v)
    text = read_page(html).text
    assert "Won deal A" in text["similar-won"] and 'href="opportunity-aa.html"' in html
    assert "by estimated value only" in text["similar-won"]
    assert "Fabrikam &lt;Big&gt; deal" in html and "<Big>" not in html  # names are escaped
    assert "Partial" in html  # a failing mailbox is said on the page


def test_charts_are_pictures_with_text_alternatives_and_pages_fetch_nothing() -> None:
    html = page("t", record_body(view(), {}, lambda e, i: None))
    svgs = re.findall(r"<svg\b[^>]*>", html)
    assert svgs and all('role="img"' in s and 'aria-label="' in s for s in svgs)
    assert html.count("<title>") == len(svgs) + 1  # one per chart, plus the page's
    assert "default-src 'none'" in html and "<script" not in html
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)  # nothing remote, no fonts, no scripts
    assert "@media print" in html


def test_summary_sentences_say_who_initiated_more() -> None:
    sentences = summary_sentences(view())
    assert "3 more meetings initiated by your team than by the customer." in sentences
    assert "2 more emails initiated by the customer than by your team." in sentences
    assert "1 more call initiated by your team than by the customer." in sentences
    assert any(s.startswith("Relationship health is Fair (48), declining (it was 57") for s in sentences)
    assert "Last interaction 5 days ago: meeting sent by bob@contoso.com." in sentences
    even = summary_sentences(view(meetings_sent=2, emails_received=7, calls_made=0))
    assert "As many meetings initiated by your team as by the customer (2 each)." in even
    assert "As many emails initiated by your team as by the customer (7 each)." in even
    assert not any("calls initiated" in s for s in even)  # none either way: nothing to say


def test_a_relationship_went_cold_when_declining_without_customer_activity_lately() -> None:
    last_day = datetime(2026, 3, 10, tzinfo=UTC).date()
    row = {"health_trend": "Declining"}
    quiet = {"relationship_activities": {"2026-02-08": {"emails_received": 4}, "2026-03-01": {"emails_sent": 3}}}
    heard = {"relationship_activities": {"2026-02-09": {"calls_received": 1}}}
    assert went_cold(row, quiet, last_day)  # 02-08 is 31 days back: before the last 30 days
    assert not went_cold(row, heard, last_day)
    assert not went_cold({"health_trend": "Steady"}, quiet, last_day)


def test_report_of_the_worked_example(engine: Engine, tenant: TenantConfig, tmp_path: Path) -> None:
    rows = worked_example(engine, tenant)
    compute_tenant(engine, tenant, as_of=T)
    cfg = str(write_config(tmp_path, engine))
    out = tmp_path / "report"
    res = runner.invoke(app, ["report", "--config", cfg, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"report: {out / 'index.html'} (" in res.output  # never wrapped: a path to copy
    show = json.loads(runner.invoke(app, ["kpis", "show", ANN, "--json", "--config", cfg]).stdout)
    ann = (out / "contoso" / f"contact-{ANN_ID}.html").read_text()
    check_widgets(ann, show)
    assert "similar-won" not in read_page(ann).widgets  # contacts have none

    overview = read_page((out / "contoso" / "index.html").read_text())
    ranked = overview.text["ranked"]
    assert "Ann Smith" in ranked and overview.widgets["ranked"]["health.score"] == "80"
    weekly = overview.text["weekly"]
    # Monday weeks: #1 (received) and #2 (sent) on Sunday 03-01; #3 (sent) and the meeting #4 in the week of
    # 03-02; #5 is still to come.
    assert re.search(r"2026-02-23\s*1\s*1\s*0\s*0\s*0\s*0\s*2", weekly), weekly
    assert re.search(r"2026-03-02\s*1\s*0\s*1\s*0\s*0\s*0\s*2", weekly), weekly
    sync = overview.text["sync-health"]
    assert all(box in sync for box in rows.mailbox)

    only = runner.invoke(app, ["report", "--config", cfg, "--out", str(tmp_path / "one"), "--record", ANN.upper()])
    assert only.exit_code == 0, only.output
    assert sorted(p.name for p in (tmp_path / "one" / "contoso").iterdir()) == [
        "contact-" + ANN_ID + ".html",
        "index.html",
    ]
    bad = runner.invoke(app, ["report", "--config", cfg, "--record", "nobody@nowhere.example", "--record", ANN])
    assert bad.exit_code == 1
    said = " ".join(bad.stderr.split())
    assert "--record 'nobody@nowhere.example': no contact, lead, account or opportunity matches; give" in said


def test_a_failing_mailbox_is_said_before_any_number(engine: Engine, tenant: TenantConfig, tmp_path: Path) -> None:
    rows = worked_example(engine, tenant)
    rows.mailboxes("eve@contoso.com", status="error")
    compute_tenant(engine, tenant, as_of=T)
    out = tmp_path / "r"
    assert (
        runner.invoke(app, ["report", "--config", str(write_config(tmp_path, engine)), "--out", str(out)]).exit_code
        == 0
    )
    html = (out / "contoso" / "index.html").read_text()
    assert "Check before trusting:" in html and "1 of 4 mailboxes are not syncing: eve@contoso.com (error)" in html
    assert html.index("Check before trusting") < html.index('data-widget="ranked"')


def test_before_any_computation_the_report_says_what_to_run(
    engine: Engine, tenant: TenantConfig, tmp_path: Path
) -> None:
    worked_example(engine, tenant)
    out = tmp_path / "r"
    res = runner.invoke(app, ["report", "--config", str(write_config(tmp_path, engine)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "contoso: 0 record pages" in res.output and "relinsights compute --once" in res.output
    html = (out / "contoso" / "index.html").read_text()
    assert "No KPIs computed yet" in html and 'data-widget="sync-health"' in html
