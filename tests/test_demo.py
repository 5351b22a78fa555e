"""`relinsights demo`: the README's first command, end to end against the in-process sandbox."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from relinsights.cli import app


def test_demo_syncs_the_sandbox_and_leaves_a_usable_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--dir", str(tmp_path / "d"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "synced" in res.output
    assert "coldest relationships" in res.output and "healthiest relationships" in res.output
    assert "mirrored" in res.output and "computed the KPIs of" in res.output
    flat = " ".join(res.output.split())  # rich wraps long lines at the terminal width
    assert re.search(r"wrote [1-9]\d* rows to 10 Dataverse KPI tables \(0 failed\)", flat), res.output
    index = tmp_path / "d" / "report" / "index.html"
    assert f"open {index}" in res.output and index.exists()
    assert len(list((tmp_path / "d" / "report" / "sandbox").glob("*.html"))) > 40  # the overview and every record
    config = tmp_path / "d" / "relinsights.toml"
    assert config.exists() and (tmp_path / "d" / "relinsights.db").exists()
    status = runner.invoke(app, ["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    import json

    rows = json.loads(status.output)["mailboxes"]
    assert rows and all(r["status"] in ("ok", "no_mailbox") for r in rows)
    assert sum(r["messages"] for r in rows) > 100
