"""Delta semantics: paging, $select in the token, incremental rounds (partial updates, moves, deletes),
410 after expiry, calendar windows and recurring series, and a replica that must equal the truth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from relinsights.sandbox import SandboxServer

from .conftest import graph_client, pages
from .replica import Replica

IMM = {"Prefer": 'IdType="ImmutableId"'}


def _seller(sb: SandboxServer):  # type: ignore[no-untyped-def]
    return sb.org.generator.sellers[0]


def test_message_delta_pages_select_and_preference_applied(shared_sandbox: SandboxServer) -> None:
    sb, u = shared_sandbox, _seller(shared_sandbox)
    url = f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta"
    with graph_client(sb) as c:
        headers = {"Prefer": 'odata.maxpagesize=7, IdType="ImmutableId"'}
        r = c.get(url, params={"$select": "subject,isRead,from"}, headers=headers)
        assert r.headers["Preference-Applied"] == 'odata.maxpagesize=7, IdType="ImmutableId"'
        first = r.json()
        assert len(first["value"]) == 7 and "@odata.nextLink" in first and "$skiptoken=" in first["@odata.nextLink"]
        items, delta_link = pages(c, url, {"$select": "subject,isRead,from"}, headers)
    assert "$deltatoken=" in delta_link
    for m in items:  # $select honoured on every page (carried in the skip token)
        assert set(m) == {"@odata.type", "@odata.etag", "id", "subject", "isRead", "from"}
    inbox = sb.org.folder_id(u.id, "inbox")
    assert {m["id"] for m in items} == {mid for mid, fid in sb.org.message_truth(u.id) if fid == inbox}
    assert len(items) == len({m["id"] for m in items})


def test_default_page_size_is_ten_and_top_caps_the_round(shared_sandbox: SandboxServer) -> None:
    sb, u = shared_sandbox, _seller(shared_sandbox)
    url = f"{sb.graph_url}/users/{u.id}/mailFolders/sentitems/messages/delta"
    with graph_client(sb) as c:
        assert len(c.get(url).json()["value"]) == 10
        items, _ = pages(c, url, {"$top": "3"}, {"Prefer": "odata.maxpagesize=2"})
    assert len(items) == 3


def test_incremental_round_partial_update_move_delete_and_replay(sandbox: SandboxServer) -> None:
    sb, org, u = sandbox, sandbox.org, _seller(sandbox)
    inbox = org.folder_id(u.id, "inbox")
    url = f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta"
    with graph_client(sb, **IMM) as c:
        _, link = pages(c, url, {"$select": "subject,isRead,parentFolderId"})
        msgs = org.messages_in(u.id, "inbox")
        unread = next(m for m in msgs if not m.is_read)
        moved, deleted = [m for m in msgs if m is not unread][:2]
        org.mark_read(u.id, unread.id)
        org.move_message(u.id, moved.id, "Inbox/Customers/Key accounts")
        org.delete_message(u.id, deleted.id)
        new = org.deliver_message("someone@fabrikam.example", [u.mail], subject="Fresh", names={})
        items, link2 = pages(c, link)
        by_id = {m["id"]: m for m in items}
        assert by_id[unread.id] == {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": by_id[unread.id]["@odata.etag"],
            "id": unread.id,
            "isRead": True,
        }  # partial: only the changed field
        assert by_id[moved.id]["@removed"] == {"reason": "deleted"}
        assert by_id[deleted.id]["@removed"] == {"reason": "deleted"}
        fresh = next(m for m in items if m.get("subject") == "Fresh")
        assert fresh["parentFolderId"] == inbox and set(fresh) >= {"subject", "isRead", "parentFolderId"}
        assert org.copies_of(new.internet_message_id)[0].id == fresh["id"]
        # replaying the same link is allowed and gives the same changes
        again, _ = pages(c, link)
        assert {m["id"] for m in again} == set(by_id)
        # the moved message arrives, with the same immutable id, in its new folder
        target = org.folder_id(u.id, "Inbox/Customers/Key accounts")
        items, _ = pages(c, f"{sb.graph_url}/users/{u.id}/mailFolders/{target}/messages/delta")
        assert [m["id"] for m in items] == [moved.id]
        # nothing changed since: an empty round
        items, _ = pages(c, link2)
        assert items == []


def test_default_ids_change_on_move_immutable_ids_do_not(sandbox: SandboxServer) -> None:
    sb, org, u = sandbox, sandbox.org, _seller(sandbox)
    m = org.messages_in(u.id, "inbox")[0]
    with graph_client(sb) as c:

        def ids_in(folder: str, headers: dict[str, str]) -> set[str]:
            return {
                x["id"]
                for x in pages(
                    c,
                    f"{sb.graph_url}/users/{u.id}/mailFolders/{folder}/messages/delta",
                    {"$select": "subject"},
                    headers,
                )[0]
            }

        before = ids_in("inbox", {})
        assert m.id not in before and m.id in ids_in("inbox", IMM)
        org.move_message(u.id, m.id, "archive")
        after = ids_in("archive", {})
        assert not (before & after)
        assert m.id in ids_in("archive", IMM)


def test_expired_delta_tokens_answer_410_sync_state_not_found(sandbox: SandboxServer) -> None:
    sb, org, u = sandbox, sandbox.org, _seller(sandbox)
    url = f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta"
    with graph_client(sb, **IMM) as c:
        r = c.get(url, params={"$select": "subject"}, headers={"Prefer": "odata.maxpagesize=3"})
        next_link = r.json()["@odata.nextLink"]
        _, delta_link = pages(c, url, {"$select": "subject"})
        org.expire_delta_tokens(u.id)
        for link in (next_link, delta_link):
            r = c.get(link)
            assert r.status_code == 410
            assert r.json()["error"]["code"] == "SyncStateNotFound"
            assert r.headers["location"].endswith("$deltatoken=")
        # the Location is a fresh initial round
        items, link = pages(c, r.headers["location"])
        assert items and all(set(m) == {"@odata.type", "@odata.etag", "id", "subject"} for m in items)
        # age-based expiry, by the sandbox clock
        org.delta_token_max_age = timedelta(days=2)
        org.advance(timedelta(days=1))
        assert c.get(link).status_code == 200
        org.advance(timedelta(days=3))
        assert c.get(link).status_code == 410


def test_calendar_window_occurrences_and_removals(sandbox: SandboxServer) -> None:
    sb, org = sandbox, sandbox.org
    mgr = org.generator.managers[0]
    seller = next(s for s in org.generator.sellers if s.manager_id == mgr.id)
    now = org.now()
    start, end = now - timedelta(days=60), now + timedelta(days=30)
    params = {
        "startDateTime": start.isoformat().replace("+00:00", "Z"),
        "endDateTime": end.isoformat().replace("+00:00", "Z"),
    }
    hdr = {"Prefer": 'outlook.timezone="UTC", odata.maxpagesize=9'}
    with graph_client(sb) as c:
        url = f"{sb.graph_url}/users/{mgr.id}/calendarView/delta"
        r = c.get(url, params=params, headers=hdr)
        assert r.headers["Preference-Applied"] == 'odata.maxpagesize=9, outlook.timezone="UTC"'
        items, link = pages(c, url, params, hdr)
        assert {e["id"] for e in items} == set(org.event_truth(mgr.id, start, end))
        types = {e["type"] for e in items}
        assert "seriesMaster" not in types and {"occurrence", "exception"} <= types
        occ = [e for e in items if e["type"] == "occurrence"]
        assert all(e["seriesMasterId"] and e["iCalUId"] for e in occ)
        assert len({e["iCalUId"] for e in occ}) == len(occ)  # each occurrence its own iCalUId
        assert occ[0]["start"]["timeZone"] == "UTC" and occ[0]["start"]["dateTime"].endswith(".0000000")
        # cancel one occurrence (gone from the organizer's calendar, marked cancelled for attendees),
        # move another out of the window
        future = sorted(
            (e for e in occ if e["start"]["dateTime"] > now.strftime("%Y-%m-%dT%H")),
            key=lambda e: e["start"]["dateTime"],
        )
        ev_c, ev_m = (org.mailboxes[mgr.id].events[e["id"]] for e in future[:2])
        uid = ev_c.meeting.uid
        _, seller_link = pages(c, f"{sb.graph_url}/users/{seller.id}/calendarView/delta", params, hdr)
        org.cancel_event(uid, ev_c.original_start)
        org.reschedule_event(uid, end + timedelta(days=3), end + timedelta(days=3, hours=1), ev_m.original_start)
        items, _ = pages(c, link, headers=hdr)
        assert {e["id"]: e.get("@removed") for e in items} == {
            ev_c.id: {"reason": "deleted"},
            ev_m.id: {"reason": "deleted"},
        }
        seller_items, _ = pages(c, seller_link, headers=hdr)
        cancelled = [e for e in seller_items if "@removed" not in e]
        assert len(cancelled) == 1 and cancelled[0]["isCancelled"] is True
        assert cancelled[0]["subject"].startswith("Canceled: ")
        # window limits
        r = c.get(url, params={"startDateTime": "2020-01-01T00:00:00Z", "endDateTime": "2025-12-31T00:00:00Z"})
        assert r.status_code == 400
        assert c.get(url).status_code == 400  # no window


def test_folder_delta_top_level_only_and_children(sandbox: SandboxServer) -> None:
    sb, org, u = sandbox, sandbox.org, _seller(sandbox)
    with graph_client(sb) as c:
        top, link = pages(c, f"{sb.graph_url}/users/{u.id}/mailFolders/delta")
        names = {f["displayName"] for f in top}
        assert {"Inbox", "Sent Items", "Deleted Items", "Archive", "Sync Issues"} <= names
        assert "Customers" not in names and "Conflicts" not in names  # children are not in the top-level delta
        inbox = org.folder_id(u.id, "inbox")
        kids, kid_link = pages(c, f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/childFolders/delta")
        assert {f["parentFolderId"] for f in kids} <= {inbox}
        fid = org.create_folder(u.id, "inbox", "Partners")
        items, kid_link2 = pages(c, kid_link)
        assert [f["displayName"] for f in items] == ["Partners"]
        inbox_change, _ = pages(c, link)  # Inbox's childFolderCount changed
        assert [f["id"] for f in inbox_change] == [inbox]
        org.delete_folder(u.id, fid)
        assert pages(c, kid_link)[0] == []  # created and deleted since that link: nothing to report
        items, _ = pages(c, kid_link2)
        assert items[-1] == {"@odata.type": "#microsoft.graph.mailFolder", "id": fid, "@removed": {"reason": "deleted"}}
        r = c.get(f"{sb.graph_url}/users/{u.id}/mailFolders/inbox", params={"$select": "displayName,totalItemCount"})
        assert r.json()["id"] == inbox and r.json()["displayName"] == "Inbox"


def test_replica_equals_truth_across_rounds_with_faults(sandbox: SandboxServer) -> None:
    """Initial sync, then rounds after the clock moves (new mail, reads, moves, deletes, cancellations),
    with empty pages injected: the replica equals the sandbox's truth every time."""
    sb, org = sandbox, sandbox.org
    sb.faults.set("empty=0.3", seed=5)
    now = org.now()
    window = (now - timedelta(days=30), now + timedelta(days=60))
    users = [org.generator.sellers[1], org.generator.managers[0]]
    replicas = [Replica(sb, u.id, window) for u in users]
    for rnd in range(3):
        for rep in replicas:
            rep.sync()
            assert rep.message_pairs() == org.message_truth(rep.user), f"round {rnd}"
            truth = org.event_truth(rep.user, *window)
            assert set(rep.events) == set(truth), f"round {rnd}"
            for eid, e in rep.events.items():
                assert e["isCancelled"] == truth[eid]["isCancelled"] and e["subject"] == truth[eid]["subject"]
        activity = org.advance(timedelta(hours=36))
        assert activity.get("messages", 0) + activity.get("internal", 0) > 0
    assert sb.faults.injected.get("empty_page", 0) > 0
    # read flags merged from partial updates match the truth too
    rep = replicas[0]
    for fid, box in rep.messages.items():
        for mid, m in box.items():
            assert m["isRead"] == org.mailboxes[rep.user].messages[mid].is_read, (fid, mid)


