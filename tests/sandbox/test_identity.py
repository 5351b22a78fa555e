"""The token endpoint through real MSAL (secret, RS256 and PS256 certificate assertions) and its errors."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import msal
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relinsights.sandbox import SandboxServer
from relinsights.sandbox.identity import DATAVERSE_AUDIENCE, GRAPH_AUDIENCE

from .conftest import graph_client

ERROR_KEYS = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}


def _msal(sb: SandboxServer, credential: object) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sb.client_id,
        authority=sb.authority,
        client_credential=credential,
        verify=str(sb.ca_path),
        instance_discovery=False,
    )


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize("kind", ["secret", "certificate-sha1", "certificate-sha256"])
def test_msal_gets_a_graph_token(shared_sandbox: SandboxServer, kind: str) -> None:
    sb = shared_sandbox
    reg = sb.app_registration
    credential: object = {
        "secret": sb.client_secret,
        "certificate-sha1": sb.certificate_credential,  # RS256 + x5t
        "certificate-sha256": {"private_key": reg.private_key_pem, "public_certificate": reg.certificate_pem},  # PS256
    }[kind]
    result = _msal(sb, credential).acquire_token_for_client(scopes=[sb.graph_scope])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    claims = _claims(result["access_token"])
    assert claims["aud"] == GRAPH_AUDIENCE and claims["tid"] == sb.tenant_id and claims["appid"] == sb.client_id
    assert claims["appidacr"] == ("1" if kind == "secret" else "2")
    assert "Mail.ReadBasic.All" in claims["roles"]  # type: ignore[operator]
    with graph_client(sb) as c:
        c.headers["Authorization"] = "Bearer " + result["access_token"]
        assert c.get(f"{sb.graph_url}/domains").status_code == 200


def test_dataverse_audience_and_wrong_audience_on_graph(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    result = _msal(sb, sb.client_secret).acquire_token_for_client(scopes=[f"{DATAVERSE_AUDIENCE}/.default"])
    assert _claims(result["access_token"])["aud"] == DATAVERSE_AUDIENCE
    with graph_client(sb) as c:
        r = c.get(f"{sb.graph_url}/users", headers={"Authorization": "Bearer " + result["access_token"]})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "audience" in r.json()["error"]["message"].lower()


def _post(sb: SandboxServer, **form: str) -> httpx.Response:
    return httpx.post(sb.token_url, data=form, verify=sb.ssl_context())


def test_wrong_secret_is_invalid_client_7000215(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    result = _msal(sb, "not-the-secret").acquire_token_for_client(scopes=[sb.graph_scope])
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]
    r = _post(sb, grant_type="client_credentials", client_id=sb.client_id, client_secret="x", scope=sb.graph_scope)
    assert r.status_code == 401 and set(r.json()) >= ERROR_KEYS
    assert r.json()["error_description"].startswith("AADSTS7000215:")


def test_wrong_scope_is_invalid_scope_70011(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    for scope in ["https://foo.microsoft.com/.default", "https://graph.microsoft.com/User.Read"]:
        result = _msal(sb, sb.client_secret).acquire_token_for_client(scopes=[scope])
        assert result["error"] == "invalid_scope" and result["error_codes"] == [70011], scope


def test_unknown_client_and_tenant(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    r = _post(sb, grant_type="client_credentials", client_id=str(uuid.uuid4()), client_secret="x", scope=sb.graph_scope)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client" and r.json()["error_codes"] == [700016]
    with pytest.raises(ValueError):
        msal.ConfidentialClientApplication(
            sb.client_id,
            authority=f"{sb.base_url}/{uuid.uuid4()}",
            client_credential="x",
            verify=str(sb.ca_path),
            instance_discovery=False,
        )


def _assertion(
    sb: SandboxServer, *, key_pem: str | None = None, aud: str | None = None, exp_in: int = 600, alg: str = "RS256"
) -> str:
    reg = sb.app_registration
    import base64

    x5t = base64.urlsafe_b64encode(bytes.fromhex(reg.thumbprint_sha1)).decode().rstrip("=")
    now = int(time.time())
    return jwt.encode(
        {
            "aud": aud or sb.token_url,
            "iss": sb.client_id,
            "sub": sb.client_id,
            "exp": now + exp_in,
            "iat": now - 700,
            "nbf": now - 700,
            "jti": str(uuid.uuid4()),
        },
        key_pem or reg.private_key_pem,
        algorithm=alg,
        headers={"x5t": x5t},
    )


@pytest.mark.parametrize(
    ("case", "code"),
    [("other-key", 700027), ("wrong-audience", 700027), ("expired", 700024), ("good", 0)],
)
def test_client_assertion_checks(shared_sandbox: SandboxServer, case: str, code: int) -> None:
    sb = shared_sandbox
    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    assertion = {
        "other-key": lambda: _assertion(sb, key_pem=other),
        "wrong-audience": lambda: _assertion(sb, aud=f"{sb.base_url}/common/oauth2/v2.0/token"),
        "expired": lambda: _assertion(sb, exp_in=-600),
        "good": lambda: _assertion(sb),
    }[case]()
    r = _post(
        sb,
        grant_type="client_credentials",
        client_id=sb.client_id,
        scope=sb.graph_scope,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
    )
    if code == 0:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 401 and r.json()["error"] == "invalid_client" and r.json()["error_codes"] == [code]


def test_graph_rejects_missing_bad_and_expired_tokens(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    url = f"{sb.graph_url}/users"
    cases = {
        "missing": {},
        "garbage": {"Authorization": "Bearer nonsense"},
        "expired": {"Authorization": "Bearer " + sb.access_token(lifetime=-60)},
        "forged": {
            "Authorization": "Bearer "
            + jwt.encode({"aud": GRAPH_AUDIENCE, "tid": sb.tenant_id, "exp": int(time.time()) + 600}, "k" * 32)
        },
    }
    for name, headers in cases.items():
        r = httpx.get(url, headers=headers, verify=sb.ssl_context())
        assert r.status_code == 401, name
        body = r.json()["error"]
        assert body["code"] == "InvalidAuthenticationToken" and set(body["innerError"]) >= {"date", "request-id"}
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert "expired" in httpx.get(url, headers=cases["expired"], verify=sb.ssl_context()).json()["error"]["message"]


def test_token_lifetime_is_configurable_and_enforced() -> None:
    # 3 seconds: a token's expiry is a whole second, so it holds for 2 to 3 seconds (1 second left the first
    # call under a loaded machine's TLS handshake as little as no time: it failed once that way).
    with SandboxServer(size="small", seed=3, token_lifetime=3) as sb:
        result = _msal(sb, sb.client_secret).acquire_token_for_client(scopes=[sb.graph_scope])
        expired = time.time() + 3.1  # (the token was issued before now: it has expired by then)
        assert result["expires_in"] == 3
        headers = {"Authorization": "Bearer " + result["access_token"]}
        assert httpx.get(f"{sb.graph_url}/domains", headers=headers, verify=sb.ssl_context()).status_code == 200
        time.sleep(max(0.0, expired - time.time()))
        assert httpx.get(f"{sb.graph_url}/domains", headers=headers, verify=sb.ssl_context()).status_code == 401


def test_missing_permission_is_403() -> None:
    with SandboxServer(size="small", seed=3, granted_permissions={"User.Read.All", "Mail.ReadBasic.All"}) as sb:
        user = sb.org.generator.sellers[0]
        with graph_client(sb) as c:
            r = c.get(
                f"{sb.graph_url}/users/{user.id}/calendarView/delta",
                params={"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2026-02-01T00:00:00Z"},
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"
            r = c.get(f"{sb.graph_url}/domains")
            assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"
            # Mail.ReadBasic.All leaves bodies out: selecting one is refused
            r = c.get(f"{sb.graph_url}/users/{user.id}/mailFolders/inbox/messages/delta", params={"$select": "body"})
            assert r.status_code == 403
            assert c.get(f"{sb.graph_url}/users", params={"$top": "1"}).status_code == 200


def test_token_outage_fault(shared_sandbox: SandboxServer) -> None:
    sb = shared_sandbox
    sb.faults.set("token_outage=1")
    try:
        r = _post(
            sb,
            grant_type="client_credentials",
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            scope=sb.graph_scope,
        )
    finally:
        sb.faults.set("")
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    assert r.json()["error_codes"] == [90033]
