"""Around the Dataverse API: tokens (real MSAL, audiences), service protection (requests, execution time and
concurrency over a sliding window, Retry-After), injected faults, application-user and privilege errors,
the admin view, and the daemon config the sandbox writes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import msal

from relinsights.config import load_config
from relinsights.sandbox import SandboxServer
from relinsights.sandbox.dataverse_limits import DataverseSettings

from .conftest import SEED, graph_client
from .dataverse_support import dv_client


def test_tokens_and_audiences(tmp_path: Path) -> None:
    with SandboxServer(size="small", seed=SEED) as sb:
        app = msal.ConfidentialClientApplication(
            sb.client_id,
            authority=sb.authority,
            client_credential=sb.client_secret,
            verify=str(sb.ca_path),
            instance_discovery=False,
        )
        dv_token = app.acquire_token_for_client(scopes=[sb.dataverse_scope])["access_token"]
        graph_token = app.acquire_token_for_client(scopes=[sb.graph_scope])["access_token"]
        with httpx.Client(verify=sb.ssl_context(), base_url=sb.dataverse_api_url + "/") as c:
            ok = c.get("WhoAmI", headers={"Authorization": f"Bearer {dv_token}"})
            assert ok.status_code == 200 and ok.json()["UserId"] == sb.crm.app_user_id
            for bad in (graph_token, "not.a.jwt"):
                r = c.get("contacts", headers={"Authorization": f"Bearer {bad}"})
                assert r.status_code == 401 and r.content == b""
                assert r.headers["WWW-Authenticate"].startswith(
                    f"Bearer authorization_uri={sb.base_url}/{sb.tenant_id}/"
                )
                assert "resource_id=https://sandbox.crm.dynamics.com/" in r.headers["WWW-Authenticate"]
        with graph_client(sb) as g:  # and the Dataverse token is no good on Graph
            assert g.get(f"{sb.graph_url}/domains", headers={"Authorization": f"Bearer {dv_token}"}).status_code == 401
        # the daemon config points at the sandbox's Dataverse with the organisation's scope
        tenant = load_config(sb.write_daemon_config(tmp_path)).tenants[0]
        assert tenant.dataverse_url == sb.dataverse_url and sb.dataverse_url.startswith(sb.base_url)
        assert tenant.dataverse_token_scope == "https://sandbox.crm.dynamics.com/.default"


def test_request_limit_and_retry_after() -> None:
    settings = DataverseSettings(max_requests=4, window_seconds=1.5, dop_hint=3)
    with SandboxServer(size="small", seed=SEED, dataverse_settings=settings) as sb, dv_client(sb) as c:
        statuses = []
        for _ in range(4):
            r = c.get("accounts", params={"$select": "name", "$top": "1"})
            statuses.append(r.status_code)
            assert r.headers["x-ms-dop-hint"] == "3"
            assert r.headers["x-ms-ratelimit-time-remaining-xrm-requests"].replace(",", "").replace(".", "").isdigit()
        r = c.get("WhoAmI")
        assert statuses == [200] * 4 and r.status_code == 429 and r.json()["error"]["code"] == "0x80072322"
        wait = int(r.headers["Retry-After"])
        early = c.get("WhoAmI")  # retrying before Retry-After is refused again (and counts)
        assert early.status_code == 429
        time.sleep(int(early.headers["Retry-After"]) + 0.05)
        assert c.get("WhoAmI").status_code == 200 and 1 <= wait <= 2
        # each request inside a $batch counts
        sb.dataverse.protection.reset()
        from .dataverse_support import http_part, multipart

        ctype, body = multipart([http_part("GET", "WhoAmI") for _ in range(5)])
        assert c.post("$batch", content=body, headers={"Content-Type": ctype}).status_code == 200
        assert c.get("WhoAmI").status_code == 429
        assert sb.dataverse.protection.throttled["0x80072322"] >= 3


def test_execution_time_and_concurrency_limits() -> None:
    settings = DataverseSettings(max_execution_seconds=0.5, row_cost_seconds=0.2, window_seconds=30)
    with SandboxServer(size="small", seed=SEED, dataverse_settings=settings) as sb:
        with dv_client(sb) as c:
            target = {"@odata.type": "Microsoft.Dynamics.CRM.msdyn_accountkpiitem", "msdyn_name": "x"}
            url = "msdyn_accountkpiitems/Microsoft.Dynamics.CRM.CreateMultiple"
            assert c.post(url, json={"Targets": [target] * 3}).status_code == 200  # 0.6 s of server time
            r = c.get("WhoAmI")
            assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072321"
            assert "milliseconds over time window of 30 seconds" in r.json()["error"]["message"]
        sb.dataverse.settings.update({"max_execution_seconds": 1200, "max_concurrent": 2, "latency_seconds": 0.4})
        sb.dataverse.protection.reset()

        async def burst() -> list[int]:
            token = c.headers["Authorization"]
            async with httpx.AsyncClient(verify=sb.ssl_context(), headers={"Authorization": token}) as ac:
                rs = await asyncio.gather(*(ac.get(f"{sb.dataverse_api_url}/WhoAmI") for _ in range(5)))
            codes = [r.status_code for r in rs]
            assert all(r.json()["error"]["code"] == "0x80072326" for r in rs if r.status_code == 429)
            return codes

        codes = asyncio.run(burst())
        assert codes.count(200) == 2 and codes.count(429) == 3


def test_faults_privileges_and_admin() -> None:
    with SandboxServer(size="small", seed=SEED) as sb, dv_client(sb) as c:
        sb.faults.set("429=1:3")
        r = c.get("contacts")
        assert r.status_code == 429 and r.headers["Retry-After"] == "3" and r.json()["error"]["code"] == "0x80072322"
        sb.faults.set("503=1")
        assert c.get("contacts").status_code == 503
        sb.faults.set("drop=1")
        try:
            c.get("contacts")
            raise AssertionError("the connection should have been dropped")
        except httpx.HTTPError:
            pass
        sb.faults.set("")
        sb.dataverse.settings.missing_privileges = {"prvCreatemsdyn_contactkpiitem"}
        r = c.post("msdyn_contactkpiitems", json={"msdyn_name": "x"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "0x80040220"
        assert "prvCreatemsdyn_contactkpiitem" in r.json()["error"]["message"]
        sb.dataverse.settings.missing_privileges = set()
        sb.dataverse.settings.application_user = False
        r = c.get("WhoAmI")
        assert r.status_code == 403 and r.json()["error"]["code"] == "0x80072560"
        sb.dataverse.settings.application_user = True
        assert (
            c.patch(
                "msdyn_contactkpiitems(11111111-1111-4111-8111-111111111111)", json={"msdyn_emailssent": 1}
            ).status_code
            == 204
        )
        with httpx.Client(verify=sb.ssl_context(), base_url=sb.base_url) as admin:
            state = admin.post("/_sandbox/dataverse", json={"settings": {"max_requests": 50}}).json()
            assert state["settings"]["max_requests"] == 50 and state["rows"]["contacts"] == len(sb.crm.rows("contact"))
            assert state["written"] == {"msdyn_contactkpiitems": 1} and state["throttled"] == {}
            assert admin.post("/_sandbox/dataverse", json={"settings": {"nope": 1}}).status_code == 400
            truth = admin.get("/_sandbox/dataverse/truth", params={"set": "contacts,opportunities"}).json()
            assert set(truth["contacts"]) == set(sb.crm.rows("contact")) and "accounts" not in truth
            kpis = admin.get("/_sandbox/dataverse/kpis").json()
            assert kpis["msdyn_contactkpiitems"]["11111111-1111-4111-8111-111111111111"]["msdyn_emailssent"] == 1
            assert admin.get("/_sandbox/dataverse/truth", params={"set": "nope"}).status_code == 400


def test_a_hand_built_org_gets_exactly_its_seeds() -> None:
    from relinsights.sandbox.crm_seed import attach_crm
    from relinsights.sandbox.model import Company, Contact, Org

    org = Org(seed=3)
    org.crm.companies["c1"] = Company("c1", "Fabrikam", "fabrikam.com", "Software", "", "", "nobody", "healthy")
    org.crm.contacts["p1"] = Contact("p1", "Ann", "Lee", "ann@fabrikam.com", "c1")
    org.crm.contacts["p2"] = Contact("p2", "", "", "solo@gmail.com", None)
    org.crm.companies["c1"].contact_ids.append("p1")
    store = attach_crm(org, app_client_id="11111111-1111-4111-8111-111111111111", app_object_id="x")
    assert attach_crm(org, app_client_id="y", app_object_id="z") is store  # once per org
    assert set(store.rows("contact")) == {"p1", "p2"} and store.get("contact", "p2")["parentcustomerid"] is None  # type: ignore[index]
    assert not store.rows("phonecall") and not store.rows("email") and set(store.rows("account")) == {"c1"}
