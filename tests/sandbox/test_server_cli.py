"""SandboxServer from asyncio, the client files it writes, and `relinsights sandbox serve` end to end."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msal

from relinsights.config import load_config
from relinsights.sandbox import SandboxServer


async def test_usable_from_asyncio(tmp_path: Path) -> None:
    async with SandboxServer(size="small", seed=5, state_dir=tmp_path / "sb") as sb:
        async with httpx.AsyncClient(verify=sb.ssl_context()) as c:
            r = await c.get(f"{sb.graph_url}/domains", headers={"Authorization": f"Bearer {sb.access_token()}"})
        assert r.status_code == 200
    assert (tmp_path / "sb").exists()  # a given state dir is kept


def test_client_files_and_daemon_config(tmp_path: Path) -> None:
    with SandboxServer(size="small", seed=5) as sb:
        files = sb.write_client_files(tmp_path)
        for key in ("secret_file", "certificate"):
            assert stat.S_IMODE(os.stat(files[key]).st_mode) == 0o600
        assert Path(files["secret_file"]).read_text().strip() == sb.client_secret
        for credential in ("certificate", "secret"):
            cfg = load_config(sb.write_daemon_config(tmp_path, credential=credential))  # type: ignore[arg-type]
            t = cfg.tenants[0]
            assert (t.tenant_id, t.client_id, t.graph_url, t.authority) == (
                sb.tenant_id,
                sb.client_id,
                sb.graph_url,
                sb.base_url,
            )
            assert t.graph_token_scope == "https://graph.microsoft.com/.default"
            assert "contoso.com" in t.internal_domains and t.ca_bundle and t.ca_bundle.exists()
            assert cfg.database_url.startswith("sqlite:///") and str(tmp_path) in cfg.database_url
        # the written certificate file works as an MSAL credential
        pem = Path(files["certificate"]).read_text()
        app = msal.ConfidentialClientApplication(
            t.client_id,
            authority=f"{t.authority}/{t.tenant_id}",
            verify=str(t.ca_bundle),
            instance_discovery=False,
            client_credential={"private_key": pem, "thumbprint": files["thumbprint"]},
        )
        assert "access_token" in app.acquire_token_for_client(scopes=[t.graph_token_scope])


def test_cli_serve_writes_a_working_config(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from relinsights.sandbox.cli import app; app()",
            "serve",
            "--org",
            "small",
            "--seed",
            "4",
            "--state-dir",
            str(state),
            "--faults",
            "slow=0.0:1",
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
        cfg = load_config(state / "relinsights.toml")
        t = cfg.tenants[0]
        assert t.credential.certificate is not None
        pem = t.credential.certificate.read_text()
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        thumb = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()
        app = msal.ConfidentialClientApplication(
            t.client_id,
            authority=f"{t.authority}/{t.tenant_id}",
            verify=str(t.ca_bundle),
            instance_discovery=False,
            client_credential={"private_key": pem, "thumbprint": thumb},
        )
        token = app.acquire_token_for_client(scopes=[t.graph_token_scope])["access_token"]
        r = httpx.get(
            f"{t.graph_url}/users",
            params={"$filter": "accountEnabled eq true", "$select": "id,mail"},
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(t.ca_bundle)),
        )
        assert r.status_code == 200 and r.json()["value"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
