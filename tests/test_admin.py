"""Tenants enable/disable and purge: what an admin does for an opt-out or a privacy request."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from fakegraph import FakeGraph, message
from relinsights.admin import purge_user
from relinsights.cli import app
from relinsights.db import make_engine
from relinsights.db.models import Event, Mailbox, Message, MessageParticipant
from test_sync_graph import SELLER, count, run, seed


def test_purge_user_removes_every_item_the_person_took_part_in(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    fg.put("mail:inbox-id", message("cc-ann", "inbox-id", "zoe@tailspin.com", [SELLER], "2026-03-01T10:00:00Z",
                                    ccRecipients=[{"emailAddress": {"address": "Ann@Fabrikam.com"}}]))
    run(sqlite_engine, fg)
    before = count(sqlite_engine, Message)
    report = purge_user(sqlite_engine, " ANN@fabrikam.com ")
    # Ann sent the 5 Customers messages, received the 3 sent ones, was cc'd once, and attended the meeting.
    assert (report.messages, report.events, report.mailboxes) == (9, 1, 0)
    assert count(sqlite_engine, Message) == before - 9
    with sqlite_engine.connect() as conn:
        left = conn.execute(select(func.count()).where(MessageParticipant.address == "ann@fabrikam.com")).scalar_one()
    assert left == 0 and count(sqlite_engine, Event) == 0
    assert any("kpi.excluded_addresses" in n for n in report.notes)


def test_purge_of_an_internal_user_removes_their_mailbox(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    run(sqlite_engine, fg)
    report = purge_user(sqlite_engine, "alias@contoso.com")  # found through the user's alias
    assert report.mailboxes == 1 and report.messages == 33
    assert count(sqlite_engine, Mailbox) == 0 and count(sqlite_engine, Message) == 0
    assert any("scope.exclude_users" in n for n in report.notes)


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "test.db"}"\n'
        '[[tenant]]\nname = "contoso"\ntenant_id = "11111111-2222-3333-4444-555555555555"\n'
        'client_id = "66666666-7777-8888-9999-000000000000"\ngraph_url = "https://graph.test/v1.0"\n'
        '[tenant.credential]\nsecret_env = "RELINSIGHTS_TEST_SECRET"\n[tenant.sync]\npage_size = 10\n'
    )
    return cfg


def test_tenants_disable_stops_sync_and_purges_then_enable_resyncs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    runner = CliRunner()
    assert runner.invoke(app, ["tenants", "list", "--config", str(cfg)]).exit_code == 0
    fg = FakeGraph()
    seed(fg)
    run(engine, fg)
    rows = json.loads(runner.invoke(app, ["tenants", "list", "--json", "--config", str(cfg)]).output)
    assert rows[0]["enabled"] is True and rows[0]["messages"] == 33 and rows[0]["mailboxes"] == 1
    res = runner.invoke(app, ["tenants", "disable", "contoso", "--purge", "--config", str(cfg)])
    assert res.exit_code == 0 and "purged 1 mailboxes, 33 messages, 1 events" in res.output
    n = len(fg.requests)
    assert run(engine, fg).status == "disabled" and len(fg.requests) == n  # no Graph traffic while disabled
    assert count(engine, Message) == 0
    rows = json.loads(runner.invoke(app, ["tenants", "list", "--json", "--config", str(cfg)]).output)
    assert rows[0]["enabled"] is False and rows[0]["override"] is False
    assert runner.invoke(app, ["tenants", "enable", "contoso", "--config", str(cfg)]).exit_code == 0
    assert run(engine, fg).status == "ok" and count(engine, Message) == 33  # a first full sync again
    res = runner.invoke(app, ["tenants", "enable", "nope", "--config", str(cfg)])
    assert res.exit_code == 78 and "tenant 'nope' is not in the configuration" in res.output


def test_purge_cli_needs_exactly_one_target(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    res = CliRunner().invoke(app, ["purge", "--config", str(cfg)])
    assert res.exit_code == 78 and "exactly one of --user" in res.output
    res = CliRunner().invoke(app, ["purge", "--tenant", "contoso", "--json", "--config", str(cfg)])
    assert res.exit_code == 0 and json.loads(res.output)["scope"] == "tenant contoso"


def test_purge_user_finds_a_delegate_by_the_sender_column(sqlite_engine: Engine) -> None:
    # From and sender are columns of the message (not participant rows): a message an assistant sent on
    # behalf of someone else is found through its sender alone.
    fg = FakeGraph()
    seed(fg)
    item = message("on-behalf", "inbox-id", "boss@tailspin.com", [SELLER], "2026-03-01T10:00:00Z")
    fg.put("mail:inbox-id", {**item, "sender": {"emailAddress": {"address": "Assistant@Tailspin.com", "name": "Ast"}}})
    run(sqlite_engine, fg)
    with sqlite_engine.connect() as conn:
        stored = conn.execute(
            select(Message.sender_address, Message.sender_raw_address).where(Message.graph_id == "on-behalf")
        ).one()
    assert tuple(stored) == ("assistant@tailspin.com", "Assistant@Tailspin.com")
    before = count(sqlite_engine, Message)
    report = purge_user(sqlite_engine, "assistant@tailspin.com")
    assert (report.messages, report.events, report.mailboxes) == (1, 0, 0)
    assert count(sqlite_engine, Message) == before - 1
