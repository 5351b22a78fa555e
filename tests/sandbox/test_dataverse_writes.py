"""Writes: PATCH upsert with If-Match / If-None-Match, POST, DELETE, return=representation, @odata.bind
(case-sensitive navigation properties), payload validation, $batch change-set rollback and
continue-on-error, and the bulk actions' all-or-nothing behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from relinsights.sandbox import SandboxServer

from .conftest import SEED
from .dataverse_support import dv_client, http_part, multipart, parse_multipart

KPI = "msdyn_contactkpiitems"
TYPE = "Microsoft.Dynamics.CRM.msdyn_contactkpiitem"


@pytest.fixture(scope="module")
def dv() -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=SEED) as sb:
        yield sb


@pytest.fixture(scope="module")
def c(dv: SandboxServer) -> Iterator[httpx.Client]:
    with dv_client(dv) as client:
        yield client


def _new() -> str:
    return str(uuid.uuid4())


def _contact(dv: SandboxServer, n: int = 0) -> str:
    return sorted(dv.crm.rows("contact"))[n]


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"] if r.content else ""


def test_patch_upsert_if_match_if_none_match(dv: SandboxServer, c: httpx.Client) -> None:
    rid = _new()
    body = {"msdyn_name": "Ann", "msdyn_emailssent": 2, "msdyn_contactid@odata.bind": f"/contacts({_contact(dv)})"}
    assert _code(c.patch(f"{KPI}({rid})", json=body, headers={"If-Match": "*"})) == (404, "0x80040217")
    r = c.patch(f"{KPI}({rid})", json=body)  # no If-Match: an upsert creates the row with our id
    assert r.status_code == 204 and r.headers["OData-EntityId"] == f"{dv.dataverse_api_url}/{KPI}({rid})"
    row = dv.crm.get("msdyn_contactkpiitem", rid)
    assert row and row["msdyn_emailssent"] == 2 and row["msdyn_contactid"].id == _contact(dv)
    assert row["createdby"].id == dv.crm.app_user_id
    assert _code(c.patch(f"{KPI}({rid})", json=body, headers={"If-None-Match": "*"})) == (412, "0x80040237")
    r = c.patch(
        f"{KPI}({rid})",
        json={"msdyn_emailssent": 3},
        headers={"If-Match": "*", "Prefer": "return=representation"},
        params={"$select": "msdyn_emailssent"},
    )
    assert (
        r.status_code == 200
        and r.json()["msdyn_emailssent"] == 3
        and r.headers["Preference-Applied"] == "return=representation"
    )
    etag = r.json()["@odata.etag"]
    assert c.patch(f"{KPI}({rid})", json={"msdyn_emailssent": 4}, headers={"If-Match": etag}).status_code == 204
    assert _code(c.patch(f"{KPI}({rid})", json={"msdyn_emailssent": 5}, headers={"If-Match": etag})) == (
        412,
        "0x80060882",
    )
    other = _new()
    r = c.patch(
        f"{KPI}({other})", json={"msdyn_name": "x"}, headers={"If-None-Match": "*", "Prefer": "return=representation"}
    )
    assert r.status_code == 201 and r.json()["msdyn_contactkpiitemid"] == other
    r = c.post(KPI, json={"msdyn_name": "posted"})
    assert r.status_code == 204 and "OData-EntityId" in r.headers
    assert _code(c.post(KPI, json={"msdyn_name": "again", "msdyn_contactkpiitemid": other})) == (412, "0x80040237")
    assert c.delete(f"{KPI}({other})").status_code == 204
    assert _code(c.delete(f"{KPI}({other})")) == (404, "0x80040217")
    assert dv.crm.written[KPI] >= 5


def test_bind_is_case_sensitive_and_checked(dv: SandboxServer, c: httpx.Client) -> None:
    contact = _contact(dv, 1)
    r = c.post(KPI, json={"msdyn_name": "x", "msdyn_ContactId@odata.bind": f"/contacts({contact})"})
    assert _code(r) == (400, "0x80060888")
    assert r.json()["error"]["message"].startswith(
        "An undeclared property 'msdyn_ContactId' which only has property annotations"
    )
    # the most-contacted tables navigate through 'msdyn_contact_regardingObjectId' (capital O), as in Dynamics
    assert (
        c.post(
            "msdyn_mostcontacteds", json={"msdyn_contact_regardingobjectid@odata.bind": f"/contacts({contact})"}
        ).status_code
        == 400
    )
    r = c.post(
        "msdyn_mostcontacteds",
        json={"msdyn_primaryname": "Bob", "msdyn_contact_regardingObjectId@odata.bind": f"/contacts({contact})"},
        headers={"Prefer": "return=representation"},
    )
    assert r.status_code == 201 and r.json()["_msdyn_contact_regardingobjectid_value"] == contact
    # the lookup as a plain value, a wrong target set, a missing record
    assert "PrimitiveValue" in c.post(KPI, json={"msdyn_contactid": contact}).json()["error"]["message"]
    assert (
        c.post(KPI, json={"msdyn_contactid@odata.bind": f"/accounts({sorted(dv.crm.rows('account'))[0]})"}).status_code
        == 400
    )
    missing = _new()
    assert _code(c.post(KPI, json={"msdyn_contactid@odata.bind": f"contacts({missing})"})) == (404, "0x80040217")
    assert c.post(KPI, json={"_msdyn_contactid_value": contact}).status_code == 400
    # an absolute URL works too, and so does clearing with null
    rid = _new()
    assert (
        c.patch(
            f"{KPI}({rid})", json={"msdyn_contactid@odata.bind": f"{dv.dataverse_api_url}/contacts({contact})"}
        ).status_code
        == 204
    )
    assert c.patch(f"{KPI}({rid})", json={"msdyn_contactid@odata.bind": None}).status_code == 204
    assert dv.crm.get("msdyn_contactkpiitem", rid)["msdyn_contactid"] is None  # type: ignore[index]


def test_payload_validation(dv: SandboxServer, c: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"msdyn_bogus": 1},
            "0x80060888",
            "The property 'msdyn_bogus' does not exist on type 'Microsoft.Dynamics.CRM.msdyn_contactkpiitem'",
        ),
        ({"msdyn_timespentbyteam_calculated": 1.5}, "0x80048d19", "msdyn_timespentbyteam_calculated"),
        ({"createdon": "2026-01-01T00:00:00Z"}, "0x80048d19", "createdon"),
        ({"msdyn_relationshiphealthscorevalue": 101}, "0x80044331", "outside the valid range"),
        ({"msdyn_relationshiphealthscorestate": 9}, "0x80044331", "outside the valid range"),
        ({"msdyn_emailssent": "3"}, "0x80060888", "Cannot convert the literal '3' to the expected type 'Edm.Int32'"),
        ({"msdyn_emailssent": 1.5}, "0x80060888", "Edm.Int32"),
        ({"msdyn_name": "x" * 101}, "0x80044331", "exceeded the maximum allowed length of '100'"),
        ({"msdyn_date": "2026-03-02T09:00:00"}, "0x80060888", "Edm.DateTimeOffset"),
        ({"msdyn_date": "2026-03-02"}, "0x80060888", "Edm.DateTimeOffset"),
    ]
    for payload, code, text in cases:
        r = c.post(KPI, json=payload)
        assert _code(r) == (400, code), payload
        assert text in r.json()["error"]["message"], (payload, r.text)
    rid = _new()
    body = {
        "msdyn_timespentbyteam": 135,
        "msdyn_date": "2026-03-10T12:00:00Z",
        "msdyn_responseratebyus": 1,
        "msdyn_averagefirstresponsetimebyusinhrs": 4.5,
    }
    assert c.patch(f"{KPI}({rid})", json=body).status_code == 204
    got = c.get(
        f"{KPI}({rid})", params={"$select": "msdyn_timespentbyteam_calculated,msdyn_date,msdyn_responseratebyus"}
    ).json()
    assert got["msdyn_timespentbyteam_calculated"] == 2.2 and got["msdyn_date"] == "2026-03-10T12:00:00Z"
    day = c.patch(
        f"msdyn_dailycontactkpiitems({_new()})",
        json={
            "msdyn_date": "2026-03-10",
            "msdyn_emailssent": 1,
            "msdyn_entityid@odata.bind": f"/contacts({_contact(dv)})",
        },
    )
    assert day.status_code == 204
    assert (
        c.patch(f"msdyn_dailycontactkpiitems({_new()})", json={"msdyn_date": "2026-03-10T00:00:00Z"}).status_code == 400
    )


def test_parent_pointer_write_shows_in_change_tracking(dv: SandboxServer, c: httpx.Client) -> None:
    contact = _contact(dv, 2)
    r = c.get("contacts", params={"$select": "_msdyn_contactkpiid_value"}, headers={"Prefer": "odata.track-changes"})
    link = r.json()["@odata.deltaLink"]
    kpi = _new()
    assert (
        c.patch(
            f"{KPI}({kpi})", json={"msdyn_name": "k", "msdyn_contactid@odata.bind": f"/contacts({contact})"}
        ).status_code
        == 204
    )
    assert (
        c.patch(
            f"contacts({contact})", json={"msdyn_contactkpiid@odata.bind": f"/{KPI}({kpi})"}, headers={"If-Match": "*"}
        ).status_code
        == 204
    )
    delta = c.get(link).json()["value"]
    assert [(v["contactid"], v["_msdyn_contactkpiid_value"]) for v in delta] == [(contact, kpi)]


def _kpi_part(rid: str, name: str = "ok", cid: str | None = None, **extra: Any) -> str:
    return http_part("PATCH", f"/api/data/v9.2/{KPI}({rid})", {"msdyn_name": name, **extra}, content_id=cid)


def test_batch_change_set_rollback_and_continue_on_error(dv: SandboxServer, c: httpx.Client) -> None:
    a, b, d = _new(), _new(), _new()
    ctype, body = multipart([[_kpi_part(a, cid="1"), _kpi_part(b, cid="2"), _kpi_part(d, "x" * 300, cid="3")]])
    r = c.post("$batch", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400
    (part,) = parse_multipart(r.headers["Content-Type"], r.content)
    assert (
        part.status == 400 and part.part_headers["content-id"] == "3" and part.json()["error"]["code"] == "0x80044331"
    )
    assert all(dv.crm.get("msdyn_contactkpiitem", x) is None for x in (a, b, d))  # all or nothing
    # without continue-on-error the batch stops at the first failure
    e, f = _new(), _new()
    ctype, body = multipart([_kpi_part(e), _kpi_part(_new(), "y" * 300), _kpi_part(f)])
    r = c.post("$batch", content=body, headers={"Content-Type": ctype})
    parts = parse_multipart(r.headers["Content-Type"], r.content)
    assert r.status_code == 400 and [p.status for p in parts] == [204, 400]
    assert dv.crm.get("msdyn_contactkpiitem", e) is not None and dv.crm.get("msdyn_contactkpiitem", f) is None
    # with it, everything runs; a good change set commits next to a failed one
    g, h = _new(), _new()
    ctype, body = multipart(
        [_kpi_part(_new(), "z" * 300), _kpi_part(g), [_kpi_part(h)], http_part("GET", f"{KPI}({g})?$select=msdyn_name")]
    )
    r = c.post("$batch", content=body, headers={"Content-Type": ctype, "Prefer": "odata.continue-on-error"})
    parts = parse_multipart(r.headers["Content-Type"], r.content)
    assert r.status_code == 200 and r.headers["Preference-Applied"] == "odata.continue-on-error"
    assert (
        [p.status for p in parts] == [400, 204, 0, 200] and parts[2].changeset and parts[2].changeset[0].status == 204
    )
    assert parts[3].json()["msdyn_name"] == "ok" and dv.crm.get("msdyn_contactkpiitem", h) is not None


def test_batch_limits_and_malformed_batches(c: httpx.Client) -> None:
    ctype, body = multipart([http_part("GET", "WhoAmI") for _ in range(1001)])
    r = c.post("$batch", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400 and "1000" in r.json()["error"]["message"]
    assert c.post("$batch", content=b"--x\r\n", headers={"Content-Type": "multipart/mixed"}).status_code == 400
    ctype, body = multipart([[http_part("GET", "WhoAmI")]])
    assert c.post("$batch", content=body, headers={"Content-Type": ctype}).status_code == 400  # no GET in change sets


def _targets(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"Targets": [{"@odata.type": TYPE, **r} for r in rows]}


def test_upsert_multiple_all_or_nothing(dv: SandboxServer, c: httpx.Client) -> None:
    pk = "msdyn_contactkpiitemid"
    a, b = _new(), _new()
    url = f"{KPI}/Microsoft.Dynamics.CRM.UpsertMultiple"
    r = c.post(url, json=_targets({pk: a, "msdyn_name": "a"}, {pk: b, "msdyn_relationshiphealthscorevalue": 150}))
    assert _code(r) == (400, "0x80044331")
    assert dv.crm.get("msdyn_contactkpiitem", a) is None  # one bad row fails the whole call
    r = c.post(url, json=_targets({pk: a, "msdyn_name": "a"}, {"@odata.id": f"{KPI}({a})", "msdyn_name": "again"}))
    assert _code(r) == (400, "0x80040237") and "same key" in r.json()["error"]["message"]
    assert c.post(url, json={"Targets": [{pk: a, "msdyn_name": "a"}]}).status_code == 400  # @odata.type is required
    assert c.post(url, json=_targets({pk: a, "msdyn_name": "a"}, {pk: b, "msdyn_name": "b"})).status_code == 204
    assert c.post(url, json=_targets({pk: a, "msdyn_emailssent": 7})).status_code == 204
    assert dv.crm.get("msdyn_contactkpiitem", a)["msdyn_emailssent"] == 7  # type: ignore[index]
    # CreateMultiple refuses duplicates and existing keys; UpdateMultiple keeps the first of duplicates
    create = f"{KPI}/Microsoft.Dynamics.CRM.CreateMultiple"
    n = _new()
    assert _code(c.post(create, json=_targets({pk: n}, {pk: n}))) == (400, "0x80040237")
    assert _code(c.post(create, json=_targets({pk: n}, {pk: a}))) == (412, "0x80040237")
    assert dv.crm.get("msdyn_contactkpiitem", n) is None
    update = f"{KPI}/Microsoft.Dynamics.CRM.UpdateMultiple"
    assert (
        c.post(update, json=_targets({pk: a, "msdyn_name": "first"}, {pk: a, "msdyn_name": "second"})).status_code
        == 204
    )
    assert dv.crm.get("msdyn_contactkpiitem", a)["msdyn_name"] == "first"  # type: ignore[index]
    assert _code(c.post(update, json=_targets({pk: _new(), "msdyn_name": "nobody"}))) == (404, "0x80040217")
    assert (
        c.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json=_targets({pk: a})).status_code == 400
    )  # wrong type
