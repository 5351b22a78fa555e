"""`relinsights run` as a real process against the sandbox: READY over NOTIFY_SOCKET, sync, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from relinsights.db import make_engine
from relinsights.db.models import Mailbox, Message
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
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
