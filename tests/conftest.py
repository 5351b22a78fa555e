"""Shared fixtures: engines on SQLite and PostgreSQL, a tenant config, a stub token source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from relinsights.config import TenantConfig, parse_config
from relinsights.db import make_engine, migrate

PG_URL = os.environ.get("RELINSIGHTS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _pg_available() -> str | None:
    try:
        with create_engine(PG_URL).connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}"


_PG_REASON = _pg_available()


def fresh_pg_engine() -> Engine:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    admin.dispose()
    return make_engine(PG_URL)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        if _PG_REASON:
            pytest.skip(_PG_REASON)
        eng = fresh_pg_engine()
    else:
        eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def tenant_config(**overrides: Any) -> TenantConfig:
    base: dict[str, Any] = {
        "name": "contoso",
        "tenant_id": "11111111-2222-3333-4444-555555555555",
        "client_id": "66666666-7777-8888-9999-000000000000",
        "credential": {"secret_env": "RELINSIGHTS_TEST_SECRET"},
        "graph_url": "https://graph.test/v1.0",
        "internal_domains": ["contoso.com"],
        "sync": {"page_size": 10},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "credential":
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return parse_config({"tenant": [base]}).tenants[0]


class StubTokens:
    """Stands in for MSAL in tests whose edge is Graph's HTTP (MSAL itself is tested against the sandbox)."""

    def __init__(self) -> None:
        self.issued = 0
        self.invalidated = 0

    async def token(self) -> str:
        self.issued += 1
        return f"token-{self.issued}"

    def invalidate(self) -> None:
        self.invalidated += 1
