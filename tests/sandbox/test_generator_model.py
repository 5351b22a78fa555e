"""The generated organisation: deterministic, and with the corners a real tenant has."""

from __future__ import annotations

from datetime import timedelta

from relinsights.sandbox import generate_org
from relinsights.sandbox.model import Org


def _fingerprint(org: Org) -> tuple[object, ...]:
    return (
        sorted(org.users),
        sorted((mb.user_id, mid, m.container) for mb in org.mailboxes.values() for mid, m in mb.messages.items()),
        sorted((mb.user_id, eid, e.start) for mb in org.mailboxes.values() for eid, e in mb.events.items()),
        org.seq,
    )


def test_same_seed_same_org_other_seed_other_org() -> None:
    a, b, c = generate_org("small", seed=11), generate_org("small", seed=11), generate_org("small", seed=12)
    assert _fingerprint(a) == _fingerprint(b) != _fingerprint(c)
    a.advance(timedelta(hours=30))
    b.advance(timedelta(hours=30))
    assert _fingerprint(a) == _fingerprint(b)


def test_small_org_has_the_corners_of_a_real_tenant() -> None:
    org = generate_org("small", seed=2)
    stats = org.stats()
    assert 300 <= stats["messages"] <= 4000 and stats["events"] > 50
    users = list(org.users.values())
    assert any(not u.account_enabled and u.has_mailbox for u in users)
    assert any(not u.has_mailbox for u in users)
    assert {d.name for d in org.domains if d.is_verified} >= {"contoso.com", "contoso.eu", "contoso.onmicrosoft.com"}
    assert any(not d.is_verified for d in org.domains)
    seller = org.generator.sellers[0]
    assert any(p.startswith("smtp:") and p.endswith("@contoso.eu") for p in seller.proxy_addresses)
    contacts = list(org.crm.contacts.values())
    assert any(c.email.endswith(("gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "gmx.de")) for c in contacts)
    kinds = {c.relationship for c in org.crm.companies.values()}
    assert {"healthy", "cooling", "one_sided"} <= kinds
    assert org.crm.opportunities and org.crm.leads and org.crm.phone_calls
    states = {o.state for o in org.crm.opportunities.values()}
    assert {"won", "lost", "open"} <= states
    senders = {m.content.sender[1] for mb in org.mailboxes.values() for m in mb.messages.values() if m.content}
    assert any(s.split("@")[0] in ("newsletter", "no-reply", "noreply", "notifications") for s in senders)
    # a customer mail filed under Inbox/Customers/..., internal-only mail, all-day, recurring, cancelled, future
    paths = {
        org.folder_path(mb, m.container) for mb in org.mailboxes.values() for m in mb.messages.values() if m.container
    }
    assert any(p.startswith("Inbox/Customers/") for p in paths)
    internal_only = [
        m
        for mb in org.mailboxes.values()
        for m in mb.messages.values()
        if m.content and all(org.is_internal(a) for _, a in [m.content.sender, *m.content.to, *m.content.cc])
    ]
    assert internal_only
    events = [e for mb in org.mailboxes.values() for e in mb.events.values() if not e.deleted]
    assert any(e.meeting.is_all_day for e in events if e.meeting)
    assert {"seriesMaster", "occurrence", "exception", "singleInstance"} <= {e.type for e in events}
    assert any(e.is_cancelled for e in events)
    assert any(e.start > org.now() for e in events if e.start)
    responses = {a.response for e in events if e.is_organizer for a in e.attendees}
    assert {"accepted", "declined", "tentativelyAccepted"} <= responses


def test_copies_share_internet_message_id_and_bcc_stays_with_the_sender() -> None:
    org = generate_org("small", seed=2)
    s, r1, r2 = org.generator.sellers[:3]
    content = org.deliver_message(s.mail, [r1.mail, "x@fabrikam.example"], bcc=[r2.mail], subject="Hello")
    copies = org.copies_of(content.internet_message_id)
    assert sorted(m.mailbox for m in copies) == sorted([s.id, r1.id, r2.id])
    assert len({m.id for m in copies}) == 3 and len({m.content.conversation_id for m in copies}) == 1
    sent = next(m for m in copies if m.mailbox == s.id)
    assert sent.is_sender_copy and org.folder_path(org.mailboxes[s.id], sent.container) == "Sent Items"
    reply = org.deliver_message(r1.mail, [s.mail], subject="Hello", reply_to=content)
    assert reply.conversation_id == content.conversation_id and reply.subject == "RE: Hello"
    assert reply.in_reply_to == content.internet_message_id
    # a meeting lands in every internal attendee's calendar with its own id and the same iCalUId
    m = org.create_event(
        s.mail,
        [(r1.mail, "required"), ("x@fabrikam.example", "optional")],
        subject="Sync",
        start=org.now() + timedelta(days=1),
        end=org.now() + timedelta(days=1, hours=1),
    )
    ids = {uid: copies[None] for uid, copies in m.copies.items()}
    assert set(ids) == {s.id, r1.id}
    evs = [org.mailboxes[uid].events[eid] for uid, eid in ids.items()]
    assert evs[0].id != evs[1].id and evs[0].ical_uid == evs[1].ical_uid
