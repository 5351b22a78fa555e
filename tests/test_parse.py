"""Parsing of real-shaped Graph payloads: Microsoft's documented examples, and the oddities real mail has."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conftest import SHARED
from relinsights.graph.directory import user_from_json
from relinsights.graph.mailbox_sync import select_folders
from relinsights.graph.parse import canonical_address, parse_event, parse_graph_datetime, parse_message
from relinsights.graph.store import _final_states

EXAMPLES = SHARED / "data" / "microsoft-examples"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"Microsoft examples not found at {EXAMPLES}")


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@needs_examples
def test_documented_message_delta_pages_parse() -> None:
    for n in range(1, 8):
        page = example(f"graph-delta-query-messages-{n}.json")
        assert "@odata.nextLink" in page or "@odata.deltaLink" in page
        live, removed, invalid = _final_states(page["value"])
        assert not invalid
        for item in live:
            p = parse_message(item)
            assert p.graph_id == item["id"]
            if "sender" in item:
                assert p.row["sender_address"] == item["sender"]["emailAddress"]["address"].lower()
    # Round 2 of example 1: a removal stub and a partial update whose isRead is the string "true".
    live, removed, _ = _final_states(example("graph-delta-query-messages-4.json")["value"])
    assert removed == ["AAMkADk0MGFkODE3LWE4MmYtNDRhOS0Dh_6qB-pB2Sa2pUum19a6YAAKnLuxoAAA="]
    p = parse_message(live[0])
    assert p.row["is_read"] is True and p.row["subject"] == "Holiday hours update"
    # Only the sender columns change with this update; no participant row is replaced.
    assert p.roles == frozenset() and p.participants is None and p.row["sender_address"]
    assert "sent_at" not in p.row  # absent keys are not touched


@needs_examples
def test_documented_event_delta_pages_parse() -> None:
    for n in range(1, 5):
        page = example(f"graph-delta-query-events-{n}.json")
        live, _, _ = _final_states(page["value"])
        for item in live:
            p = parse_event(item)
            assert not p.problems, p.problems
            assert p.row["start"].tzinfo is UTC and p.row["end"] >= p.row["start"]
    first = parse_event(example("graph-delta-query-events-1.json")["value"][0])
    assert first.row["start"] == datetime(2016, 12, 9, 20, 30, tzinfo=UTC)
    assert first.participants == [
        ("organizer", "samanthab@contoso.onmicrosoft.com", "samanthab@contoso.onmicrosoft.com", "Samantha Booth",
         "organizer")
    ]


@needs_examples
def test_documented_user_list_parses() -> None:
    users = [user_from_json(u) for u in example("graph-user-list-1.json")["value"]]
    assert users and all(u.user_id for u in users)


def test_addresses_are_canonical_and_odd_ones_rejected() -> None:
    assert canonical_address("  Ann@Fabrikam.COM ") == "ann@fabrikam.com"
    assert canonical_address("<bob@contoso.com>") == "bob@contoso.com"
    assert canonical_address("jürgen@Bücher.example") == "jürgen@xn--bcher-kva.example"
    for bad in ("", "no-at-sign", "@contoso.com", "ann@", "two words@x.com", None, 42,
                "/O=EXCHANGELABS/OU=EXCHANGE ADMINISTRATIVE GROUP/CN=RECIPIENTS/CN=ANN"):
        assert canonical_address(bad) is None


def test_partial_message_updates_speak_only_for_the_keys_they_carry() -> None:
    # A delta update carries only what changed: a null is a value, a missing key keeps what is stored.
    p = parse_message({"id": "m1", "subject": None, "isRead": "true", "toRecipients": [
        {"emailAddress": {"address": "Ann@Fabrikam.COM", "name": "Ann"}}, {"emailAddress": {"address": None}}]})
    assert p.row == {"subject": None, "is_read": True}
    assert p.roles == {"to"} and p.participants == [("to", "ann@fabrikam.com", "Ann@Fabrikam.COM", "Ann")]
    # The raw form is kept only when it differs from the canonical one, the name only when not empty.
    same = parse_message({"id": "m1", "toRecipients": [{"emailAddress": {"address": "bob@contoso.com", "name": ""}}]})
    assert same.participants == [("to", "bob@contoso.com", "", "")]  # stored as NULL
    assert p.problems == ["toRecipients: no usable address ('None')"]
    assert parse_message({"id": "m2", "isDraft": 1}).row == {"is_draft": False}  # not a boolean: the default
    full = parse_message({"id": "m3", "from": None, "sender": None, "toRecipients": [], "ccRecipients": [],
                          "bccRecipients": [], "sentDateTime": "2026-03-01T09:00:00+02:00"})
    assert full.roles == {"to", "cc", "bcc"} and full.participants == []
    nothing = dict.fromkeys(("from_address", "from_raw_address", "from_name"), None)
    nothing |= dict.fromkeys(("sender_address", "sender_raw_address", "sender_name"), None)
    assert full.row == {**nothing, "sent_at": datetime(2026, 3, 1, 7, tzinfo=UTC)}


def test_graph_datetimes() -> None:
    assert parse_graph_datetime({"dateTime": "2026-03-05T10:00:00.0000000", "timeZone": "UTC"}) == (
        datetime(2026, 3, 5, 10, tzinfo=UTC), None)
    assert parse_graph_datetime({"dateTime": "2026-03-05T10:00:00", "timeZone": "Europe/Paris"})[0] == datetime(
        2026, 3, 5, 9, tzinfo=UTC)
    dt, problem = parse_graph_datetime({"dateTime": "2026-03-05T10:00:00", "timeZone": "Pacific Standard Time"})
    assert dt == datetime(2026, 3, 5, 10, tzinfo=UTC) and "not understood" in (problem or "")
    assert parse_graph_datetime({"dateTime": "garbage"})[0] is None
    assert parse_graph_datetime(None) == (None, "missing dateTimeTimeZone")


def test_event_attendees_roles_and_responses() -> None:
    p = parse_event({
        "id": "e", "organizer": {"emailAddress": {"address": "Bob@Contoso.com"}},
        "attendees": [
            {"type": "required", "status": {"response": "accepted"}, "emailAddress": {"address": "ann@fabrikam.com"}},
            {"type": "optional", "status": {"response": "declined"}, "emailAddress": {"address": "carl@contoso.com"}},
            {"type": "resource", "status": {"response": "accepted"}, "emailAddress": {"address": "room1@contoso.com"}},
            {"type": "required", "status": {"response": "organizer"}, "emailAddress": {"address": "bob@contoso.com"}},
            {"type": "required", "emailAddress": {"address": ""}},
        ],
        "isAllDay": True, "isCancelled": "false",
    })
    assert [(x[0], x[1], x[4]) for x in p.participants or []] == [
        ("organizer", "bob@contoso.com", "organizer"),
        ("required", "ann@fabrikam.com", "accepted"),
        ("optional", "carl@contoso.com", "declined"),
        ("resource", "room1@contoso.com", "accepted"),
    ]
    assert p.row["is_all_day"] is True and p.row["is_cancelled"] is False and len(p.problems) == 1


def test_replays_in_one_page_collapse_to_the_last_state() -> None:
    live, removed, invalid = _final_states([
        {"id": "a", "subject": "1"}, {"id": "a", "@removed": {"reason": "deleted"}}, {"id": "b"},
        {"id": "b", "subject": "2"}, "junk", {"no": "id"},
    ])
    assert [i["id"] for i in live] == ["b"] and live[0]["subject"] == "2" and removed == ["a"]
    assert invalid == [("?", "item is not an object"), ("?", "item without an id")]


def test_folder_selection_excludes_well_known_subtrees() -> None:
    folders = {
        "inbox": ("root", "Inbox", "inbox"), "cust": ("inbox", "Customers", None), "acme": ("cust", "Acme", None),
        "sent": ("root", "Sent Items", "sentitems"), "del": ("root", "Deleted Items", "deleteditems"),
        "olddel": ("del", "Old project", None), "junk": ("root", "Junk Email", "junkemail"),
        "proj": ("root", "Projects", None),
    }
    excl = ["deleteditems", "junkemail", "drafts", "outbox", "syncissues"]
    assert select_folders(folders, "all", excl) == {"inbox", "cust", "acme", "sent", "proj"}
    assert select_folders(folders, ["sentitems", "Inbox/Customers"], excl) == {"sent", "cust", "acme"}
    assert select_folders(folders, ["projects"], excl) == {"proj"}


def test_a_complete_message_row_has_every_column_in_the_store_order() -> None:
    from relinsights.graph.parse import MESSAGE_COLUMNS
    from relinsights.graph.store import MESSAGES

    item = {"id": "m", "internetMessageId": "<m@x>", "conversationId": "c", "conversationIndex": None,
            "subject": "", "from": {"emailAddress": {"address": "Ann@Fabrikam.com", "name": "Ann"}},
            "sender": None, "toRecipients": [{"emailAddress": {"address": "bob@contoso.com"}}], "ccRecipients": [],
            "bccRecipients": [], "sentDateTime": "2026-03-01T09:00:00Z", "receivedDateTime": None,
            "isDraft": False, "isRead": "true"}
    fast = parse_message(item)
    assert fast.complete and tuple(fast.row) == MESSAGE_COLUMNS == tuple(MESSAGES.defaults)
    slow = parse_message({**item, "internetMessageHeaders": []})  # the general path gives the same row
    assert not slow.complete and {**slow.row, "in_reply_to": None} == fast.row and slow.participants == fast.participants
    assert (slow.roles, slow.problems) == (fast.roles, fast.problems) == ({"to", "cc", "bcc"}, [])
    assert fast.row["from_raw_address"] == "Ann@Fabrikam.com" and fast.row["is_read"] is True
    assert fast.participants == [("to", "bob@contoso.com", "", "")]
