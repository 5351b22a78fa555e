"""App-only tokens from MSAL, one ConfidentialClientApplication per tenant and resource.

Tokens are cached in memory, refreshed a few minutes before they expire, dropped on a 401, and never
logged. MSAL is synchronous (it uses `requests`), so acquisition runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import msal.exceptions
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relinsights.config import TenantConfig

# Refresh this long before expiry, so no request ever leaves with a token about to lapse.
REFRESH_MARGIN_S = 300
TOKEN_ATTEMPTS = 4
TOKEN_RETRY_BASE_S = 0.5
_MICROSOFT_AUTHORITY_HOSTS = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
}


class CredentialError(Exception):
    """The tenant's credential cannot be read or is refused; `fix` says what the admin should do."""

    def __init__(self, message: str, fix: str):
        self.fix = fix
        super().__init__(f"{message}; {fix}")


class TokenEndpointUnavailable(CredentialError):
    """The token endpoint did not answer usefully (network, 5xx, 429): transient, retried."""


@dataclass(frozen=True)
class CertificateInfo:
    thumbprint_sha1: str
    thumbprint_sha256: str
    not_after: datetime
    subject: str


def read_certificate(path: Path, password: bytes | None = None) -> tuple[str, CertificateInfo]:
    """Read a PEM holding the private key and the certificate; return the key PEM and the cert's facts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(
            f"cannot read certificate file {path}: {exc.strerror}",
            "check credential.certificate and that the service user may read it",
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise CredentialError(
            f"no usable private key in {path} ({exc})",
            "the PEM must hold the unencrypted private key (or set certificate_password_env) and the certificate",
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CredentialError(
            f"no certificate in {path}", "append the certificate registered on the app to the PEM file"
        ) from None
    der = cert.public_bytes(serialization.Encoding.DER)
    info = CertificateInfo(
        thumbprint_sha1=hashlib.sha1(der).hexdigest(),
        thumbprint_sha256=hashlib.sha256(der).hexdigest(),
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, info


def load_client_credential(tenant: TenantConfig) -> tuple[str | dict[str, str], CertificateInfo | None]:
    """The MSAL client_credential for a tenant, read from the certificate file, secret file or environment."""
    cred = tenant.credential
    if cred.certificate is not None:
        password = None
        if cred.certificate_password_env:
            pw = os.environ.get(cred.certificate_password_env)
            if pw is None:
                raise CredentialError(
                    f"environment variable {cred.certificate_password_env} is not set",
                    "set it (systemd: LoadCredential / Environment) or remove certificate_password_env",
                )
            password = pw.encode()
        key_pem, info = read_certificate(cred.certificate, password)
        if info.not_after <= datetime.now(UTC):
            raise CredentialError(
                f"certificate {cred.certificate} expired on {info.not_after:%Y-%m-%d}",
                "upload a new certificate to the app registration and point credential.certificate at it",
            )
        return {"private_key": key_pem, "thumbprint": info.thumbprint_sha1}, info
    if cred.secret_file is not None:
        try:
            secret = cred.secret_file.read_text().strip()
        except OSError as exc:
            raise CredentialError(
                f"cannot read secret file {cred.secret_file}: {exc.strerror}",
                "check credential.secret_file and that the service user may read it",
            ) from None
        if not secret:
            raise CredentialError(f"secret file {cred.secret_file} is empty", "write the client secret into it")
        return secret, None
    assert cred.secret_env is not None
    secret = os.environ.get(cred.secret_env, "").strip()
    if not secret:
        raise CredentialError(
            f"environment variable {cred.secret_env} is empty or not set",
            "export the client secret in it, or use secret_file / certificate",
        )
    return secret, None


def explain_msal_error(result: dict[str, Any], resource: str) -> CredentialError:
    """Turn MSAL's error dict into a named problem with its fix (never echoing the secret)."""
    codes = result.get("error_codes") or []
    desc = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
    err = str(result.get("error", "unknown_error"))
    if 7000215 in codes or 7000222 in codes:
        return CredentialError(
            f"client secret rejected ({desc})", "create a new client secret and update the secret file"
        )
    if 700027 in codes or 700024 in codes:
        return CredentialError(
            f"certificate assertion rejected ({desc})",
            "upload the certificate (public part) to the app registration, or check the clock",
        )
    if 700016 in codes or err == "unauthorized_client":
        return CredentialError(f"application not found in the tenant ({desc})", "check client_id and tenant_id")
    if 90002 in codes or 900023 in codes:
        return CredentialError(f"tenant not found ({desc})", "check tenant_id")
    if err == "invalid_scope" or 500011 in codes:
        return CredentialError(
            f"scope for {resource} refused ({desc})",
            "check the resource URL; for Dataverse, add the app as an application user in the environment",
        )
    return CredentialError(
        f"token request for {resource} failed: {err} ({desc})", "check tenant_id, client_id and the credential"
    )


