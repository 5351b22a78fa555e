"""Fixtures for the sandbox tests: real HTTPS on loopback with the sandbox's own CA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relinsights.sandbox import SandboxServer

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "microsoft-examples"
SEED = 7


@pytest.fixture(autouse=True)
def _ca_from_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests (under MSAL) lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the `verify=` it is given.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[SandboxServer]:
    """One small org for tests that only read (shapes, models, identity)."""
    with SandboxServer(size="small", seed=SEED) as sb:
        yield sb


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh small org for tests that change it."""
    with SandboxServer(size="small", seed=SEED) as sb:
        yield sb


def graph_client(sb: SandboxServer, **headers: str) -> httpx.Client:
    return httpx.Client(
        verify=sb.ssl_context(),
        headers={"Authorization": f"Bearer {sb.access_token()}", **headers},
        timeout=30,
    )


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def pages(
    client: httpx.Client, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the end of a delta round; returns (every item, the deltaLink)."""
    items: list[dict[str, Any]] = []
    r = client.get(url, params=params, headers=headers)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        r = client.get(body["@odata.nextLink"], headers=headers)
