"""Several daemons on one PostgreSQL database share the work: every mailbox synced, none by two at once,
and a daemon killed mid-sync has its mailboxes finished by the others once its leases expire."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from conftest import _PG_REASON, PG_URL, fresh_pg_engine
from relinsights.db import migrate
from relinsights.db.models import Mailbox, WorkLease
from relinsights.sandbox.server import SandboxServer
from test_e2e_sandbox import assert_matches_truth, window_of

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(bool(_PG_REASON), reason=_PG_REASON or "")]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=5, state_dir=tmp_path / "sandbox") as server:
        yield server


@pytest.fixture
def pg() -> Iterator[Engine]:
    engine = fresh_pg_engine()
    migrate(engine)
    yield engine
    engine.dispose()


def replica_config(sandbox: SandboxServer, directory: Path) -> Path:
    path = sandbox.write_daemon_config(directory, credential="secret")
    text = path.read_text()
    lines = [f"url = {json.dumps(PG_URL)}" if line.startswith("url = ") else line for line in text.splitlines()]
    # The daemons count their lookback from the wall clock; the sandbox lives in its own time: reach back.
    path.write_text("\n".join(lines) + "\n[tenant.sync]\ninterval_minutes = 0.1\nlease_seconds = 12\nlookback_days = 1700\n")
    return path


def start(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return subprocess.Popen(
        [sys.executable, "-m", "relinsights", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def mailboxes_ok(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(Mailbox.status == "ok")).scalar_one())


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stop_all(procs: list[subprocess.Popen[str]]) -> list[str]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=40)
        outs.append(out)
    return outs


def intervals(outputs: list[str]) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """mailbox -> [(claimed, released, owner)] from the daemons' JSON log lines."""
    open_: dict[tuple[str, str], datetime] = {}
    out: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for text in outputs:
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            key = (rec.get("mailbox", ""), rec.get("owner", ""))
            at = datetime.fromisoformat(rec["timestamp"])
            if rec["event"] == "sync.mailbox_claimed":
                open_[key] = at
            elif rec["event"] == "sync.mailbox_released" and key in open_:
                out.setdefault(key[0], []).append((open_.pop(key), at, key[1]))
    return out


def test_three_daemons_share_the_mailboxes_without_overlap(sandbox: SandboxServer, pg: Engine, tmp_path: Path) -> None:
    config = replica_config(sandbox, tmp_path / "state")
    expected = sum(1 for u in sandbox.org.users.values() if u.account_enabled and u.id in sandbox.org.mailboxes)
    procs = [start(config) for _ in range(3)]
    try:
        wait_for(lambda: mailboxes_ok(pg) >= expected, 90, f"{expected} mailboxes synced")
        # Another round of every daemon (their interval is 6 s), run concurrently: the first daemon up may have
        # synced every mailbox of the first round alone, before the others had started (a loaded machine).
        time.sleep(9)
    finally:
        outs = stop_all(procs)
    assert all(p.returncode == 0 for p in procs), outs
    spans = intervals(outs)
    assert len(spans) == sum(1 for u in sandbox.org.users.values() if u.account_enabled)  # incl. no-mailbox users
    owners = {o for runs in spans.values() for _, _, o in runs}
    assert len(owners) >= 2, "the work was not shared"
    for mailbox, runs in spans.items():
        runs.sort()
        for (_s1, e1, o1), (s2, _e2, o2) in itertools.pairwise(runs):
            assert s2 >= e1, f"{mailbox} synced by {o1} and {o2} at once"
    assert_matches_truth(sandbox, pg, window_of(pg))


def test_a_killed_daemon_is_taken_over_after_its_lease_expires(
    sandbox: SandboxServer, pg: Engine, tmp_path: Path
) -> None:
    config = replica_config(sandbox, tmp_path / "state")
    expected = sum(1 for u in sandbox.org.users.values() if u.account_enabled and u.id in sandbox.org.mailboxes)
    victim = start(config)

    def holds_a_lease() -> bool:
        with pg.connect() as conn:
            return bool(conn.execute(select(func.count()).where(WorkLease.owner.is_not(None))).scalar_one())  # type: ignore[union-attr]

    wait_for(holds_a_lease, 60, "the first daemon to claim a mailbox")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    survivor = start(config)
    try:
        wait_for(lambda: mailboxes_ok(pg) >= expected, 90, "the survivor to finish every mailbox")
    finally:
        outs = stop_all([survivor])
    assert survivor.returncode == 0, outs
    assert_matches_truth(sandbox, pg, window_of(pg))
