"""The real-mail importer on small archives made here: every layout (maildir folder, .tar.gz, mbox, .eml)
and every quirk of the Enron corpus (copies across folders, Bcc = Cc, IMCEA senders, Lotus views,
bad dates, unparseable files), checked against the org it builds."""

from __future__ import annotations

import base64
import mailbox
import tarfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relinsights.sandbox.envelope import clean_display_name, decode_imcea, parse_addresses, parse_envelope
from relinsights.sandbox.importer import (
    ImportResult,
    classify_folder,
    import_archive,
    normalize_subject,
    plausible_range,
)
from relinsights.sandbox.model import Org

TODAY = datetime(2026, 1, 1, tzinfo=UTC)


def rfc822(
    mid: str,
    date: str,
    frm: str,
    to: Iterable[str] = (),
    cc: Iterable[str] = (),
    *,
    subject: str = "Hello",
    body: str = "Hello.\n",
    x_from: str = "",
    x_folder: str = "",
    bcc_from_cc: bool = True,
) -> bytes:
    """A message as CMU's conversion wrote them (Bcc repeats Cc)."""
    lines = [f"Message-ID: <{mid}.JavaMail.evans@thyme>", f"Date: {date}", f"From: {frm}"]
    if to:
        lines.append("To: " + ", ".join(to))
    lines.append(f"Subject: {subject}")
    if cc:
        lines.append("Cc: " + ", ".join(cc))
    lines += ["Mime-Version: 1.0", "Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
    if cc and bcc_from_cc:
        lines.append("Bcc: " + ", ".join(cc))
    lines += [f"X-From: {x_from or frm}", f"X-Folder: {x_folder}", "X-Origin: TEST", "X-FileName: test.nsf"]
    return ("\n".join(lines) + "\n\n" + body).encode()


D1 = "Mon, 4 Dec 2000 09:00:00 -0800 (PST)"
D2 = "Mon, 4 Dec 2000 11:30:00 -0800 (PST)"
D3 = "Tue, 5 Dec 2000 08:15:00 -0800 (PST)"
D4 = "Wed, 6 Dec 2000 16:45:00 -0800 (PST)"
D5 = "Thu, 7 Dec 2000 10:00:00 -0800 (PST)"
LOTUS_NULL = "Mon, 31 Dec 1979 16:00:00 -0800 (PST)"

ANNOUNCE = rfc822("a1", D1, "alice.smith@example.com", ["bob.jones@example.com"], ["carol@acme.com"], subject="Plan")
DEAL = rfc822("d1", D2, "carol@acme.com", ["alice.smith@example.com"], subject="Deal", x_from="Carol Reyes")
REPLY = rfc822("d2", D3, "alice.smith@example.com", ["carol@acme.com"], subject="RE: Deal")
FORWARD = rfc822("d3", D4, "carol@acme.com", ["alice.smith@example.com"], subject="Fwd: re:  DEAL")
IMCEA = rfc822(
    "i1",
    D5,
    "40example@example.com",
    ["alice.smith@example.com"],
    subject="Lunch",
    x_from='"Holly Korman" <holly@layfam.com>@EXAMPLE <IMCEANOTES-+22Holly+20Korman+22+20+3Cholly+40layfam+2Ecom+3E+40EXAMPLE@EXAMPLE.com>',
)


def write_maildir(root: Path) -> Path:
    """Two mailboxes in CMU's layout: alice-s (Lotus era: sent, views, a user folder) and bob-j (an inbox)."""
    files = {
        "alice-s/sent/1.": rfc822(
            "a1-sent", D1, "alice.smith@example.com", ["bob.jones@example.com"], ["carol@acme.com"], subject="Plan"
        ),
        "alice-s/all_documents/1.": rfc822(
            "a1-view", D1, "alice.smith@example.com", ["bob.jones@example.com"], ["carol@acme.com"], subject="Plan"
        ),
        "alice-s/_sent_mail/2.": REPLY,
        "alice-s/sent/3.": rfc822(
            "s3", D5, "alice.smith@example.com", ["alice@ect.example.com", "joe@hotmail.com"], subject="Weekend"
        ),
        "alice-s/notes_inbox/1.": DEAL,
        "alice-s/projects/big_deal/1.": rfc822(
            "d1-filed",
            D2,
            "carol@acme.com",
            ["alice.smith@example.com"],
            subject="Deal",
            x_from="Carol Reyes",
            x_folder="\\Alice_Smith_Dec2000\\Notes Folders\\Projects\\Big Deal",
        ),
        "alice-s/discussion_threads/7.": FORWARD,  # known only from a Lotus view
        "alice-s/inbox/2.": IMCEA,
        "alice-s/inbox/3.": rfc822("n1", D3, "noreply@acme.com", ["alice.smith@example.com"], subject="Your invoice"),
        "alice-s/discussion_threads/8.": rfc822(
            "z1", LOTUS_NULL, "alice.smith@example.com", ["carol@acme.com"], subject="Draft"
        ),
        "alice-s/calendar/1.": rfc822(
            "c1", D2, "alice.smith@example.com", ["bob.jones@example.com"], subject="Staff meeting"
        ),
        "alice-s/inbox/4.": b"\x00\x01 not a mail message \xff",
        "alice-s/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "bob-j/inbox/1.": ANNOUNCE,
        "bob-j/inbox/2.": rfc822(
            "b2", D2, "dave@globex.co.uk", ["bob.jones@example.com", "alice.smith@example.com"], subject="Quote"
        ),
        "bob-j/deleted_items/1.": rfc822(
            "b3", D4, "bob.jones@example.com", ["bob.jones@example.com"], subject="note to self"
        ),
    }
    for rel, data in files.items():
        p = root / "maildir" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root / "maildir"


@pytest.fixture(scope="module")
def maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_maildir(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def imported(maildir: Path) -> ImportResult:
    return import_archive(maildir, ["example.com"], today=TODAY)


def folder_items(org: Org, user: str) -> dict[str, list[str]]:
    """Folder path -> subjects of the items in it."""
    mb = org.mailbox(user)
    out: dict[str, list[str]] = {}
    for fid, items in mb.folder_items.items():
        if items:
            out[org.folder_path(mb, fid)] = sorted(mb.messages[m].content.subject for m in items)
    return out


def test_users_are_the_mailbox_owners(imported: ImportResult) -> None:
    org, report = imported.org, imported.report
    assert sorted(u.mail for u in org.users.values()) == ["alice.smith@example.com", "bob.jones@example.com"]
    alice = report.mailboxes["alice-s"]
    assert alice.owner_rule == "most frequent sender in its sent folders"
    assert report.mailboxes["bob-j"].owner_rule == "most frequent internal recipient"
    # The same person's other address in her mailbox becomes a proxy address.
    assert alice.aliases == []  # alice@ect.example.com is only a recipient once
    assert org.user("alice.smith@example.com").display_name == "Alice Smith"
    # Internal subdomains seen in the archive are verified domains of the tenant.
    assert {"example.com", "ect.example.com", "example.onmicrosoft.com"} <= set(org.verified_domains())
    assert org.default_domain == "example.com"


def test_folders_map_to_exchange_folders(imported: ImportResult) -> None:
    org = imported.org
    assert folder_items(org, "alice.smith@example.com") == {
        # The forward is known only from a Lotus view: filed by direction.
        "Inbox": ["Deal", "Fwd: re:  DEAL", "Lunch", "Your invoice"],
        "Sent Items": ["Plan", "RE: Deal", "Weekend"],  # sent/ and _sent_mail/
        "Projects/Big Deal": ["Deal"],  # named from X-Folder; the email is also in the inbox: two items
    }
    assert folder_items(org, "bob.jones@example.com") == {
        "Inbox": ["Plan", "Quote"],
        "Deleted Items": ["note to self"],
    }


def test_copies_share_one_internet_message_id(imported: ImportResult) -> None:
    org = imported.org
    plan = [m for mb in org.mailboxes.values() for m in mb.messages.values() if m.content.subject == "Plan"]
    assert len(plan) == 2 and len({m.content.internet_message_id for m in plan}) == 1
    # The smallest Message-ID of the three files, whatever order they were read in.
    assert plan[0].content.internet_message_id == "<a1-sent.JavaMail.evans@thyme>"
    assert {m.is_sender_copy for m in plan} == {True, False}
    # One email in two folders of one mailbox: two items (two ids), one internetMessageId.
    deal = org.copies_of("<d1-filed.JavaMail.evans@thyme>")
    assert len({m.id for m in deal}) == 2 and {m.mailbox for m in deal} == {org.user("alice.smith@example.com").id}


def test_bcc_copied_from_cc_is_dropped(imported: ImportResult) -> None:
    content = next(
        m.content for mb in imported.org.mailboxes.values() for m in mb.messages.values() if m.content.subject == "Plan"
    )
    assert content is not None
    assert [a for _, a in content.cc] == ["carol@acme.com"] and content.bcc == []
    assert imported.report.bcc_dropped == 3  # the three files of that email


def test_conversations_follow_the_normalised_subject(imported: ImportResult) -> None:
    contents = {m.content.subject: m.content for mb in imported.org.mailboxes.values() for m in mb.messages.values()}
    deal = {contents[s].conversation_id for s in ("Deal", "RE: Deal", "Fwd: re:  DEAL")}
    assert len(deal) == 1
    assert contents["Plan"].conversation_id not in deal
    assert all(c.in_reply_to is None and c.references == [] for c in contents.values())  # none in the archive
    # Each later message of a thread has a longer conversation index (5 bytes per step).
    sizes = [len(base64.b64decode(contents[s].conversation_index)) for s in ("Deal", "RE: Deal", "Fwd: re:  DEAL")]
    assert sizes == [22, 27, 32]


def test_quirks_are_counted_and_named(imported: ImportResult) -> None:
    r = imported.report
    assert r.files == 15  # the hidden file is not read
    assert r.duplicate_files == 3 and r.lotus_view_files == 3
    assert r.view_only_emails == 1  # the forward, known only from discussion_threads
    assert r.calendar_files == ["alice-s/calendar/1."]
    assert r.bad_dates == [("alice-s/discussion_threads/8.", LOTUS_NULL)] and r.bad_date_files == 1
    assert [src for src, _ in r.unparseable] == ["alice-s/inbox/4.", "alice-s/.DS_Store"]
    assert r.imcea_decoded == 1
    assert r.emails == 9 and r.items == 11 and r.users == 2
    assert r.mailboxes_in_archive == 2 and r.files_filtered_out == 0
    alice = r.mailboxes["alice-s"]
    assert (alice.emails, alice.sent, alice.received, alice.bad_dates) == (7, 3, 4, 1)
    assert (alice.two_way, alice.two_way_external) == (1, 1)  # carol: written to and heard from


def test_imcea_sender_is_the_external_address(imported: ImportResult) -> None:
    lunch = next(
        m.content
        for mb in imported.org.mailboxes.values()
        for m in mb.messages.values()
        if m.content.subject == "Lunch"
    )
    assert lunch is not None and lunch.from_ == ("Holly Korman", "holly@layfam.com")


def test_clock_is_just_after_the_newest_message(imported: ImportResult) -> None:
    # Newest: Thu, 7 Dec 2000 10:00 PST = 18:00 UTC (+ delivery), clock on the next minute.
    assert imported.org.now() == datetime(2000, 12, 7, 18, 1, tzinfo=UTC)


def test_crm_accounts_by_domain_and_contacts_by_address(imported: ImportResult) -> None:
    crm = imported.org.crm
    accounts = {c.domain: c for c in crm.companies.values()}
    # globex.co.uk keeps its public suffix; free-mail hotmail.com is no account; layfam.com is.
    assert set(accounts) == {"acme.com", "globex.co.uk", "layfam.com"}
    contacts = {c.email: c for c in crm.contacts.values()}
    assert set(contacts) == {
        "carol@acme.com",
        "dave@globex.co.uk",
        "holly@layfam.com",
        "joe@hotmail.com",
    }  # no noreply@
    assert contacts["joe@hotmail.com"].company_id is None
    assert contacts["carol@acme.com"].company_id == accounts["acme.com"].id
    assert (contacts["carol@acme.com"].first_name, contacts["carol@acme.com"].last_name) == ("Carol", "Reyes")
    alice = imported.org.user("alice.smith@example.com")
    assert accounts["acme.com"].owner_id == alice.id and alice.role == "seller"


def test_a_tarball_streams_to_the_same_org(maildir: Path, imported: ImportResult, tmp_path: Path) -> None:
    tgz = tmp_path / "archive.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(maildir, arcname="maildir")
    other = import_archive(tgz, ["example.com"], today=TODAY)

    def fingerprint(org: Org) -> object:
        return sorted(
            (mb.user_id, m.id, m.container, m.content.internet_message_id)
            for mb in org.mailboxes.values()
            for m in mb.messages.values()
        )

    assert fingerprint(other.org) == fingerprint(imported.org)
    assert other.org.now() == imported.org.now()
    assert sorted(other.report.unparseable) == sorted((f"maildir/{s}", why) for s, why in imported.report.unparseable)


def test_users_filter_reads_only_those_mailboxes(maildir: Path) -> None:
    r = import_archive(maildir, ["example.com"], users=["bob-j"], today=TODAY)
    assert [u.mail for u in r.org.users.values()] == ["bob.jones@example.com"]
    assert r.report.mailboxes_in_archive == 2 and r.report.files_filtered_out == 13
    with pytest.raises(ValueError, match="no such mailbox in the archive: nobody-x"):
        import_archive(maildir, ["example.com"], users=["nobody-x"], today=TODAY)


def test_an_mbox_file_is_one_mailbox_filed_by_direction(tmp_path: Path) -> None:
    path = tmp_path / "alice.mbox"
    box = mailbox.mbox(path)
    for raw in (ANNOUNCE, DEAL, REPLY, FORWARD):
        box.add(raw)
    box.close()
    r = import_archive(path, ["example.com"], today=TODAY)
    assert [u.mail for u in r.org.users.values()] == ["alice.smith@example.com"]
    assert folder_items(r.org, "alice.smith@example.com") == {
        "Inbox": ["Deal", "Fwd: re:  DEAL"],
        "Sent Items": ["Plan", "RE: Deal"],
    }
    assert r.report.mailboxes["alice"].owner_rule == "most frequent internal recipient"


def test_mbox_files_in_a_tree_are_folders(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "alice").mkdir(parents=True)
    for name, msgs in (("Sent.mbox", [REPLY]), ("Clients.mbox", [DEAL, FORWARD])):
        box = mailbox.mbox(root / "alice" / name)
        for raw in msgs:
            box.add(raw)
        box.close()
    tgz = tmp_path / "export.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(root, arcname=".")
    for source in (root, tgz):
        r = import_archive(source, ["example.com"], today=TODAY)
        assert folder_items(r.org, "alice.smith@example.com") == {
            "Sent Items": ["RE: Deal"],
            "Clients": ["Deal", "Fwd: re:  DEAL"],
        }, source


def test_a_folder_of_eml_files(tmp_path: Path) -> None:
    root = tmp_path / "bob"
    root.mkdir()
    (root / "1.eml").write_bytes(ANNOUNCE)
    (root / "2.eml").write_bytes(ANNOUNCE.replace(b"<a1.", b"<other."))  # the same email saved twice
    (root / "3.eml").write_bytes(rfc822("x", D2, "bob.jones@example.com", ["carol@acme.com"], subject="Hi"))
    r = import_archive(root, ["example.com"], today=TODAY)
    assert r.report.duplicate_files == 1
    assert folder_items(r.org, "bob.jones@example.com") == {"Inbox": ["Plan"], "Sent Items": ["Hi"]}
    single = import_archive(root / "3.eml", ["example.com"], today=TODAY)
    assert [u.mail for u in single.org.users.values()] == ["bob.jones@example.com"]
    assert single.report.mailboxes["3"].owner_rule == "most frequent internal sender"


def test_nothing_to_import_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="no importable message"):
        import_archive(tmp_path / "junk", ["example.com"])
    with pytest.raises(ValueError, match="internal domain"):
        import_archive(tmp_path / "junk", [])
    with pytest.raises(FileNotFoundError):
        import_archive(tmp_path / "missing", ["example.com"])


# ---------------------------------------------------------------- the pieces


@pytest.mark.parametrize(
    ("subject", "topic"),
    [
        ("RE: Deal", "deal"),
        ("Fwd: re:  DEAL ", "deal"),
        ("AW: WG: Angebot", "angebot"),
        ("Re[2]: FW: status", "status"),
        ("Regarding: plans", "regarding: plans"),
        ("", ""),
    ],
)
def test_normalize_subject(subject: str, topic: str) -> None:
    assert normalize_subject(subject) == topic


@pytest.mark.parametrize(
    ("folder", "target"),
    [
        (("inbox",), ("inbox", ())),
        (("inbox", "clients"), ("inbox", ("clients",))),
        (("notes_inbox",), ("inbox", ())),
        (("_sent_mail",), ("sentitems", ())),
        (("sent_items",), ("sentitems", ())),
        (("deleted_items",), ("deleteditems", ())),
        (("all_documents",), ("@view", ())),
        (("discussion_threads",), ("@view", ())),
        (("calendar",), ("@calendar", ())),
        (("bankrupt", "transport"), ("msgfolderroot", ("bankrupt", "transport"))),
        ((), ("@direction", ())),
    ],
)
def test_classify_folder(folder: tuple[str, ...], target: tuple[str, tuple[str, ...]]) -> None:
    assert classify_folder(folder) == target


def test_imcea_and_lotus_names() -> None:
    assert (
        decode_imcea("IMCEANOTES-+22Holly+20K+22+20+3Cholly+40layfam+2Ecom+3E+40ENRON@ENRON.com") == "holly@layfam.com"
    )
    assert decode_imcea("imceanotes-truorange+40aol+2ecom+40enron@enron.com") == "truorange@aol.com"
    assert decode_imcea("IMCEANOTES-Ken+20Lay-+20Chairman+40ENRON@ENRON.com") is None  # a Notes name, no address
    assert decode_imcea("jane@example.com") is None
    assert clean_display_name("Dean, Craig </O=ENRON/OU=NA/CN=RECIPIENTS/CN=CDEAN2>") == "Dean, Craig"
    assert clean_display_name("TruOrange@aol.com@ENRON") == "TruOrange@aol.com"
    assert clean_display_name("Jane Doe/HOU/ECT@ECT") == "Jane Doe"


def test_address_lists() -> None:
    pairs, dropped = parse_addresses('"Dean, Craig" <Craig.Dean@Enron.com>, b@x.com, e-mail <.al@enron.com>, , kyle.')
    assert pairs == [("Dean, Craig", "craig.dean@enron.com"), ("", "b@x.com"), ("e-mail", ".al@enron.com")]
    assert dropped == 1
    assert parse_addresses("IMCEANOTES-jo+40acme+2Ecom+40X@X.com")[0] == [("", "jo@acme.com")]


def test_envelope_keeps_metadata_only() -> None:
    env = parse_envelope(ANNOUNCE)
    assert env.sent == datetime(2000, 12, 4, 17, 0, tzinfo=UTC)
    assert env.sender == ("alice.smith@example.com", "alice.smith@example.com")
    assert env.bcc == () and env.bcc_was_cc
    # Copies differ only in per-file headers: same digest. Another body: another email.
    assert parse_envelope(ANNOUNCE.replace(b"<a1.", b"<a9.")).digest == env.digest
    assert parse_envelope(ANNOUNCE.replace(b"Hello.", b"Bye.")).digest != env.digest
    assert not hasattr(env, "body")


def test_plausible_range_cuts_stray_clocks_only() -> None:
    def d(y: int, m: int = 6) -> datetime:
        return datetime(y, m, 1, tzinfo=UTC)

    bulk = [d(2000, m) for m in range(1, 13)] * 20 + [d(2001, m) for m in range(1, 13)] * 20
    dated = sorted([*bulk, d(1997), d(2004), d(2044)])
    assert plausible_range(dated) == (d(2000, 1), d(2001, 12))
    # A sparse archive: a year between two messages is no stray clock.
    assert plausible_range([d(2000), d(2001)]) == (d(2000), d(2001))


def test_rebase_moves_every_date_by_one_offset(maildir: Path, imported: ImportResult) -> None:
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    moved = import_archive(maildir, ["example.com"], today=TODAY, rebase_to=now)
    assert moved.org.now() == now.replace(second=0)
    shift = moved.org.now() - imported.org.now()
    assert moved.report.shifted_days == round(shift.total_seconds() / 86400, 2) > 9000

    def sent(org: Org) -> dict[str, tuple[datetime, datetime | None]]:
        return {m.id: (m.content.sent, m.received) for mb in org.mailboxes.values() for m in mb.messages.values()}

    before, after = sent(imported.org), sent(moved.org)
    assert before.keys() == after.keys()
    assert all(after[k][0] - before[k][0] == shift and after[k][1] - before[k][1] == shift for k in before)