class _PinnedCASession(requests.Session):
    """requests lets REQUESTS_CA_BUNDLE override a session's own CA bundle; a configured bundle must win."""

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        settings["verify"] = self.verify
        return settings


def _session(tenant: TenantConfig) -> requests.Session:
    if tenant.ca_bundle is None:
        return requests.Session()
    session = _PinnedCASession()
    session.verify = str(tenant.ca_bundle)
    return session


class TokenSource:
    """Tokens for one tenant and one resource scope, cached and refreshed early."""

    def __init__(self, tenant: TenantConfig, scope: str, app: msal.ConfidentialClientApplication | None = None):
        self.tenant = tenant
        self.scope = scope
        self._app = app
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self.certificate: CertificateInfo | None = None

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            credential, self.certificate = load_client_credential(self.tenant)
            host = urlsplit(self.tenant.authority).hostname or ""
            self._app = msal.ConfidentialClientApplication(
                self.tenant.client_id,
                authority=f"{self.tenant.authority}/{self.tenant.tenant_id}",
                client_credential=credential,
                http_client=_session(self.tenant),
                # Instance discovery asks login.microsoftonline.com about the authority: only for its own hosts.
                instance_discovery=host in _MICROSOFT_AUTHORITY_HOSTS,
                timeout=30,
                token_cache=msal.TokenCache(),
            )
        return self._app

    def _acquire_blocking(self) -> tuple[str, float]:
        try:
            with self._thread_lock:
                app = self._application()
                result = app.acquire_token_for_client(scopes=[self.scope])
        except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
            # No answer, or a 5xx/429 from the token endpoint (MSAL raises for those): worth retrying.
            reason = type(exc).__name__ if isinstance(exc, requests.RequestException) else str(exc)[:120]
            raise TokenEndpointUnavailable(
                f"cannot get a token from {self.tenant.authority} ({reason})",
                "check network access, proxy and the authority URL (and ca_bundle for a private CA)",
            ) from None
        if "access_token" not in result:
            raise explain_msal_error(result, self.scope)
        lifetime = float(result.get("expires_in", 3599))
        return str(result["access_token"]), time.monotonic() + lifetime

    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires_at - REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at - REFRESH_MARGIN_S:
                return self._token
            if self._token and self._app is not None:
                # MSAL would hand back its cached token until expiry; we want a fresh one now.
                self._drop_msal_cache()
            for attempt in range(TOKEN_ATTEMPTS):
                try:
                    token, self._expires_at = await asyncio.to_thread(self._acquire_blocking)
                    break
                except TokenEndpointUnavailable:
                    if attempt == TOKEN_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(TOKEN_RETRY_BASE_S * 2**attempt)
            self._token = token
            return token

    def invalidate(self) -> None:
        """Forget the token (after a 401), so the next request gets a new one."""
        self._token = None
        self._expires_at = 0.0
        if self._app is not None:
            self._drop_msal_cache()

    def _drop_msal_cache(self) -> None:
        assert self._app is not None
        cache = self._app.token_cache
        for at in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN):
            cache.remove_at(at)

    def __repr__(self) -> str:  # never show the token
        return f"TokenSource(tenant={self.tenant.name!r}, scope={self.scope!r})"


@dataclass
class TenantTokens:
    graph: TokenSource
    dataverse: TokenSource | None


def tenant_tokens(tenant: TenantConfig) -> TenantTokens:
    dv_scope = tenant.dataverse_token_scope
    return TenantTokens(
        graph=TokenSource(tenant, tenant.graph_token_scope),
        dataverse=TokenSource(tenant, dv_scope) if dv_scope else None,
    )
