"""`SandboxServer`: the sandbox's HTTPS server (uvicorn in a background thread, a local CA from trustme).

    with SandboxServer(size="small", seed=7) as sb:
        app = msal.ConfidentialClientApplication(sb.client_id, authority=sb.authority,
                  client_credential=sb.client_secret, verify=str(sb.ca_path), instance_discovery=False)
        ...  # Graph at sb.graph_url, truth in sb.org
        ...  # Dataverse at sb.dataverse_api_url (tokens for sb.dataverse_scope), its tables in sb.crm

Works from sync tests and from asyncio (`async with`), since the server has its own thread and loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Router

from . import ids
from .admin import Admin
from .crm_seed import attach_crm
from .dataverse_api import DataverseApi
from .dataverse_limits import DataverseSettings
from .faults import FaultInjector, FaultSpec
from .graph_api import CanonicalPaths, GraphApi, GraphSettings
from .identity import DATAVERSE_AUDIENCE, GRAPH_AUDIENCE, Identity, generate_app
from .model import Org

GRAPH_PATH = "/graph/v1.0"
DATAVERSE_PATH = "/dataverse"  # the organisation root; the Web API is under /api/data/v9.2
CONFIG_NAME = "relinsights.toml"


class _QuietDrops(logging.Filter):
    """Injected 'drop' faults make uvicorn log an error per dropped connection; that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "without completing response" not in msg and "graceful shutdown exceeded" not in msg


