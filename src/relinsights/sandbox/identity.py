"""The Entra (Azure AD) v2.0 token endpoint for the client-credentials grant, and the OpenID discovery
documents MSAL reads first.

Issued access tokens are real RS256 JWTs (aud, tid, appid, roles, exp...), signed with a key the
sandbox generates at start; the Graph (and later Dataverse) routes verify them with `validate()`.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .odata import JSONResponse

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DATAVERSE_AUDIENCE = "https://sandbox.crm.dynamics.com"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_GRAPH_PERMISSIONS = frozenset(
    {"Mail.ReadBasic.All", "Calendars.Read", "User.Read.All", "GroupMember.Read.All", "Domain.Read.All"}
)
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}


@dataclass
class AppRegistration:
    """The daemon's app registration: a client secret and a certificate, plus its granted Graph roles."""

    client_id: str
    display_name: str
    secret: str
    private_key_pem: str
    certificate_pem: str
    service_principal_id: str
    granted: set[str] = field(default_factory=lambda: set(DEFAULT_GRAPH_PERMISSIONS))

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem.encode())

    @property
    def thumbprint_sha1(self) -> str:
        """Hex SHA-1 thumbprint, as the portal shows it and MSAL's `thumbprint` takes."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()

    @property
    def thumbprint_sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex().upper()

    def msal_certificate_credential(self) -> dict[str, str]:
        return {"private_key": self.private_key_pem, "thumbprint": self.thumbprint_sha1}


def generate_app(client_id: str, display_name: str, secret: str, service_principal_id: str) -> AppRegistration:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, display_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=730))
        .sign(key, hashes.SHA256())
    )
    return AppRegistration(
        client_id=client_id,
        display_name=display_name,
        secret=secret,
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        service_principal_id=service_principal_id,
    )


class TokenError(Exception):
    """An access token a resource rejects; `message` is what Graph puts in its 401 body."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Identity:
    """Token issuer for one tenant. `tenant_aliases` returns the names the tenant answers to (domains)."""

    def __init__(
        self,
        tenant_id: str,
        app: AppRegistration,
        *,
        tenant_aliases: Callable[[], list[str]] = list,
        token_lifetime: int = 3599,
        audiences: dict[str, str] | None = None,
        outage: Callable[[], bool] = lambda: False,
    ) -> None:
        self.tenant_id = tenant_id
        self.apps = {app.client_id: app}
        self.tenant_aliases = tenant_aliases
        self.token_lifetime = token_lifetime
        # accepted scope resource -> the `aud` the token carries
        self.audiences = audiences or {
            GRAPH_AUDIENCE: GRAPH_AUDIENCE,
            GRAPH_APP_ID: GRAPH_AUDIENCE,
            DATAVERSE_AUDIENCE: DATAVERSE_AUDIENCE,
        }
        self.outage = outage
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA1())
        digest.update(self._public_pem)
        self.kid = _b64url(digest.finalize())
        self.issued = 0

    # ------------------------------------------------------------ routes

    def routes(self) -> list[Route]:
        return [
            Route("/{tenant}/oauth2/v2.0/token", self.token_endpoint, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
            Route("/{tenant}/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self.jwks, methods=["GET"]),
            Route("/common/discovery/instance", self.instance_discovery, methods=["GET"]),
        ]

    def _knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() in {self.tenant_id.lower(), *(a.lower() for a in self.tenant_aliases())}

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not self._knows_tenant(tenant):
            return self._error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure "
                "you have the correct tenant ID and are signing into the correct cloud.",
            )
        base, t = self._base(request), self.tenant_id
        doc = {
            "token_endpoint": f"{base}/{t}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{t}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{t}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{t}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/{t}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return JSONResponse(doc)

    async def jwks(self, request: Request) -> Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(
            {"kid": self.kid, "use": "sig", "x5t": self.kid, "issuer": f"{self._base(request)}/{self.tenant_id}/v2.0"}
        )
        return JSONResponse({"keys": [jwk]})

    async def instance_discovery(self, request: Request) -> Response:
        host = request.url.netloc
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{self._base(request)}/{self.tenant_id}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    # ------------------------------------------------------------ token endpoint

    def _error(self, status: int, error: str, code: int, text: str) -> Response:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }
        return JSONResponse(
            body, status_code=status, headers={"x-ms-request-id": trace, "Cache-Control": "no-store, no-cache"}
        )

    async def token_endpoint(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if self.outage():
            return self._error(
                503, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."
            )
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if not self._knows_tenant(tenant):
            return self._error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you "
                "have the correct tenant ID and are signing into the correct cloud.",
            )
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):  # RFC 6749 2.3.1: credentials may come in the header
            try:
                cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
                form.setdefault("client_id", cid)
                form.setdefault("client_secret", sec)
            except (binascii.Error, UnicodeDecodeError):
                pass
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return self._error(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        if "client_secret" in form:
            if form["client_secret"] != app.secret:
                return self._error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
            acr = "1"
        elif form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion"):
            problem = self._check_assertion(form["client_assertion"], app, request, tenant)
            if problem is not None:
                return self._error(401, "invalid_client", problem[0], problem[1])
            acr = "2"
        else:
            return self._error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        scope = form.get("scope", "")
        scopes = [s for s in scope.split() if s not in _RESERVED_SCOPES]
        resource = scopes[0].removesuffix("/.default") if len(scopes) == 1 and scopes[0].endswith("/.default") else None
        if resource is None or resource.rstrip("/") not in self.audiences:
            return self._error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
            )
        audience = self.audiences[resource.rstrip("/")]
        token = self.issue_token(app, audience, acr=acr)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _check_assertion(
        self, assertion: str, app: AppRegistration, request: Request, tenant: str
    ) -> tuple[int, str] | None:
        """None if the client assertion is good, else (AADSTS code, text)."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return 700027, "Client assertion failed signature validation. (the assertion is not a well-formed JWT)"
        cert = app.certificate
        x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
        if x5t is None and x5t256 is None:
            return 700027, "Client assertion contains neither x5t nor x5t#S256 in its header."
        ok_thumb = (x5t is not None and _b64url_decode_safe(x5t) == cert.fingerprint(hashes.SHA1())) or (
            x5t256 is not None and _b64url_decode_safe(x5t256) == cert.fingerprint(hashes.SHA256())
        )
        if not ok_thumb:
            return 700027, (
                f"Client assertion failed signature validation. The key was not found. (thumbprint "
                f"{x5t or x5t256} is not registered on app '{app.client_id}')"
            )
        alg = header.get("alg")
        if alg not in ("RS256", "PS256"):
            return 700027, f"Client assertion failed signature validation. Unsupported algorithm '{alg}'."
        base = self._base(request)
        audiences = [f"{base}/{t}/oauth2/v2.0/token" for t in {tenant, self.tenant_id, *self.tenant_aliases()}]
        audiences += [f"{base}/{t}/oauth2/token" for t in {tenant, self.tenant_id}]
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=[alg],
                audience=audiences,
                options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError:
            return 700024, "Client assertion is not within its valid time range."
        except jwt.InvalidAudienceError:
            return 700027, (
                "Client assertion audience claim does not match Realm issuer. The audience must be the "
                f"token endpoint, {base}/{self.tenant_id}/oauth2/v2.0/token."
            )
        except jwt.InvalidSignatureError:
            return 700027, "Client assertion failed signature validation."
        except jwt.PyJWTError as exc:
            return 700027, f"Client assertion failed validation: {exc}."
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return 700027, "Client assertion iss and sub claims must both be the client id."
        return None

    def issue_token(
        self,
        app: AppRegistration,
        audience: str,
        *,
        acr: str = "1",
        lifetime: int | None = None,
        tenant_id: str | None = None,
    ) -> str:
        """An app-only access token like Entra's (v1 format, as Graph receives), signed with the sandbox key."""
        now = int(time.time())
        lifetime = self.token_lifetime if lifetime is None else lifetime
        tid = tenant_id or self.tenant_id
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": now - 300 if lifetime > 0 else now + lifetime - 600,
            "nbf": now - 300 if lifetime > 0 else now + lifetime - 600,
            "exp": now + lifetime,
            "aio": _b64url(uuid.uuid4().bytes),
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": acr,
            "idp": f"https://sts.windows.net/{tid}/",
            "idtyp": "app",
            "oid": app.service_principal_id,
            "rh": "0.sandbox.",
            "sub": app.service_principal_id,
            "tenant_region_scope": "EU",
            "tid": tid,
            "uti": _b64url(uuid.uuid4().bytes)[:22],
            "ver": "1.0",
            "xms_tcdt": now - 86400 * 365,
        }
        if audience == GRAPH_AUDIENCE:
            claims["roles"] = sorted(app.granted)
        self.issued += 1
        return jwt.encode(
            claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5t": self.kid, "kid": self.kid}
        )

    def validate(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """Claims of a good bearer token for `audience`; raises TokenError with Graph's wording otherwise."""
        if not authorization or not authorization.strip():
            raise TokenError("Access token is empty.")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenError("Access token is empty.")
        token = token.strip()
        if token.count(".") != 2:
            raise TokenError("IDX14100: JWT is not well formed, there are no dots (.).")
        try:
            claims = jwt.decode(
                token,
                self._public_pem,
                algorithms=["RS256"],
                audience=audience,
                options={"require": ["exp", "aud", "tid"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("Lifetime validation failed, the token is expired.") from None
        except jwt.InvalidAudienceError:
            raise TokenError("Access token validation failure. Invalid audience.") from None
        except jwt.PyJWTError:
            raise TokenError("Access token validation failure.") from None
        if claims.get("tid") != self.tenant_id:
            raise TokenError("Access token validation failure. Invalid issuer.")
        return claims


def _b64url_decode_safe(s: str) -> bytes | None:
    try:
        return _b64url_decode(s)
    except (binascii.Error, ValueError):
        return None