def test_mailbox_concurrency_limit_is_four(sandbox: SandboxServer) -> None:
    sb, u = sandbox, _seller(sandbox)
    other = sb.org.generator.sellers[2]
    sb.faults.set("slow=1:0.6")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            verify=sb.ssl_context(), headers={"Authorization": f"Bearer {sb.access_token()}"}
        ) as c:
            reqs = [c.get(f"{sb.graph_url}/users/{u.id}/mailFolders/inbox") for _ in range(6)]
            reqs.append(c.get(f"{sb.graph_url}/users/{other.id}/mailFolders/inbox"))
            return await asyncio.gather(*reqs)

    rs = asyncio.run(burst())
    sb.faults.set("")
    codes = [r.status_code for r in rs[:6]]
    assert codes.count(200) == 4 and codes.count(429) == 2, codes
    throttled = next(r for r in rs if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    assert int(throttled.headers["Retry-After"]) >= 1
    assert rs[6].status_code == 200  # another mailbox is not affected


def test_mailbox_errors(shared_sandbox: SandboxServer) -> None:
    sb, org = shared_sandbox, shared_sandbox.org
    nobox = next(u for u in org.users.values() if not u.has_mailbox)
    u = _seller(sb)
    with graph_client(sb) as c:
        r = c.get(f"{sb.graph_url}/users/{nobox.id}/mailFolders/inbox/messages/delta")
        assert r.status_code == 404 and r.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"
        r = c.get(f"{sb.graph_url}/users/{u.id}/mailFolders/AAMkNOPE/messages/delta")
        assert r.status_code == 404 and r.json()["error"]["code"] == "ErrorItemNotFound"
        r = c.get(f"{sb.graph_url}/users/nobody@contoso.com/mailFolders/inbox")
        assert r.status_code == 404
        r = c.get(f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta", params={"$select": "nope"})
        assert r.status_code == 400
        r = c.get(f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta", params={"$filter": "subject eq 'x'"})
        assert r.status_code == 400
        when = (org.now() - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items, _ = pages(
            c,
            f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta",
            {"$filter": f"receivedDateTime ge {when}", "$select": "receivedDateTime"},
        )
        assert items and all(m["receivedDateTime"] >= when for m in items)
        assert (
            c.get(
                f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta", params={"$skiptoken": "forged"}
            ).status_code
            == 400
        )


def test_clock(sandbox: SandboxServer) -> None:
    org = sandbox.org
    t0 = org.now()
    assert t0.tzinfo is not None and t0 == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    org.advance(timedelta(hours=5))
    assert org.now() == t0 + timedelta(hours=5)
