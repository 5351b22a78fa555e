"""Mail and calendar delta sync against a scripted Graph (respx), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import Engine, func, select
from sqlmodel import Session
from sqlmodel import select as sqlmodel_select

from conftest import StubTokens, tenant_config
from fakegraph import FakeGraph, event, message, throttled, unavailable
from relinsights.db.models import Event, EventAttendee, Mailbox, Message, MessageParticipant, SyncCursor
from relinsights.graph import mailbox_sync
from relinsights.graph.store import MESSAGES, CursorAdvance, apply_page
from relinsights.graph.sync import sync_tenant

SELLER = "seller@contoso.com"


def seed(fg: FakeGraph, inbox: int = 25, customers: int = 5, sent: int = 3, deleted: int = 2) -> None:
    for i in range(inbox):
        fg.put(
            "mail:inbox-id", message(f"in{i}", "inbox-id", f"c{i}@fabrikam.com", [SELLER], f"2026-03-01T09:{i:02d}:00Z")
        )
    for i in range(customers):
        fg.put("mail:cust-id", message(f"cu{i}", "cust-id", "ann@fabrikam.com", [SELLER], f"2026-03-02T09:{i:02d}:00Z"))
    for i in range(sent):
        fg.put(
            "mail:sent-id",
            message(
                f"se{i}",
                "sent-id",
                SELLER,
                ["ann@fabrikam.com"],
                f"2026-03-03T09:{i:02d}:00Z",
                bccRecipients=[{"emailAddress": {"address": "boss@contoso.com"}}],
            ),
        )
    for i in range(deleted):
        fg.put("mail:deleted-id", message(f"de{i}", "deleted-id", "x@spam.example", [SELLER], "2026-03-04T09:00:00Z"))
    fg.put(
        "calendar",
        event(
            "ev1",
            SELLER,
            [("ann@fabrikam.com", "accepted"), ("carl@contoso.com", "declined")],
            "2026-03-05T10:00:00.0000000",
            "2026-03-05T11:00:00.0000000",
        ),
    )


def run(engine: Engine, fg: FakeGraph, sleeps: list[float] | None = None, **cfg: Any) -> Any:
    async def fake_sleep(s: float) -> None:
        (sleeps if sleeps is not None else []).append(s)

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="graph.test").mock(side_effect=fg)
        return asyncio.run(sync_tenant(engine, tenant_config(**cfg), sleep=fake_sleep, tokens=StubTokens()))


def stored(engine: Engine) -> dict[str, tuple[str | None, bool | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Message.graph_id, Message.folder_graph_id, Message.is_read, Message.subject)).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def truth(fg: FakeGraph, folders: tuple[str, ...] = ("inbox-id", "cust-id", "sent-id")) -> dict[str, tuple]:
    out = {}
    for f in folders:
        for iid, item in fg.state[f"mail:{f}"].items():
            out[iid] = (f, item["isRead"], item["subject"])
    return out


def obj(engine: Engine, model: Any, *where: Any) -> Any:
    with Session(engine) as s:
        return s.exec(sqlmodel_select(model).where(*where)).one()


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_first_round_pages_folders_and_metadata_only(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    report = run(engine, fg)
    assert report.status == "ok", report.error
    assert report.mailboxes == {SELLER: "ok"}
    assert stored(engine) == truth(fg)  # Deleted Items is not synced, the Customers subfolder is
    # 25 inbox messages at 10 a page: three pages, the first two with nextLinks.
    inbox_reqs = [r for r in fg.requests if "inbox-id/messages/delta" in str(r.url)]
    assert len(inbox_reqs) == 3
    first = inbox_reqs[0]
    assert "odata.maxpagesize=10" in first.headers["Prefer"] and 'IdType="ImmutableId"' in first.headers["Prefer"]
    select_param = first.url.params["$select"]
    assert "body" not in select_param.lower() and "internetMessageId" in select_param
    assert first.headers["Authorization"].startswith("Bearer token-")
    # Participants: the recipients (from and sender are message columns); the Sent Items copy keeps its Bcc.
    with engine.connect() as conn:
        roles = dict(
            conn.execute(select(MessageParticipant.role, func.count()).group_by(MessageParticipant.role)).all()
        )
        bcc = conn.execute(select(MessageParticipant.address).where(MessageParticipant.role == "bcc")).scalars().all()
        senders = conn.execute(
            select(func.count()).where(Message.from_address.is_not(None), Message.sender_address == Message.from_address)
        ).scalar_one()
        cursors = conn.execute(select(SyncCursor.kind, SyncCursor.key, SyncCursor.is_delta)).all()
    assert roles == {"to": 33, "bcc": 3} and bcc == ["boss@contoso.com"] * 3 and senders == 33
    assert {(k, key) for k, key, d in cursors if d} >= {
        ("messages", "inbox-id"),
        ("messages", "cust-id"),
        ("messages", "sent-id"),
        ("calendar", "calendar"),
    }
    assert ("messages", "deleted-id") not in {(k, key) for k, key, _ in cursors}
    with engine.connect() as conn:
        ev = conn.execute(select(Event.ical_uid, Event.start, Event.end)).one()
        att = dict(conn.execute(select(EventAttendee.address, EventAttendee.response)).all())
    assert ev.ical_uid == "ical-ev1" and (ev.end - ev.start).total_seconds() == 3600
    assert att == {"seller@contoso.com": "organizer", "ann@fabrikam.com": "accepted", "carl@contoso.com": "declined"}


def test_stored_message_columns_and_participants(engine: Engine) -> None:
    # From and sender on the message (raw form only when it differs), recipients as participant rows whose
    # raw form and name are NULL when there is nothing more to say; booleans, times and "" read back as sent.
    # The same for an item with every selected field (the parser's fast path) and one without.
    fg = FakeGraph()
    item = message("m1", "inbox-id", "Ann@Fabrikam.com", [SELLER, "Bob@Contoso.com"], "2026-03-01T09:00:00Z")
    item["toRecipients"][0]["emailAddress"]["name"] = ""
    item |= {"subject": "", "isRead": True, "ccRecipients": [{"emailAddress": {"address": "carl@contoso.com"}}]}
    fg.put("mail:inbox-id", {**item, "conversationIndex": "AQHZ"})
    fg.put("mail:inbox-id", {**item, "id": "m2"})
    run(engine, fg)
    for graph_id in ("m1", "m2"):
        with engine.connect() as conn:
            m = conn.execute(select(Message).where(Message.graph_id == graph_id)).one()
            parts = conn.execute(
                select(MessageParticipant.role, MessageParticipant.address, MessageParticipant.raw_address,
                       MessageParticipant.name).where(MessageParticipant.message_id == m.id).order_by(MessageParticipant.id)
            ).all()
        ann = ("ann@fabrikam.com", "Ann@Fabrikam.com", "Ann")
        assert (m.from_address, m.from_raw_address, m.from_name) == ann
        assert (m.sender_address, m.sender_raw_address, m.sender_name) == ann
        assert m.subject == "" and m.is_read is True and m.is_draft is False and m.in_reply_to is None
        assert m.sent_at is not None and m.sent_at.replace(tzinfo=None) == datetime(2026, 3, 1, 9)
        assert m.conversation_index == ("AQHZ" if graph_id == "m1" else None)
        assert [tuple(p) for p in parts] == [
            ("to", SELLER, None, None),
            ("to", "bob@contoso.com", "Bob@Contoso.com", "Bob@Contoso.com"),
            ("cc", "carl@contoso.com", None, None),
        ]


def test_incremental_round_applies_adds_partial_updates_moves_and_deletes(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    run(engine, fg)
    fg.put("mail:inbox-id", message("new1", "inbox-id", "zoe@tailspin.com", [SELLER], "2026-03-09T08:00:00Z"))
    fg.mark_read("mail:inbox-id", "in3")  # arrives as {"id", "isRead"} only
    fg.remove("mail:inbox-id", "in4")
    moved = {**fg.state["mail:inbox-id"]["in5"], "parentFolderId": "cust-id"}
    fg.remove("mail:inbox-id", "in5")
    fg.put("mail:cust-id", moved)
    fg.remove("calendar", "ev1")
    before = len(fg.requests)
    report = run(engine, fg)
    assert report.status == "ok"
    assert stored(engine) == truth(fg)
    assert stored(engine)["in3"] == ("inbox-id", True, "subject in3")  # merged, not replaced
    with engine.connect() as conn:
        in3 = conn.execute(select(Message.id).where(Message.graph_id == "in3")).scalar_one()
        parts = conn.execute(select(func.count()).where(MessageParticipant.message_id == in3)).scalar_one()
        in3_from = conn.execute(select(Message.from_address, Message.from_name).where(Message.id == in3)).one()
    assert parts == 1 and in3_from.from_address and in3_from.from_name  # the partial update kept from/sender/to
    assert count(engine, Event) == 0 and count(engine, EventAttendee) == 0
    # Incremental: the inbox round started from the stored delta link, not from scratch.
    inbox = [r for r in fg.requests[before:] if "inbox-id/messages/delta" in str(r.url)]
    assert all("$deltatoken" in str(r.url) or "$skiptoken" in str(r.url) for r in inbox)


def test_expired_token_triggers_full_resync_without_duplicates(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    run(engine, fg)
    # The item disappears from the server with no change recorded, and the token expires.
    fg.state["mail:inbox-id"].pop("in7")
    fg.expire_tokens("mail:inbox-id")
    report = run(engine, fg)
    assert report.status == "ok" and report.resyncs == 1
    assert stored(engine) == truth(fg)
    assert count(engine, Message) == len(truth(fg))
    cur = obj(engine, SyncCursor, SyncCursor.key == "inbox-id", SyncCursor.kind == "messages")
    assert cur.resyncs == 1 and cur.round == 2 and cur.is_delta


def test_throttling_waits_retry_after_and_never_fails_the_mailbox(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    fg.fail("inbox-id/messages/delta", throttled("7"))
    fg.fail("sent-id/messages/delta", unavailable())
    fg.fail("calendarView/delta", throttled("2.5"))
    sleeps: list[float] = []
    report = run(engine, fg, sleeps)
    assert report.status == "ok" and report.mailboxes == {SELLER: "ok"}
    assert 7.0 in sleeps and 2.5 in sleeps and 0.0 in sleeps
    assert report.throttled == 2
    assert stored(engine) == truth(fg)


def test_crash_between_pages_resumes_exactly(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg, inbox=35)
    # The third inbox page dies with a bug-like error (not retried): the first two pages are committed.
    fg.fail("inbox-id/messages/delta()?$skiptoken=0.", RuntimeError("simulated crash"), after=1)
    report = run(engine, fg)
    assert report.mailboxes == {SELLER: "error"}
    cur = obj(engine, SyncCursor, SyncCursor.key == "inbox-id", SyncCursor.kind == "messages")
    mb = obj(engine, Mailbox)
    assert not cur.is_delta and "$skiptoken=0." in (cur.link or "")
    assert "simulated crash" in (mb.last_error or "") and mb.error_count == 1
    partial = {k for k, v in stored(engine).items() if v[0] == "inbox-id"}
    assert 0 < len(partial) < 35
    before = len(fg.requests)
    report = run(engine, fg)
    assert report.mailboxes == {SELLER: "ok"}
    resumed = [r for r in fg.requests[before:] if "inbox-id/messages/delta" in str(r.url)]
    assert (
        "$skiptoken=0." in str(resumed[0].url) and resumed[0].url == fg.requests[before - 1].url
    )  # continued from the saved page, not from scratch
    assert stored(engine) == truth(fg)
    assert count(engine, Message) == len(truth(fg))
    mb = obj(engine, Mailbox)
    assert mb.status == "ok" and mb.error_count == 0 and mb.last_success_at is not None


def duplicate_participants(engine: Engine) -> list[Any]:
    mp = MessageParticipant
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(mp.message_id, mp.role, mp.address)
                .group_by(mp.message_id, mp.role, mp.address)
                .having(func.count() > 1)
            ).all()
        )


def inbox_pages_stored_then(monkeypatch: pytest.MonkeyPatch, pages: int, then: Any) -> list[str]:
    """Let `pages` inbox pages commit, then call then() (raise, or ask to stop); returns the links stored."""
    real = mailbox_sync.apply_page
    links: list[str] = []

    def apply_page(engine: Engine, kind: Any, pk: int, container: Any, items: Any, advance: Any) -> Any:
        if container == "inbox-id" and len(links) == pages:
            then()
        result = real(engine, kind, pk, container, items, advance)
        if container == "inbox-id":
            links.append(advance.link)
        return result

    monkeypatch.setattr(mailbox_sync, "apply_page", apply_page)
    return links


def test_crash_writing_a_page_while_the_next_is_fetched_resumes_exactly(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fg = FakeGraph()
    seed(fg, inbox=35)

    def crash() -> None:
        raise RuntimeError("disk gone")

    links = inbox_pages_stored_then(monkeypatch, 2, crash)
    report = run(engine, fg)
    assert report.mailboxes == {SELLER: "error"}
    inbox = [str(r.url) for r in fg.requests if "inbox-id/messages/delta" in str(r.url)]
    assert len(inbox) == 4  # pages 1-3, and page 4 fetched ahead while page 3 was being written
    cur = obj(engine, SyncCursor, SyncCursor.key == "inbox-id", SyncCursor.kind == "messages")
    assert cur.link == links[-1] == inbox[2]  # the link of page 3, committed with page 2
    assert len({k for k, v in stored(engine).items() if v[0] == "inbox-id"}) == 20
    monkeypatch.undo()
    before = len(fg.requests)
    report = run(engine, fg)
    assert report.mailboxes == {SELLER: "ok"}
    resumed = [str(r.url) for r in fg.requests[before:] if "inbox-id/messages/delta" in str(r.url)]
    assert resumed[0] == inbox[2]
    assert stored(engine) == truth(fg)
    assert count(engine, Message) == len(truth(fg)) and duplicate_participants(engine) == []


def test_stop_drops_the_page_fetched_ahead_and_resumes_from_the_cursor(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fg = FakeGraph()
    seed(fg, inbox=35)
    stop = [False]
    links = inbox_pages_stored_then(monkeypatch, 2, lambda: stop.__setitem__(0, True))
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="graph.test").mock(side_effect=fg)
        report = asyncio.run(sync_tenant(engine, tenant_config(), tokens=StubTokens(), should_stop=lambda: stop[0]))
    assert report.mailboxes == {SELLER: "pending"}
    # The stop came while page 3 was being written: page 3 is stored in full, page 4 (fetched ahead) is not.
    assert len([r for r in fg.requests if "inbox-id/messages/delta" in str(r.url)]) == 4
    cur = obj(engine, SyncCursor, SyncCursor.key == "inbox-id", SyncCursor.kind == "messages")
    assert cur.link == links[-1] and len(links) == 3
    assert len({k for k, v in stored(engine).items() if v[0] == "inbox-id"}) == 30
    monkeypatch.undo()
    before = len(fg.requests)
    assert run(engine, fg).mailboxes == {SELLER: "ok"}
    resumed = [str(r.url) for r in fg.requests[before:] if "inbox-id/messages/delta" in str(r.url)]
    assert resumed[0] == cur.link
    assert stored(engine) == truth(fg)
    assert count(engine, Message) == len(truth(fg)) and duplicate_participants(engine) == []


def test_bulk_written_times_compare_like_sqlalchemy_written_ones(engine: Engine) -> None:
    # The bulk insert bypasses SQLAlchemy's DateTime; on SQLite the text must still match its format exactly,
    # or equality and range filters (the KPI window, retention) would silently miss rows.
    fg = FakeGraph()
    seed(fg, inbox=3)
    run(engine, fg)
    sent = datetime(2026, 3, 1, 9, 1, tzinfo=UTC)
    with engine.connect() as conn:
        assert conn.execute(select(Message.graph_id).where(Message.sent_at == sent)).scalar_one() == "in1"
        later = conn.execute(
            select(Message.graph_id).where(Message.sent_at > sent, Message.folder_graph_id == "inbox-id")
        )
        assert set(later.scalars()) == {"in2"}


def test_a_page_applied_twice_changes_nothing(engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg, inbox=12)
    run(engine, fg)
    items = list(fg.state["mail:inbox-id"].values())
    with Session(engine) as s:
        mb = s.exec(sqlmodel_select(Mailbox)).one()
    cur = obj(engine, SyncCursor, SyncCursor.key == "inbox-id", SyncCursor.kind == "messages")
    advance = CursorAdvance(cur.id or 0, cur.link or "", cur.is_delta, cur.round, False)
    rows, parts = stored(engine), count(engine, MessageParticipant)
    res = apply_page(engine, MESSAGES, mb.id or 0, "inbox-id", items, advance)  # a resumed round replays a page
    assert (res.added, res.updated) == (0, 12)
    assert stored(engine) == rows and count(engine, MessageParticipant) == parts
    assert duplicate_participants(engine) == []


def test_mailbox_without_exchange_is_marked_and_skipped(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    fg.no_mailbox.add("u1")
    report = run(sqlite_engine, fg)
    assert report.mailboxes == {SELLER: "no_mailbox"}
    mb = obj(sqlite_engine, Mailbox)
    assert mb.status == "no_mailbox" and "Exchange" in (mb.status_detail or "")


def test_missing_permission_names_the_grant(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    fg.fail(
        "inbox-id/messages/delta",
        httpx.Response(403, json={"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}}),
    )
    report = run(sqlite_engine, fg)
    assert report.mailboxes == {SELLER: "error"}
    mb = obj(sqlite_engine, Mailbox)
    assert "Mail.ReadBasic.All" in (mb.last_error or "") and mb.status == "error"


def test_bad_items_are_stored_as_far_as_valid_and_never_stop_the_page(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    many = [f"r{i}@fabrikam.com" for i in range(3000)]
    fg.put("mail:inbox-id", message("big", "inbox-id", "ann@fabrikam.com", many, "2026-03-01T09:00:00Z"))
    fg.put("mail:inbox-id", message("bad-date", "inbox-id", "ann@fabrikam.com", [SELLER], "yesterday-ish"))
    fg.put(
        "mail:inbox-id",
        message("odd", "inbox-id", "not an address", [SELLER, "", "  BOB@Contoso.COM "], "2026-03-01T09:00:00Z"),
    )
    fg.put(
        "mail:inbox-id",
        message(
            "uni", "inbox-id", "jürgen@bücher.example", [SELLER], "2026-03-01T09:00:00Z", subject="Angebot für Q3 ✓"
        ),
    )
    fg.put("mail:inbox-id", {"id": "bare"})
    fg.put("mail:inbox-id", {"subject": "no id"})
    report = run(sqlite_engine, fg)
    assert report.mailboxes == {SELLER: "ok"}
    got = stored(sqlite_engine)
    assert set(got) == {"big", "bad-date", "odd", "uni", "bare"}
    with sqlite_engine.connect() as conn:
        big = conn.execute(select(Message.id).where(Message.graph_id == "big")).scalar_one()
        n_big = conn.execute(select(func.count()).where(MessageParticipant.message_id == big)).scalar_one()
        bad = conn.execute(select(Message.sent_at, Message.subject).where(Message.graph_id == "bad-date")).one()
        odd = conn.execute(select(Message.id).where(Message.graph_id == "odd")).scalar_one()
        odd_parts = conn.execute(
            select(MessageParticipant.role, MessageParticipant.address).where(MessageParticipant.message_id == odd)
        ).all()
        uni = conn.execute(
            select(Message.from_address, Message.from_raw_address).where(Message.graph_id == "uni")
        ).one()
    assert n_big == 3000
    assert bad.sent_at is None and bad.subject == "subject bad-date"
    assert sorted(odd_parts) == [("to", "bob@contoso.com"), ("to", SELLER)]
    assert tuple(uni) == ("jürgen@xn--bcher-kva.example", "jürgen@bücher.example")


@pytest.mark.parametrize("folders", [["inbox"], ["Inbox/Customers", "sentitems"]])
def test_configured_folder_set(sqlite_engine: Engine, folders: list[str]) -> None:
    fg = FakeGraph()
    seed(fg)
    run(sqlite_engine, fg, sync={"folders": folders, "page_size": 10})
    got = {v[0] for v in stored(sqlite_engine).values()}
    expected = {"inbox-id", "cust-id"} if folders == ["inbox"] else {"cust-id", "sent-id"}
    assert got == expected


def test_status_shows_counts_cursor_age_and_errors(sqlite_engine: Engine) -> None:
    from relinsights.status import mailbox_statuses

    fg = FakeGraph()
    seed(fg)
    run(sqlite_engine, fg)
    [st] = mailbox_statuses(sqlite_engine)
    assert (st.tenant, st.mailbox, st.status, st.messages, st.events) == ("contoso", SELLER, "ok", 33, 1)
    assert st.cursor_age_s is not None and 0 <= st.cursor_age_s < 60 and st.last_success and st.error_count == 0
    fg.fail("sent-id/messages/delta", httpx.Response(500, json={"error": {"code": "InternalServerError", "message": "boom"}}))
    fg.fail("sent-id/messages/delta", httpx.Response(400, json={"error": {"code": "BadRequest", "message": "odd"}}), after=0)
    report = run(sqlite_engine, fg)
    [st] = mailbox_statuses(sqlite_engine)
    assert report.mailboxes == {SELLER: "error"} and st.status == "error" and st.error_count == 1
    assert "400 BadRequest: odd" in (st.last_error or "") and st.messages == 33


def test_opted_out_user_is_not_synced_and_their_data_is_removed(sqlite_engine: Engine) -> None:
    fg = FakeGraph()
    seed(fg)
    run(sqlite_engine, fg)
    assert count(sqlite_engine, Message) == 33
    report = run(sqlite_engine, fg, scope={"exclude_users": ["alias@contoso.com"]})  # matched through an alias
    assert report.mailboxes == {}
    assert count(sqlite_engine, Message) == 0 and count(sqlite_engine, Event) == 0
    mb = obj(sqlite_engine, Mailbox)
    assert (mb.in_scope, mb.status, mb.status_detail) == (False, "out_of_scope", "opted out")


def test_initial_rounds_ask_only_for_the_lookback_window_and_retention_prunes(sqlite_engine: Engine) -> None:
    from datetime import UTC, datetime

    from relinsights.retention import prune

    fg = FakeGraph()
    seed(fg)
    run(sqlite_engine, fg)
    first = next(r for r in fg.requests if "inbox-id/messages/delta" in str(r.url))
    assert first.url.params["$filter"].startswith("receivedDateTime ge ")
    # As of 2027-03-10 with a 365-day lookback, everything from early March 2026 is out of the window.
    pruned = prune(sqlite_engine, tenant_config(), datetime(2027, 3, 10, tzinfo=UTC))
    assert (pruned.messages, pruned.events) == (33, 1)
    assert count(sqlite_engine, Message) == 0 and count(sqlite_engine, MessageParticipant) == 0
    assert prune(sqlite_engine, tenant_config(), datetime(2026, 3, 2, tzinfo=UTC)).messages == 0
