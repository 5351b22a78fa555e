"""`relinsights doctor` against the sandbox: all checks pass; a missing permission is named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from relinsights.cli import app
from relinsights.sandbox.server import SandboxServer


def doctor(sandbox: SandboxServer, tmp_path: Path) -> tuple[int, list[dict]]:
    config = sandbox.write_daemon_config(tmp_path)
    res = CliRunner().invoke(app, ["doctor", "--json", "--config", str(config)])
    return res.exit_code, json.loads(res.output)


def test_doctor_passes_against_a_healthy_sandbox(tmp_path: Path) -> None:
    with SandboxServer(size="small", seed=2, state_dir=tmp_path / "sb") as sandbox:
        code, checks = doctor(sandbox, tmp_path / "cfg")
    failed = [c for c in checks if c["level"] == "fail"]
    assert code == 0 and not failed, failed
    names = {c["name"] for c in checks}
    [memory] = [c for c in checks if c["name"] == "KPI runs keep freed memory"]
    assert memory["level"] == "ok" and memory["detail"].startswith("under 900 MiB resident (polars' jemalloc 5.")
    assert {"database and migrations", "certificate", "token for Graph", "clock skew",
            "Graph permission User.Read.All", "mailbox scope", "Exchange scoping"} <= names
    assert any(n.startswith("Graph permission Mail.ReadBasic.All") for n in names)
    assert any(n.startswith("Graph permission Calendars.Read") for n in names)


def test_doctor_names_a_missing_permission(tmp_path: Path) -> None:
    granted = {"User.Read.All", "Calendars.Read", "GroupMember.Read.All", "Domain.Read.All"}
    with SandboxServer(size="small", seed=2, state_dir=tmp_path / "sb", granted_permissions=granted) as sandbox:
        code, checks = doctor(sandbox, tmp_path / "cfg")
    assert code == 1
    [mail] = [c for c in checks if c["name"].startswith("Graph permission Mail.ReadBasic.All")]
    assert mail["level"] == "fail" and "grant the application permission Mail.ReadBasic.All" in mail["detail"]
    assert all(c["level"] != "fail" for c in checks if "Calendars.Read" in c["name"])
