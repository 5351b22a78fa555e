"""The Dataverse client at its HTTP edge (respx): paging, change tracking, one shared 429 pause, errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import respx

from conftest import StubTokens, tenant_config
from relinsights.crm.client import (
    ChangeTrackingExpired,
    DataverseClient,
    DataverseNotFound,
    DataversePermissionDenied,
    ThrottledTooLong,
)

BASE = "https://org.test/api/data/v9.2/"


def client(sleep: Any = None, **kw: Any) -> DataverseClient:
    async def no_sleep(_s: float) -> None:
        return None

    cfg = tenant_config(dataverse_url="https://org.test")
    return DataverseClient(cfg, StubTokens(), sleep=sleep or no_sleep, **kw)  # type: ignore[arg-type]


async def collect(c: DataverseClient, **kw: Any) -> list[Any]:
    return [p async for p in c.pages("contacts", ["contactid", "emailaddress1"], **kw)]


def test_paging_sends_odata_headers_and_follows_next_links() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("contacts").mock(
            side_effect=[
                httpx.Response(
                    200, json={"value": [{"contactid": "1"}], "@odata.nextLink": BASE + "contacts?$skiptoken=x"}
                ),
                httpx.Response(200, json={"value": [{"contactid": "2"}]}),
            ]
        )
        pages = asyncio.run(collect(client(), filter="statecode eq 0", page_size=10000))
    assert [r["contactid"] for p in pages for r in p.rows] == ["1", "2"]
    first = route.calls[0].request
    assert first.headers["Prefer"] == "odata.maxpagesize=5000"  # capped at Dataverse's maximum
    assert first.headers["OData-Version"] == "4.0" and first.headers["Authorization"].startswith("Bearer ")
    assert first.url.params["$select"] == "contactid,emailaddress1" and first.url.params["$filter"] == "statecode eq 0"
    assert route.calls[1].request.url.params["$skiptoken"] == "x"


def test_change_tracking_returns_rows_deletions_and_a_delta_link() -> None:
    body = {
        "@odata.deltaLink": BASE + "contacts?$deltatoken=9",
        "value": [
            {"contactid": "1", "emailaddress1": "ann@fabrikam.com"},
            {"@odata.context": BASE + "$metadata#contacts/$deletedEntity", "id": "2", "reason": "deleted"},
        ],
    }
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("contacts").mock(return_value=httpx.Response(200, json=body))
        [page] = asyncio.run(collect(client(), track_changes=True, filter="ignored in this mode"))
    assert page.rows == [{"contactid": "1", "emailaddress1": "ann@fabrikam.com"}] and page.deleted == ["2"]
    assert page.delta_link == BASE + "contacts?$deltatoken=9"
    req = route.calls[0].request
    assert "odata.track-changes" in req.headers["Prefer"] and "$filter" not in req.url.params


def test_expired_change_token_and_other_errors_are_typed() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("contacts").mock(
            return_value=httpx.Response(
                400, json={"error": {"code": "0x80044352", "message": "The specified version stamp has expired."}}
            )
        )
        with pytest.raises(ChangeTrackingExpired):
            asyncio.run(collect(client(), link=BASE + "contacts?$deltatoken=old"))
    with respx.mock(base_url=BASE) as mock:
        mock.get("contacts").mock(
            return_value=httpx.Response(403, json={"error": {"code": "0x80040220", "message": "no prvReadContact"}})
        )
        with pytest.raises(DataversePermissionDenied) as exc:
            asyncio.run(collect(client()))
        assert "security role" in exc.value.fix
    with respx.mock(base_url=BASE) as mock:
        mock.get("contacts").mock(
            return_value=httpx.Response(404, json={"error": {"code": "0x80060888", "message": "Resource not found"}})
        )
        with pytest.raises(DataverseNotFound):
            asyncio.run(collect(client()))


def test_429_pauses_the_whole_tenant_once_and_waits_retry_after() -> None:
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    c = client(sleep=fake_sleep)
    with respx.mock(base_url=BASE) as mock:
        mock.patch(url__regex=r".*contacts\(1\)").mock(
            side_effect=[
                httpx.Response(
                    429, headers={"Retry-After": "30"}, json={"error": {"code": "0x80072322", "message": "limit"}}
                ),
                httpx.Response(204),
            ]
        )
        mock.patch(url__regex=r".*contacts\(2\)").mock(return_value=httpx.Response(204))

        async def both() -> None:
            await c.upsert("contacts", "1", {"a": 1})
            # The second request starts while the tenant pause (set by the first) is still running.
            await c.upsert("contacts", "2", {"a": 2})

        t0 = time.monotonic()
        asyncio.run(both())
    # Both requests waited the one pause, though only the first was refused.
    assert len(sleeps) == 2 and all(s == pytest.approx(30, abs=0.5) for s in sleeps)
    assert time.monotonic() - t0 < 5 and c.throttled == 1


def test_throttling_beyond_the_limit_gives_up_with_a_named_error() -> None:
    c = client()
    c.max_throttle_wait = 10
    with respx.mock(base_url=BASE) as mock:
        mock.patch(url__regex=r".*contacts\(1\)").mock(
            return_value=httpx.Response(
                429, headers={"Retry-After": "6"}, json={"error": {"code": "x", "message": "y"}}
            )
        )
        with pytest.raises(ThrottledTooLong):
            asyncio.run(c.upsert("contacts", "1", {}))


def test_401_gets_a_fresh_token_and_conditional_writes_set_headers() -> None:
    c = client()
    with respx.mock(base_url=BASE) as mock:
        route = mock.patch(url__regex=r".*msdyn_contactkpiitems\(k\)").mock(
            side_effect=[httpx.Response(401), httpx.Response(204), httpx.Response(204)]
        )
        asyncio.run(c.upsert("msdyn_contactkpiitems", "k", {"msdyn_emailssent": 2}, update_only=True))
        asyncio.run(c.upsert("msdyn_contactkpiitems", "k", {"msdyn_emailssent": 2}, create_only=True))
    assert c.tokens.invalidated == 1  # type: ignore[attr-defined]
    assert route.calls[0].request.headers["Authorization"] != route.calls[1].request.headers["Authorization"]
    assert route.calls[1].request.headers["If-Match"] == "*" and route.calls[2].request.headers["If-None-Match"] == "*"


def test_dop_hint_bounds_parallelism() -> None:
    c = client(max_parallel=8)
    in_flight = {"now": 0, "max": 0}

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.01)
        in_flight["now"] -= 1
        return httpx.Response(204, headers={"x-ms-dop-hint": "2"})

    async def many() -> None:
        await c.upsert("contacts", "0", {})  # learns the hint
        await asyncio.gather(*(c.upsert("contacts", str(i), {}) for i in range(1, 12)))

    with respx.mock(base_url=BASE) as mock:
        mock.patch(url__regex=r".*contacts\(\d+\)").mock(side_effect=slow)
        asyncio.run(many())
    assert in_flight["max"] == 2
