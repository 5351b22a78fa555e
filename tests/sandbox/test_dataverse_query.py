"""Reads: $select, $filter, $orderby, $top, $count, $expand, paging, single rows, annotations, the seeded CRM
(sales teams, stakeholders, tracked copies of Graph mail and meetings) and the metadata endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from relinsights.sandbox import SandboxServer

from .conftest import SEED
from .dataverse_support import dv_client, read_all


@pytest.fixture(scope="module")
def dv() -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=SEED) as sb:
        yield sb


@pytest.fixture(scope="module")
def c(dv: SandboxServer) -> Iterator[httpx.Client]:
    with dv_client(dv) as client:
        yield client


def _ids(c: httpx.Client, set_name: str, flt: str, pk: str, **params: str) -> list[str]:
    r = c.get(set_name, params={"$select": pk, "$filter": flt, **params})
    assert r.status_code == 200, r.text
    return [v[pk] for v in r.json()["value"]]


def _error(r: httpx.Response, status: int = 400, code: str = "0x80060888") -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    return str(r.json()["error"]["message"])


def test_filters_match_the_tables(dv: SandboxServer, c: httpx.Client) -> None:
    contacts = dv.crm.rows("contact")
    some = sorted(contacts.values(), key=lambda r: r["contactid"])[3]
    account = some["parentcustomerid"].id
    assert _ids(c, "contacts", f"emailaddress1 eq '{some['emailaddress1'].upper()}'", "contactid") == [
        some["contactid"]
    ]
    by_account = sorted(i for i, r in contacts.items() if r["parentcustomerid"] and r["parentcustomerid"].id == account)
    assert sorted(_ids(c, "contacts", f"_parentcustomerid_value eq {account}", "contactid")) == by_account
    assert sorted(_ids(c, "contacts", f"parentcustomerid_account/accountid eq {account}", "contactid")) == by_account
    assert (
        _ids(c, "contacts", f"_parentcustomerid_value ne {account} and contactid eq {by_account[0]}", "contactid") == []
    )
    domain = some["emailaddress1"].split("@")[1]
    want = sorted(i for i, r in contacts.items() if r["emailaddress1"] and r["emailaddress1"].endswith("@" + domain))
    assert sorted(_ids(c, "contacts", f"endswith(emailaddress1,'@{domain}')", "contactid")) == want
    assert sorted(_ids(c, "contacts", f"contains(emailaddress1,'{domain[:-3].upper()}')", "contactid")) >= want
    first = some["firstname"]
    starts = sorted(i for i, r in contacts.items() if (r["fullname"] or "").lower().startswith(first[:2].lower()))
    assert sorted(_ids(c, "contacts", f"startswith(fullname,'{first[:2]}')", "contactid")) == starts
    no_second = sorted(i for i, r in contacts.items() if r["emailaddress2"] is None)
    assert sorted(_ids(c, "contacts", "emailaddress2 eq null", "contactid")) == no_second
    two = by_account[:2]
    both = f"(contactid eq {two[0]} or contactid eq {two[-1]}) and not (emailaddress1 eq null)"
    assert sorted(_ids(c, "contacts", both, "contactid")) == sorted(set(two))
    inlist = f"Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=['{two[0]}','{two[-1]}'])"
    assert sorted(_ids(c, "contacts", inlist, "contactid")) == sorted(set(two))
    # numbers, choices, money, dates
    opps = dv.crm.rows("opportunity")
    won = sorted(i for i, r in opps.items() if r["statecode"] == 1)
    assert sorted(_ids(c, "opportunities", "statecode eq 1", "opportunityid")) == won
    big = sorted(i for i, r in opps.items() if r["estimatedvalue"] >= 100000)
    assert sorted(_ids(c, "opportunities", "estimatedvalue ge 100000", "opportunityid")) == big
    cut = dv.org.now() - timedelta(days=30)
    recent = sorted(i for i, r in dv.crm.rows("phonecall").items() if r["actualend"] and r["actualend"] > cut)
    stamp = cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sorted(_ids(c, "phonecalls", f"actualend gt {stamp}", "activityid")) == recent
    outgoing = sorted(i for i, r in dv.crm.rows("phonecall").items() if r["directioncode"])
    assert sorted(_ids(c, "phonecalls", "directioncode eq true", "activityid")) == outgoing
    closing = sorted(i for i, r in opps.items() if r["actualclosedate"] and r["actualclosedate"] <= cut.date())
    assert sorted(_ids(c, "opportunities", f"actualclosedate le {cut.date()}", "opportunityid")) == closing


def test_bad_queries_get_dataverse_errors(c: httpx.Client) -> None:
    assert _error(c.get("contacts", params={"$select": "fullname,nope"})) == (
        "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.contact'."
    )
    assert "FullName" in _error(c.get("contacts", params={"$select": "FullName"}))  # names are case-sensitive
    assert "incompatible types" in _error(c.get("contacts", params={"$filter": "emailaddress1 eq 5"}))
    assert "incompatible types" in _error(c.get("contacts", params={"$filter": "contactid eq 'x'"}))
    assert "not supported" in _error(c.get("contacts", params={"$filter": "tolower(fullname) eq 'x'"}))
    assert "Syntax error" in _error(c.get("contacts", params={"$filter": "fullname eq 'x' and"}))
    assert "Syntax error" in _error(c.get("contacts", params={"$filter": "fullname eq 'unterminated"}))
    assert _error(c.get("contacts", params={"$skip": "2"})) == "The query parameter $skip is not supported"
    assert "Could not find a property" in _error(c.get("contacts", params={"$orderby": "nope desc"}))
    assert "Could not find a property" in _error(c.get("contacts", params={"$expand": "nope"}))


def test_order_top_count_and_paging(dv: SandboxServer, c: httpx.Client) -> None:
    r = c.get(
        "opportunities",
        params={"$select": "estimatedvalue,name", "$orderby": "estimatedvalue desc", "$top": "5", "$count": "true"},
    )
    body = r.json()
    values = [v["estimatedvalue"] for v in body["value"]]
    assert values == sorted((o["estimatedvalue"] for o in dv.crm.rows("opportunity").values()), reverse=True)[:5]
    assert body["@odata.count"] == len(dv.crm.rows("opportunity")) and "@odata.nextLink" not in body
    assert list(body) == ["@odata.context", "@odata.count", "value"]
    # ordered paging continues by position; the default order pages by key
    ordered, _ = read_all(
        c, "contacts", {"$select": "lastname", "$orderby": "lastname asc"}, {"Prefer": "odata.maxpagesize=7"}
    )
    names = [x["lastname"].lower() for x in ordered]
    assert names == sorted(names) and len(ordered) == len(dv.crm.rows("contact"))
    r = c.get("emails", params={"$select": "subject"}, headers={"Prefer": "odata.maxpagesize=9999"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=9999" and len(r.json()["value"]) == len(
        dv.crm.rows("email")
    )
    n = c.get("contacts/$count")
    assert n.headers["Content-Type"].startswith("text/plain") and int(n.text) == len(dv.crm.rows("contact"))


def test_single_rows_and_related_rows(dv: SandboxServer, c: httpx.Client) -> None:
    contact = sorted(dv.crm.rows("contact"))[0]
    r = c.get(f"contacts({contact})", params={"$select": "fullname,_parentcustomerid_value"})
    body = r.json()
    assert body["@odata.context"].endswith("$metadata#contacts(fullname,_parentcustomerid_value)/$entity")
    assert set(body) == {"@odata.context", "@odata.etag", "fullname", "_parentcustomerid_value", "contactid"}
    missing = "00000000-0000-4000-8000-000000000000"
    assert _error(c.get(f"contacts({missing})"), 404, "0x80040217") == (
        f"Entity 'contact' With Id = {missing} Does Not Exist"
    )
    assert _error(c.get("contacts(not-a-guid)")) == "Bad Request - Error in query syntax."
    full = c.get(f"contacts({contact})").json()  # no $select: every column, lookups as _x_value
    assert {"_ownerid_value", "_msdyn_contactkpiid_value", "emailaddress3", "modifiedon", "versionnumber"} <= set(full)
    account = c.get(f"contacts({contact})/parentcustomerid_account", params={"$select": "name"}).json()
    assert account["accountid"] == full["_parentcustomerid_value"]
    r = c.get(f"contacts({contact})/emailaddress1")
    assert r.json()["value"] == full["emailaddress1"]


def test_annotations_only_when_asked(dv: SandboxServer, c: httpx.Client) -> None:
    params = {"$select": "name,estimatedvalue,statecode,_parentaccountid_value,estimatedclosedate", "$top": "3"}
    plain = c.get("opportunities", params=params).json()["value"]
    assert all(k == "@odata.etag" or "@" not in k for v in plain for k in v)
    fv = "OData.Community.Display.V1.FormattedValue"
    only = c.get("opportunities", params=params, headers={"Prefer": f'odata.include-annotations="{fv}"'})
    assert only.headers["Preference-Applied"] == f'odata.include-annotations="{fv}"'
    row = only.json()["value"][0]
    assert row[f"statecode@{fv}"] in ("Open", "Won", "Lost")
    assert row[f"estimatedvalue@{fv}"].startswith("$") and row[f"_parentaccountid_value@{fv}"]
    assert not any(k.endswith("lookuplogicalname") for k in row)
    every = c.get("opportunities", params=params, headers={"Prefer": 'odata.include-annotations="*"'}).json()["value"][
        0
    ]
    assert every["_parentaccountid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert every["_parentaccountid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "parentaccountid"
    keys = list(every)
    assert keys.index("_parentaccountid_value@" + fv) < keys.index("_parentaccountid_value")  # annotations first
    contact = c.get(
        "contacts",
        params={"$select": "_parentcustomerid_value", "$top": "1"},
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
    )
    assert contact.json()["value"][0]["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"


def test_sales_teams_and_stakeholders(dv: SandboxServer, c: httpx.Client) -> None:
    org, crm = dv.org, dv.crm
    systemuser_of = {r["azureactivedirectoryobjectid"]: i for i, r in crm.rows("systemuser").items()}
    stakeholder_role = next(i for i, r in crm.rows("connectionrole").items() if r["name"] == "Stakeholder")
    checked = 0
    for opp in org.crm.opportunities.values():
        teams = c.get(
            "teams",
            params={
                "$select": "name,teamtype",
                "$filter": f"_regardingobjectid_value eq {opp.id} and teamtype eq 1",
                "$expand": "teammembership_association($select=systemuserid,fullname)",
            },
        ).json()["value"]
        members = {m["systemuserid"] for t in teams for m in t["teammembership_association"]}
        assert members == {systemuser_of[u] for u in opp.team_ids}
        links = c.get(
            "connections",
            params={
                "$select": "_record2id_value",
                "$filter": f"_record1id_value eq {opp.id} and _record2roleid_value eq {stakeholder_role}",
            },
        ).json()["value"]
        assert {x["_record2id_value"] for x in links} == set(opp.stakeholder_ids)
        back = c.get(
            "connections",
            params={
                "$select": "_record1id_value",
                "$filter": f"_record2id_value eq {opp.id} and _record1roleid_value eq {stakeholder_role}",
            },
        ).json()["value"]
        assert {x["_record1id_value"] for x in back} == set(opp.stakeholder_ids)  # the reciprocal rows
        checked += 1
    assert checked
    team = next(iter(crm.rows("team")))
    via_nav = c.get(f"teams({team})/teammembership_association", params={"$select": "fullname"}).json()["value"]
    assert {m["systemuserid"] for m in via_nav} == {
        m["systemuserid"] for m in crm.rows("teammembership").values() if m["teamid"] == team
    }


def test_tracked_mail_and_meetings_exist_in_graph(dv: SandboxServer, c: httpx.Client) -> None:
    org = dv.org
    emails, _ = read_all(c, "emails", {"$select": "messageid,directioncode,senton,_regardingobjectid_value"})
    assert emails
    for e in emails:
        copies = org.copies_of(e["messageid"])
        assert copies, e["messageid"]
        internal = copies[0].content.from_[1].lower() in {a for u in org.users.values() for a in u.addresses()}  # type: ignore[union-attr]
        assert e["directioncode"] is internal
    appts, _ = read_all(c, "appointments", {"$select": "globalobjectid,scheduledstart,statecode"})
    assert appts and all(a["globalobjectid"] in org.meetings for a in appts)
    one = emails[0]["activityid"]
    parties = c.get(
        "activityparties",
        params={
            "$select": "participationtypemask,addressused,_partyid_value",
            "$filter": f"_activityid_value eq {one}",
        },
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
    ).json()["value"]
    assert {p["participationtypemask"] for p in parties} >= {1, 2}
    kinds = {p.get("_partyid_value@Microsoft.Dynamics.CRM.lookuplogicalname") for p in parties}
    assert "systemuser" in kinds and kinds & {"contact", "lead"}
    expanded = c.get(
        f"emails({one})", params={"$select": "subject", "$expand": "email_activity_parties($select=addressused)"}
    ).json()
    assert sorted(p["addressused"] for p in expanded["email_activity_parties"]) == sorted(
        p["addressused"] for p in parties
    )
    # phone calls: completed ones from the seeds, planned ones in the future
    calls = dv.crm.rows("phonecall").values()
    assert any(r["statecode"] == 0 and r["scheduledend"] > org.now() for r in calls)
    assert sum(1 for r in calls if r["statecode"] == 1) >= len([p for p in org.crm.phone_calls])


def test_who_am_i_and_entity_definitions(dv: SandboxServer, c: httpx.Client) -> None:
    me = c.get("WhoAmI").json()
    user = dv.crm.get("systemuser", me["UserId"])
    assert user and user["applicationid"] == dv.client_id and user["accessmode"] == 4
    d = c.get("EntityDefinitions(LogicalName='msdyn_contactkpiitem')").json()
    assert (d["EntitySetName"], d["PrimaryIdAttribute"]) == ("msdyn_contactkpiitems", "msdyn_contactkpiitemid")
    attrs: list[dict[str, Any]] = c.get("EntityDefinitions(LogicalName='msdyn_contactkpiitem')/Attributes").json()[
        "value"
    ]
    calc = next(a for a in attrs if a["LogicalName"] == "msdyn_timespentbyteam_calculated")
    assert calc["IsValidForCreate"] is False and calc["AttributeType"] == "Decimal"
    assert _error(c.get("EntityDefinitions(LogicalName='nope')"), 404, "0x80040217")
