"""`relinsights run` as a real process against the sandbox: READY over NOTIFY_SOCKET, sync, compute,
write-back, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from relinsights.cli import app
from relinsights.db import make_engine
from relinsights.db.models import KpiSnapshot, Mailbox, Message, WritebackRun
from relinsights.sandbox.server import SandboxServer


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=11, state_dir=tmp_path / "sandbox") as server:
        yield server


def start(config: Path, notify: Path | None, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if notify:
        env["NOTIFY_SOCKET"] = str(notify)
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "relinsights", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def receive(sock: socket.socket, want: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if want in msg:
            return got
    raise AssertionError(f"no {want!r} from the daemon within {timeout}s; got {got}")


def wait_for_writeback(engine: Engine, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(select(WritebackRun).order_by(WritebackRun.id.desc())).first()  # type: ignore[union-attr]
        if row is not None:
            return row
        time.sleep(0.5)
    raise AssertionError(f"the daemon wrote no KPIs back within {timeout}s")


def assert_written_rows_equal_the_snapshots(sandbox: SandboxServer, engine: Engine) -> None:
    with engine.connect() as conn:
        latest = conn.execute(select(func.max(KpiSnapshot.as_of))).scalar_one()
        snapshots = conn.execute(
            select(KpiSnapshot.entity, KpiSnapshot.record_id, KpiSnapshot.payload).where(KpiSnapshot.as_of == latest)
        ).all()
    kpi = sandbox.crm.kpi_rows()
    assert len(snapshots) > 20
    for entity, record_id, payload in snapshots:
        p = json.loads(payload)
        [row] = [r for r in kpi[f"msdyn_{entity}kpiitems"].values() if r[f"_msdyn_{entity}id_value"] == record_id]
        assert (row["msdyn_emailssent"], row["msdyn_emailsreceived"], row["msdyn_meetingssent"]) == (
            p["emails_sent"],
            p["emails_received"],
            p["meetings_sent"],
        )
        assert row["msdyn_relationshiphealthscorevalue"] == (p["health"] or {}).get("score")


def test_daemon_reports_ready_syncs_pings_watchdog_and_stops_on_sigterm(sandbox: SandboxServer, tmp_path: Path) -> None:
    config = sandbox.write_daemon_config(tmp_path / "state", credential="secret")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(config.read_text().replace("[service]\n", f'[service]\nhttp_listen = "127.0.0.1:{port}"\n', 1))
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    proc = start(config, notify, {"WATCHDOG_USEC": "1000000"})
    try:
        receive(sock, "READY=1", 30)
        receive(sock, "WATCHDOG=1", 5)
        engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'relinsights.db'}")
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.execute(select(func.count()).where(Mailbox.status == "ok")).scalar_one()
                n = conn.execute(select(func.count()).select_from(Message)).scalar_one()
            if done >= 8 and n > 500:
                break
            time.sleep(0.5)
        assert done >= 8, "the daemon did not sync the sandbox's mailboxes"
        written = wait_for_writeback(engine, 90)
        assert written.status == "ok" and written.written > 0 and written.failed == 0
        assert_written_rows_equal_the_snapshots(sandbox, engine)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'relinsights_mailboxes{status="ok",tenant="sandbox"}' in metrics
        assert "relinsights_sync_lag_seconds{" in metrics and 'relinsights_requests_total{service="graph"' in metrics
        # A second daemon on the same SQLite database refuses to start, saying why.
        second = start(config, None)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 1 and "SQLite allows one daemon" in out
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert time.monotonic() - t0 < 30 and "daemon.stopped" in out
        # Nothing changed since the daemon's write-back: a second run writes nothing.
        again = CliRunner().invoke(app, ["writeback", "--once", "--json", "--config", str(config)])
        [report] = json.loads(again.stdout)
        assert report["rows_written"] == 0 and report["skipped"] == written.written and report["status"] == "ok"
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
