"""`relinsights sandbox import` and `serve --import/--scenario`: what a user types, end to end."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import msal
import pytest
from typer.testing import CliRunner

from relinsights.config import load_config
from relinsights.sandbox.cli import app

from .test_import_formats import write_maildir

WORKED_EXAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "worked-example.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    tgz = root / "mail.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(write_maildir(root / "src"), arcname="maildir")
    return tgz


def test_import_prints_the_report_and_writes_it(archive: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["import", str(archive), "--internal-domain", "example.com", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "mailboxes  2 of 2 in the archive -> 2 users" in r.output
    assert "1 files with bad dates, 2 unparseable, 1 calendar items" in r.output
    assert "bad date   maildir/alice-s/discussion_threads/8.: 'Mon, 31 Dec 1979 16:00:00 -0800 (PST)'" in r.output
    report = json.loads((tmp_path / "import-report.json").read_text())
    assert report["emails"] == 9 and report["mailboxes"]["bob-j"]["owner"] == "bob.jones@example.com"
    only = runner.invoke(app, ["import", str(archive), "--internal-domain", "example.com", "--users", "bob-j"])
    assert only.exit_code == 0 and "mailboxes  1 of 2 in the archive -> 1 users" in only.output


def test_import_mistakes_are_named(archive: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["import", str(archive)])
    assert r.exit_code == 2 and "--internal-domain" in r.output
    r = runner.invoke(app, ["import", str(tmp_path / "nope"), "--internal-domain", "example.com"])
    assert r.exit_code == 2 and "no such file or directory" in r.output
    r = runner.invoke(app, ["import", str(archive), "--internal-domain", "example.com", "--users", "zed-z"])
    assert r.exit_code == 2 and "no such mailbox in the archive: zed-z" in r.output


def test_serve_takes_one_source(archive: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["serve", "--org", "small", "--scenario", str(WORKED_EXAMPLE)])
    assert r.exit_code == 2 and "give one of --org, --import and --scenario" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[tenant]\ndomains = ["contoso.com"]\nnow = 2026-03-10T12:00:00Z\n')
    r = runner.invoke(app, ["serve", "--scenario", str(bad), "--state-dir", str(tmp_path / "st")])
    assert r.exit_code == 2 and "scenario error in" in r.output and "users: required key is missing" in r.output


@pytest.mark.parametrize("source", ["import", "scenario"])
def test_serve_an_archive_or_a_scenario(source: str, archive: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = (
        ["--import", str(archive), "--internal-domain", "example.com", "--rebase"]
        if source == "import"
        else ["--scenario", str(WORKED_EXAMPLE)]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from relinsights.sandbox.cli import app; app()",
            "serve",
            *args,
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "sandbox listening on https://127.0.0.1:" in text, text + (proc.stderr.read() if proc.poll() else "")
        t = load_config(state / "relinsights.toml").tenants[0]
        if source == "import":
            assert "2 mailboxes, 11 messages" in text
            # Rebased: the archive's newest mail is from now, so the default lookback covers its 4 days.
            assert t.sync.lookback_days == 365
            assert json.loads((state / "import-report.json").read_text())["users"] == 2
            assert set(t.internal_domains) >= {"example.com", "ect.example.com"}
        else:
            assert "3 mailboxes, 4 messages, 4 events" in text and t.internal_domains[0] == "contoso.com"
        app_ = msal.ConfidentialClientApplication(
            t.client_id,
            authority=f"{t.authority}/{t.tenant_id}",
            verify=str(t.ca_bundle),
            instance_discovery=False,
            client_credential={
                "private_key": t.credential.certificate.read_text(),
                "thumbprint": _thumb(t.credential.certificate),
            },
        )
        token = app_.acquire_token_for_client(scopes=[t.graph_token_scope])["access_token"]
        r = httpx.get(
            f"{t.graph_url}/users",
            params={"$select": "mail"},
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(t.ca_bundle)),
        )
        mails = sorted(u["mail"] for u in r.json()["value"])
        assert mails == (
            ["alice.smith@example.com", "bob.jones@example.com"]
            if source == "import"
            else ["bob@contoso.com", "carl@contoso.com", "dan@contoso.com"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _thumb(pem_path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem_path.read_bytes()).fingerprint(hashes.SHA1()).hex()


def test_an_old_archive_widens_the_lookback_and_says_how_far_it_reaches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from relinsights.sandbox.cli import _cover_archive
    from relinsights.sandbox.scenario import load_scenario
    from relinsights.sandbox.server import SandboxServer

    sb = SandboxServer(org=load_scenario(WORKED_EXAMPLE).org, state_dir=tmp_path / "sb")
    recent = sb.write_daemon_config(tmp_path / "recent")
    _cover_archive(recent, datetime.now(UTC) - timedelta(days=800))
    assert load_config(recent).tenants[0].sync.lookback_days == 802
    old = sb.write_daemon_config(tmp_path / "old")
    _cover_archive(old, datetime(2000, 12, 4, tzinfo=UTC))
    assert load_config(old).tenants[0].sync.lookback_days == 1825 - 90
    assert "import with --rebase" in capsys.readouterr().err
