"""The daemon's sync end to end against the sandbox: HTTPS on loopback, real MSAL, real SQLite/PostgreSQL.

After every round the database must equal the sandbox's truth exactly: the same messages in the same
folders, the same events in the calendar window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from relinsights.config import load_config
from relinsights.db.models import Event, Mailbox, Message
from relinsights.graph.sync import sync_tenant
from relinsights.sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=7, state_dir=tmp_path_factory.mktemp("sandbox")) as server:
        yield server


def sync(sandbox: SandboxServer, engine: Engine, cfg_dir: Path, credential: str = "certificate") -> Any:
    cfg = load_config(sandbox.write_daemon_config(cfg_dir, credential=credential))  # type: ignore[arg-type]

    async def no_wait(_s: float) -> None:
        return None

    return asyncio.run(sync_tenant(engine, cfg.tenants[0], sleep=no_wait, now=sandbox.org.now))


def db_truth(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        mbs = dict(conn.execute(select(Mailbox.id, Mailbox.user_id)).all())
        msgs = conn.execute(select(Message.mailbox_pk, Message.graph_id, Message.folder_graph_id)).all()
        evs = conn.execute(select(Event.mailbox_pk, Event.graph_id, Event.start, Event.is_cancelled)).all()
    out: dict[str, Any] = {}
    for pk, gid, folder in msgs:
        out.setdefault(mbs[pk], {"messages": set(), "events": {}})["messages"].add((gid, folder))
    for pk, gid, start, cancelled in evs:
        out.setdefault(mbs[pk], {"messages": set(), "events": {}})["events"][gid] = (start, cancelled)
    return out


def assert_matches_truth(sandbox: SandboxServer, engine: Engine, window: tuple[datetime, datetime]) -> None:
    # scope.mode = "all" means all *enabled* users; the sandbox's truth lists every mailbox.
    truth = {
        uid: t
        for uid, t in sandbox.org.truth(window=window)["mailboxes"].items()
        if sandbox.org.users[uid].account_enabled
    }
    got = db_truth(engine)
    assert set(got) <= set(truth)
    for uid, t in truth.items():
        mine = got.get(uid, {"messages": set(), "events": {}})
        assert mine["messages"] == {tuple(x) for x in t["messages"]}, uid
        assert set(mine["events"]) == set(t["events"]), uid


def window_of(engine: Engine) -> tuple[datetime, datetime]:
    from relinsights.db.models import SyncCursor

    with engine.connect() as conn:
        start, end = conn.execute(
            select(SyncCursor.window_start, SyncCursor.window_end).where(SyncCursor.kind == "calendar").limit(1)
        ).one()
    return start.astimezone(UTC), end.astimezone(UTC)


def test_first_sync_and_incremental_rounds_equal_the_sandbox_truth(
    sandbox: SandboxServer, engine: Engine, tmp_path: Path
) -> None:
    report = sync(sandbox, engine, tmp_path)
    assert report.status == "ok", report.error
    assert report.messages_added > 100 and report.events_added > 10
    # Users without an Exchange mailbox are reported, not failed.
    assert set(report.mailboxes.values()) <= {"ok", "no_mailbox"} and "ok" in report.mailboxes.values()
    assert_matches_truth(sandbox, engine, window_of(engine))
    for _ in range(2):
        sandbox.org.advance(timedelta(days=2))
        report = sync(sandbox, engine, tmp_path, credential="secret")
        assert report.status == "ok", report.error
        assert_matches_truth(sandbox, engine, window_of(engine))


def test_faults_never_corrupt_the_database(sandbox: SandboxServer, sqlite_engine: Engine, tmp_path: Path) -> None:
    sync(sandbox, sqlite_engine, tmp_path)
    sandbox.org.advance(timedelta(days=1))
    sandbox.faults.set("429=0.15,503=0.1,slow=0.05:0.2,drop=0.05,410=0.05,token_outage=0.05", seed=3)
    try:
        for _ in range(3):
            sync(sandbox, sqlite_engine, tmp_path)
    finally:
        sandbox.faults.set("", seed=3)
    report = sync(sandbox, sqlite_engine, tmp_path)
    assert report.status == "ok" and all(s in ("ok", "no_mailbox") for s in report.mailboxes.values())
    assert_matches_truth(sandbox, sqlite_engine, window_of(sqlite_engine))


def test_a_refused_credential_is_named_and_other_tenants_go_on(
    sandbox: SandboxServer, sqlite_engine: Engine, tmp_path: Path
) -> None:
    good = load_config(sandbox.write_daemon_config(tmp_path / "good", credential="secret")).tenants[0]  # type: ignore[arg-type]
    (tmp_path / "bad-secret").write_text("not-the-secret\n")
    bad = good.model_copy(
        update={
            "name": "revoked",
            "credential": good.credential.model_copy(update={"secret_file": tmp_path / "bad-secret"}),
        }
    )

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                sync_tenant(sqlite_engine, bad, now=sandbox.org.now),
                sync_tenant(sqlite_engine, good, now=sandbox.org.now),
            )
        )

    r_bad, r_good = asyncio.run(both())
    assert r_bad.status == "error" and "client secret rejected" in (r_bad.error or "")
    assert "create a new client secret" in (r_bad.error or "")
    assert "not-the-secret" not in (r_bad.error or "")
    assert r_good.status == "ok" and r_good.messages_added > 100
    from relinsights.db.models import Tenant

    with sqlite_engine.connect() as conn:
        rows = dict(conn.execute(select(Tenant.name, Tenant.status)).all())
    assert rows == {"revoked": "error", "sandbox": "ok"}