class SandboxServer:
    def __init__(
        self,
        org: Org | None = None,
        *,
        size: str = "small",
        seed: int = 1,
        faults: str | FaultSpec | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: str | Path | None = None,
        token_lifetime: int = 3599,
        granted_permissions: set[str] | None = None,
        graph_settings: GraphSettings | None = None,
        dataverse_settings: DataverseSettings | None = None,
    ) -> None:
        if org is None:
            from .generator import generate_org

            org = generate_org(size, seed=seed)
        self.org = org
        self.host, self._port = host, port
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="relinsights-sandbox-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.app_registration = generate_app(
            client_id=ids.guid(org.seed, "app", "relinsights"),
            display_name="relinsights (sandbox)",
            secret="sbx8Q~" + ids.opaque_token(org.seed, "client-secret"),
            service_principal_id=ids.guid(org.seed, "sp", "relinsights"),
        )
        if granted_permissions is not None:
            self.app_registration.granted = set(granted_permissions)
        self.faults = FaultInjector(faults, seed=seed)
        self.identity = Identity(
            org.tenant_id,
            self.app_registration,
            tenant_aliases=org.verified_domains,
            token_lifetime=token_lifetime,
            outage=lambda: self.faults.roll("token_outage"),
        )
        self.graph = GraphApi(org, self.identity, self.faults, graph_settings)
        # The CRM tables live on the org (org.crm.dataverse) and change with Org.advance.
        self.crm = attach_crm(
            org,
            app_client_id=self.app_registration.client_id,
            app_object_id=self.app_registration.service_principal_id,
            app_name=self.app_registration.display_name,
        )
        self.dataverse = DataverseApi(org, self.identity, self.faults, self.crm, dataverse_settings)
        self.admin = Admin(org, self.faults)
        self.app = Starlette(
            routes=[
                *self.admin.routes(),
                *self.dataverse.admin_routes(),
                Mount(GRAPH_PATH, app=CanonicalPaths(Router(self.graph.routes()))),
                Mount(DATAVERSE_PATH, app=Router(self.dataverse.routes())),
                *self.identity.routes(),
            ]
        )
        self.ca = trustme.CA(organization_name="relinsights sandbox CA")
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> SandboxServer:
        if self._server is not None:
            return self
        tls_dir = self.state_dir / "tls"
        tls_dir.mkdir(exist_ok=True)
        cert = self.ca.issue_cert("127.0.0.1", "localhost", "::1")
        server_pem = tls_dir / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        os.chmod(server_pem, 0o600)
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without, headers and body go in two TLS records and Nagle +
        # delayed ACK add 40 ms to every response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._port))
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(server_pem),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
            access_log=False,
        )
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="relinsights-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> SandboxServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI's foreground mode)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ------------------------------------------------------------ what clients need

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self._port}"

    @property
    def authority(self) -> str:
        """MSAL authority: the base URL plus the tenant (pass instance_discovery=False)."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}{GRAPH_PATH}"

    @property
    def graph_scope(self) -> str:
        return f"{GRAPH_AUDIENCE}/.default"

    @property
    def dataverse_url(self) -> str:
        """The organisation URL (a tenant's https://ORG.crm.dynamics.com); the Web API is below it."""
        return f"{self.base_url}{DATAVERSE_PATH}"

    @property
    def dataverse_api_url(self) -> str:
        return f"{self.dataverse_url}/api/data/v9.2"

    @property
    def dataverse_scope(self) -> str:
        """Tokens for Dataverse name the organisation as their audience, not the sandbox's address."""
        return f"{DATAVERSE_AUDIENCE}/.default"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def tenant_id(self) -> str:
        return self.org.tenant_id

    @property
    def client_id(self) -> str:
        return self.app_registration.client_id

    @property
    def client_secret(self) -> str:
        return self.app_registration.secret

    @property
    def certificate_credential(self) -> dict[str, str]:
        """MSAL's certificate credential: {"private_key": pem, "thumbprint": sha1 hex}."""
        return self.app_registration.msal_certificate_credential()

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the sandbox CA (for httpx and friends)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def access_token(self, audience: str = GRAPH_AUDIENCE, lifetime: int | None = None) -> str:
        """A token minted directly (no HTTP), for tests that are not about authentication."""
        return self.identity.issue_token(self.app_registration, audience, lifetime=lifetime)

    def write_client_files(self, state_dir: str | Path) -> dict[str, Any]:
        """CA bundle, client secret (0600) and client certificate PEM with its key (0600) in `state_dir`;
        returns every value a daemon config needs."""
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True)
        ca = d / "sandbox-ca.pem"
        ca.write_bytes(self.ca.cert_pem.bytes())
        secret = d / "client-secret"
        _write_private(secret, self.client_secret + "\n")
        cert = d / "client-certificate.pem"
        _write_private(cert, self.app_registration.private_key_pem + self.app_registration.certificate_pem)
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "authority": self.base_url,
            "graph_url": self.graph_url,
            "graph_scope": self.graph_scope,
            "dataverse_url": self.dataverse_url,
            "dataverse_scope": self.dataverse_scope,
            "ca_bundle": str(ca),
            "secret_file": str(secret),
            "certificate": str(cert),
            "thumbprint": self.app_registration.thumbprint_sha1,
            "internal_domains": self.org.verified_domains(),
        }

    def write_daemon_config(
        self,
        state_dir: str | Path,
        *,
        credential: Literal["secret", "certificate"] = "certificate",
        name: str = "sandbox",
    ) -> Path:
        """A ready-to-use relinsights.toml pointing at this sandbox; validated with the daemon's loader."""
        from relinsights.config import load_config

        d = Path(state_dir).resolve()
        files = self.write_client_files(d)
        cred_key = "secret_file" if credential == "secret" else "certificate"
        text = "\n".join(
            [
                "# Written by `relinsights sandbox serve`: a tenant pointing at the local sandbox.",
                "[service]",
                f"state_dir = {_toml(str(d))}",
                "",
                "[database]",
                f"url = {_toml('sqlite:///' + str(d / 'relinsights.db'))}",
                "",
                "[[tenant]]",
                f"name = {_toml(name)}",
                f"tenant_id = {_toml(files['tenant_id'])}",
                f"client_id = {_toml(files['client_id'])}",
                f"authority = {_toml(files['authority'])}",
                f"graph_url = {_toml(files['graph_url'])}",
                f"graph_scope = {_toml(files['graph_scope'])}",
                f"dataverse_url = {_toml(files['dataverse_url'])}",
                f"dataverse_scope = {_toml(files['dataverse_scope'])}",
                f"ca_bundle = {_toml(files['ca_bundle'])}",
                "internal_domains = [" + ", ".join(_toml(x) for x in files["internal_domains"]) + "]",
                "",
                "[tenant.credential]",
                f"{cred_key} = {_toml(files[cred_key])}",
                "",
            ]
        )
        path = d / CONFIG_NAME
        path.write_text(text, encoding="utf-8")
        load_config(path)  # raises ConfigError if the daemon would refuse it
        return path


def _toml(value: str) -> str:
    import json

    return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
