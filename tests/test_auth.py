"""Credentials and token caching (MSAL against a real token endpoint is tested with the sandbox)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import tenant_config
from relinsights.auth import CredentialError, TokenSource, explain_msal_error, load_client_credential


def write_cert(path: Path, days: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relinsights-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return cert.fingerprint(hashes.SHA1()).hex()  # the thumbprint format Entra uses


def test_certificate_credential(tmp_path: Path) -> None:
    thumb = write_cert(tmp_path / "app.pem", days=30)
    cred, info = load_client_credential(tenant_config(credential={"certificate": str(tmp_path / "app.pem")}))
    assert isinstance(cred, dict) and cred["thumbprint"] == thumb and "PRIVATE KEY" in cred["private_key"]
    assert info is not None and info.not_after > datetime.now(UTC)


def test_expired_certificate_names_the_date(tmp_path: Path) -> None:
    write_cert(tmp_path / "old.pem", days=-3)
    with pytest.raises(CredentialError) as exc:
        load_client_credential(tenant_config(credential={"certificate": str(tmp_path / "old.pem")}))
    expected = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    assert f"expired on {expected}" in str(exc.value) and "upload a new certificate" in exc.value.fix


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").write_text("s3cr3t\n")
    assert load_client_credential(tenant_config(credential={"secret_file": str(tmp_path / "s")}))[0] == "s3cr3t"
    (tmp_path / "empty").write_text("")
    with pytest.raises(CredentialError, match="is empty"):
        load_client_credential(tenant_config(credential={"secret_file": str(tmp_path / "empty")}))
    with pytest.raises(CredentialError, match="cannot read secret file"):
        load_client_credential(tenant_config(credential={"secret_file": str(tmp_path / "nope")}))
    monkeypatch.delenv("RELINSIGHTS_TEST_SECRET", raising=False)
    with pytest.raises(CredentialError, match="RELINSIGHTS_TEST_SECRET is empty or not set"):
        load_client_credential(tenant_config())
    monkeypatch.setenv("RELINSIGHTS_TEST_SECRET", "from-env")
    assert load_client_credential(tenant_config())[0] == "from-env"


def test_msal_errors_become_named_problems_without_the_secret() -> None:
    e = explain_msal_error({"error": "invalid_client", "error_codes": [7000215],
                            "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}, "g")
    assert "client secret rejected" in str(e) and "Trace ID" not in str(e) and "new client secret" in e.fix
    e = explain_msal_error({"error": "invalid_scope", "error_codes": [70011], "error_description": "bad"}, "dv")
    assert "scope for dv refused" in str(e)


class FakeApp:
    """The two MSAL calls TokenSource makes, counted."""

    def __init__(self, expires_in: int = 3599) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.token_cache = self

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        self.calls += 1
        assert scopes == ["https://graph.microsoft.com/.default"]
        return {"access_token": f"at-{self.calls}", "expires_in": self.expires_in}

    def search(self, _kind: Any) -> list[Any]:
        return []


def test_token_cached_refreshed_early_and_dropped_on_401() -> None:
    app = FakeApp()
    ts = TokenSource(tenant_config(), "https://graph.microsoft.com/.default", app=app)  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        got = [await ts.token(), await ts.token()]
        ts.invalidate()
        got.append(await ts.token())
        return got

    assert asyncio.run(scenario()) == ["at-1", "at-1", "at-2"]
    short = FakeApp(expires_in=200)  # inside the refresh margin: every call fetches anew
    ts2 = TokenSource(tenant_config(), "https://graph.microsoft.com/.default", app=short)  # type: ignore[arg-type]
    asyncio.run(ts2.token())
    asyncio.run(ts2.token())
    assert short.calls == 2
    assert "at-" not in repr(ts)


class FlakyApp(FakeApp):
    """A token endpoint that answers 503 (MSAL raises for it) a few times, then recovers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        import msal.exceptions

        if self.failures:
            self.failures -= 1
            raise msal.exceptions.MsalServiceError(error="http_error", error_description="HTTP Error: 503")
        return super().acquire_token_for_client(scopes)


def test_token_endpoint_outage_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from relinsights import auth

    monkeypatch.setattr(auth, "TOKEN_RETRY_BASE_S", 0.0)
    recovering = FlakyApp(failures=2)
    ts = TokenSource(tenant_config(), "https://graph.microsoft.com/.default", app=recovering)  # type: ignore[arg-type]
    assert asyncio.run(ts.token()) == "at-1"
    down = FlakyApp(failures=99)
    ts = TokenSource(tenant_config(), "https://graph.microsoft.com/.default", app=down)  # type: ignore[arg-type]
    with pytest.raises(auth.TokenEndpointUnavailable, match="cannot get a token"):
        asyncio.run(ts.token())
    assert down.failures == 99 - auth.TOKEN_ATTEMPTS
