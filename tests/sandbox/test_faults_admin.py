"""Fault injection (spec, runtime switching, each kind) and the loopback admin endpoints."""

from __future__ import annotations

import httpx
import pytest

from relinsights.sandbox import FaultInjector, FaultSpec, SandboxServer
from relinsights.sandbox.faults import FaultSpecError

from .conftest import graph_client, pages


def test_spec_parsing_round_trip() -> None:
    spec = FaultSpec.parse("429=0.05,503=0.02,slow=0.05:2.0,drop=0.01,410=0.02,token_outage=0.0,empty=0.1")
    assert (spec.throttle, spec.unavailable, spec.slow, spec.slow_seconds, spec.drop, spec.gone, spec.empty_page) == (
        0.05,
        0.02,
        0.05,
        2.0,
        0.01,
        0.02,
        0.1,
    )
    assert FaultSpec.parse(spec.to_spec()) == spec
    assert FaultSpec.from_json({"429": 0.5, "slow": [0.1, 3]}).slow_seconds == 3
    for bad in ("nope=0.1", "429=2", "429", "drop=0.1:3"):
        with pytest.raises(FaultSpecError):
            FaultSpec.parse(bad)


def test_seeded_draws_are_reproducible() -> None:
    a, b = FaultInjector("429=0.3,503=0.2", seed=42), FaultInjector("429=0.3,503=0.2", seed=42)
    draws = [(a.roll("throttle"), a.roll("unavailable")) for _ in range(200)]
    assert draws == [(b.roll("throttle"), b.roll("unavailable")) for _ in range(200)]
    assert 30 < sum(x for x, _ in draws) < 90


def test_each_fault_kind(sandbox: SandboxServer) -> None:
    sb, u = sandbox, sandbox.org.generator.sellers[0]
    url = f"{sb.graph_url}/users/{u.id}/mailFolders/inbox/messages/delta"
    with graph_client(sb) as c:
        sb.faults.set("503=1:3")
        r = c.get(f"{sb.graph_url}/domains")
        assert r.status_code == 503 and r.headers["Retry-After"] == "3"
        assert r.json()["error"]["code"] == "ServiceUnavailable"
        sb.faults.set("drop=1")
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(f"{sb.graph_url}/domains")
        sb.faults.set("")
        _, link = pages(c, url)
        r = c.get(url, headers={"Prefer": "odata.maxpagesize=2"})
        next_link = r.json()["@odata.nextLink"]
        assert c.get(url).status_code == 200  # no token in the request: 410 never applies
        sb.faults.set("410=1")
        r = c.get(link)
        assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"
        sb.faults.set("")
        assert c.get(link).status_code == 410  # the folder's older links died with it
        assert c.get(next_link).status_code == 410
        assert c.get(url).status_code == 200
        sb.faults.set("slow=1:0.3")
        import time

        t = time.monotonic()
        assert c.get(f"{sb.graph_url}/domains").status_code == 200
        assert time.monotonic() - t >= 0.3
        sb.faults.set("")
    assert sb.faults.injected == {"unavailable": 1, "drop": 1, "gone": 1, "slow": 1}


def test_admin_endpoints(sandbox: SandboxServer) -> None:
    sb = sandbox
    with httpx.Client(verify=sb.ssl_context(), base_url=sb.base_url) as c:
        r = c.post("/_sandbox/faults", json={"spec": "429=0.5,slow=0.1:1", "seed": 9})
        assert r.status_code == 200 and r.json()["spec"] == "429=0.5:1,slow=0.1:1"
        assert c.post("/_sandbox/faults", json={"bogus": 1}).status_code == 400
        c.post("/_sandbox/faults", json={"spec": ""})
        before = sb.org.now()
        r = c.post("/_sandbox/advance", json={"hours": 24})
        assert r.status_code == 200 and sum(r.json()["activity"].values()) > 0
        assert (sb.org.now() - before).total_seconds() == 86400
        assert c.post("/_sandbox/advance", json={"hours": -1}).status_code == 400
        u = sb.org.generator.sellers[0]
        truth = c.get("/_sandbox/truth", params={"user": u.user_principal_name}).json()
        box = truth["mailboxes"][u.id]
        assert sorted(map(tuple, box["messages"])) == sorted(sb.org.message_truth(u.id))
        assert "Inbox" in box["folders"].values() and box["events"]
        assert c.post("/_sandbox/expire-delta-tokens", json={}).status_code == 200
        assert c.get("/_sandbox/stats").json()["mailboxes"] == len(sb.org.mailboxes)
