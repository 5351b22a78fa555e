"""Change tracking: a mirror built from a full read plus delta rounds equals the CRM truth after the sandbox's
clock moves (contacts edited, opportunities closed, calls logged, leads added, records deleted, new mail
and meetings tracked); delta paging; options refused in tracking mode; token expiry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from relinsights.sandbox import SandboxServer

from .conftest import SEED
from .dataverse_support import dv_client, read_all

TABLES = {
    "contacts": "contactid",
    "accounts": "accountid",
    "leads": "leadid",
    "opportunities": "opportunityid",
    "phonecalls": "activityid",
    "emails": "activityid",
    "appointments": "activityid",
    "connections": "connectionid",
}


@pytest.fixture
def dv() -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=SEED) as sb:
        yield sb


class Mirror:
    """What the daemon's CRM mirror must do: a full tracked read, then apply each delta round."""

    def __init__(self, c: httpx.Client, page: int = 25) -> None:
        self.c = c
        self.headers = {"Prefer": f"odata.track-changes, odata.maxpagesize={page}"}
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.links: dict[str, str] = {}

    def full(self, set_name: str) -> None:
        rows, link = read_all(self.c, set_name, None, self.headers)
        assert link is not None
        self.rows[set_name] = {r[TABLES[set_name]]: _plain(r) for r in rows}
        self.links[set_name] = link

    def delta(self, set_name: str) -> tuple[set[str], set[str]]:
        rows, link = read_all(self.c, self.links[set_name], None, {"Prefer": self.headers["Prefer"].split(", ")[1]})
        assert link is not None
        self.links[set_name] = link
        changed, deleted = set(), set()
        for r in rows:
            if r.get("reason") == "deleted":
                assert set(r) == {"@odata.context", "id", "reason"} and r["@odata.context"].endswith("$deletedEntity")
                self.rows[set_name].pop(r["id"], None)
                deleted.add(r["id"])
            else:
                self.rows[set_name][r[TABLES[set_name]]] = _plain(r)
                changed.add(r[TABLES[set_name]])
        return changed, deleted


def _plain(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("@")}


def test_mirror_equals_truth_across_advances(dv: SandboxServer) -> None:
    with dv_client(dv) as c:
        m = Mirror(c)
        for s in TABLES:
            m.full(s)
        assert m.rows == {s: dv.crm.truth([s])[s] for s in TABLES}
        totals: dict[str, int] = {}
        for days in (2, 3):
            before = dv.crm.version
            activity = dv.org.advance(timedelta(days=days))
            for k, v in activity.items():
                totals[k] = totals.get(k, 0) + v
            for s in TABLES:
                changed, deleted = m.delta(s)
                want_changed, want_deleted = dv.crm.changed_since(s, before)
                assert changed == {r[TABLES[s]] for r in want_changed}, s
                assert deleted == set(want_deleted), s
            assert m.rows == {s: dv.crm.truth([s])[s] for s in TABLES}
    assert totals.get("crm_phonecalls", 0) > 0 and totals.get("crm_emails_tracked", 0) > 0
    assert totals.get("crm_contact_email_changes", 0) + totals.get("crm_opportunities_closed", 0) > 0
    # new tracked emails are copies of mail that is in the Graph mailboxes
    new = [e for e in dv.crm.rows("email").values() if e["senton"] > dv.org.now() - timedelta(days=5)]
    assert new and all(dv.org.copies_of(e["messageid"]) for e in new)


def test_deletes_and_rows_changed_during_paging(dv: SandboxServer) -> None:
    with dv_client(dv) as c:
        first = c.get(
            "phonecalls", params={"$select": "subject"}, headers={"Prefer": "odata.track-changes, odata.maxpagesize=10"}
        )
        body = first.json()
        assert "@odata.deltaLink" not in body and "istracking%3D%22True%22" in body["@odata.nextLink"].replace(
            "=", "%3D"
        )
        calls = sorted(dv.crm.rows("phonecall"))
        with dv.org.lock:  # changes while the initial read pages: reported in the next round
            dv.crm.update("phonecall", calls[0], {"subject": "edited during paging"})
            dv.crm.delete("phonecall", calls[-1])
        rows, link = read_all(c, body["@odata.nextLink"], None, {"Prefer": "odata.maxpagesize=10"})
        assert link is not None and calls[-1] not in {r["activityid"] for r in rows}  # deleted before its page
        delta, _ = read_all(c, link, None, {"Prefer": "odata.maxpagesize=1"})
        assert {(d.get("activityid"), d.get("id")) for d in delta} == {(calls[0], None), (None, calls[-1])}
        assert c.get(link, params=None).status_code == 200  # a delta link can be followed again
        count = c.get(link.replace("phonecalls?", "phonecalls/$count?"))
        assert count.status_code == 200 and int(count.text) == 2


def test_options_refused_in_tracking_mode_and_untracked_tables(dv: SandboxServer) -> None:
    track = {"Prefer": "odata.track-changes"}
    with dv_client(dv) as c:
        for opt, value in (
            ("$filter", "statecode eq 0"),
            ("$orderby", "fullname"),
            ("$expand", "parentcustomerid_account"),
            ("$top", "5"),
        ):
            r = c.get("contacts", params={"$select": "fullname", opt: value}, headers=track)
            assert r.status_code == 400 and opt in r.json()["error"]["message"], r.text
        r = c.get("activityparties", headers=track)
        assert r.status_code == 400 and "not enabled for change tracking" in r.json()["error"]["message"]


def test_tokens_expire(dv: SandboxServer) -> None:
    with dv_client(dv) as c:
        link = c.get("contacts", params={"$select": "fullname"}, headers={"Prefer": "odata.track-changes"}).json()[
            "@odata.deltaLink"
        ]
        assert c.get(link).status_code == 200
        dv.org.advance(timedelta(days=8))  # past the 7-day retention, by the sandbox clock
        r = c.get(link)
        assert r.status_code == 400
        assert r.json()["error"] == {
            "code": "0x80044352",
            "message": "Version stamp associated with the client has expired. Please perform a full sync.",
        }
        fresh = c.get("contacts", params={"$select": "fullname"}, headers={"Prefer": "odata.track-changes"}).json()[
            "@odata.deltaLink"
        ]
        assert c.get(fresh).status_code == 200
        with httpx.Client(verify=dv.ssl_context(), base_url=dv.base_url) as admin:
            assert admin.post("/_sandbox/dataverse", json={"expire_change_tracking": True}).status_code == 200
        assert c.get(fresh).status_code == 400
        fresh = c.get("contacts", params={"$select": "fullname"}, headers={"Prefer": "odata.track-changes"}).json()[
            "@odata.deltaLink"
        ]
        assert c.get(fresh).status_code == 200  # links issued after the expiry work, at the same sandbox time
        dv.faults.set("410=1")
        try:
            assert c.get(fresh).json()["error"]["code"] == "0x80044352"
        finally:
            dv.faults.set("")
        assert c.get(link.split("$deltatoken=")[0] + "$deltatoken=garbage").status_code == 400
