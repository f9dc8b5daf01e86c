"""The Entra side: OpenID discovery, client-credentials tokens, an App Service managed identity
endpoint, and the token check F&O makes on every call.

Errors answer the way Entra does: an OAuth error object whose description starts with the
AADSTS code, plus `error_codes`.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key


@dataclass
class AppRegistration:
    client_id: str
    secret: str | None = None
    certificate_pem: bytes | None = None  # public certificate for client assertions
    #: registered in F&O under Microsoft Entra ID applications (else F&O answers 401)
    registered_in_fo: bool = True


@dataclass(frozen=True)
class EntraError(Exception):
    status: int
    error: str
    code: int
    description: str

    def body(self, tenant: str) -> dict[str, Any]:
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()}",
            "error_codes": [self.code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
            "tenant": tenant,
        }


@dataclass
class Entra:
    base_url: str  # the emulator's origin, e.g. https://127.0.0.1:8443
    resource: str  # the F&O environment URL tokens are issued for
    tenant_id: str
    token_lifetime_s: int = 3600
    #: wall clock of issue and expiry; a test moves it instead of sleeping past a lifetime
    clock: Callable[[], float] = time.time
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    managed_identity_header: str = field(default_factory=lambda: secrets.token_hex(16))
    managed_identities: set[str] = field(default_factory=lambda: {"system"})
    _signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    tokens_issued: int = 0
    _issued: set[str] = field(default_factory=set)
    _expired: set[str] = field(default_factory=set)

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        self._check_tenant(tenant)
        root = f"{self.base_url}/{tenant}"
        return {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{self.base_url}/{tenant}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "tenant_region_scope": "EU",
        }

    def _check_tenant(self, tenant: str) -> None:
        if tenant.lower() not in {self.tenant_id.lower(), "organizations"}:
            raise EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
            )

    def _issue(self, client_id: str, tenant: str) -> dict[str, Any]:
        now = int(self.clock())
        jti = secrets.token_hex(8)
        claims = {
            "aud": self.resource,
            "iss": f"{self.base_url}/{tenant}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime_s,
            "appid": client_id,
            "tid": self.tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
            "jti": jti,
        }
        with self._lock:
            self.tokens_issued += 1
            self._issued.add(jti)
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        return {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "ext_expires_in": self.token_lifetime_s,
            "access_token": token,
        }

    def token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        """The client-credentials grant of /{tenant}/oauth2/v2.0/token."""
        self._check_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_id}'. "
                "This can happen if the application has not been installed by the administrator of the tenant.",
            )
        if "client_assertion" in form:
            self._check_assertion(app, form["client_assertion"], f"{self.base_url}/{tenant}/oauth2/v2.0/token")
        elif app.secret is None or not secrets.compare_digest(form.get("client_secret", ""), app.secret):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
                f"not the client secret ID, for a secret added to app '{client_id}'.",
            )
        scope = form.get("scope", "")
        if scope.rstrip("/") not in {f"{self.resource}/.default", f"{self.resource}//.default"}:
            raise EntraError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {scope.removesuffix('/.default')} was not found in the tenant named {self.tenant_id}.",
            )
        return self._issue(client_id, tenant)

    def _check_assertion(self, app: AppRegistration, assertion: str, audience: str) -> None:
        failure = EntraError(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        if app.certificate_pem is None:
            raise EntraError(
                401, "invalid_client", 700027, "Client assertion contains an invalid signature: no certificate is registered."
            )
        certificate = x509.load_pem_x509_certificate(app.certificate_pem)
        header = jwt.get_unverified_header(assertion)
        expected = {
            "x5t#S256": base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).decode().rstrip("="),
            "x5t": base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA1())).decode().rstrip("="),
        }
        if not any(str(header.get(k, "")).rstrip("=") == v for k, v in expected.items()):
            raise EntraError(
                401, "invalid_client", 700027, "Client assertion failed signature validation: the key was not found."
            )
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=audience,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError:
            raise failure from None
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise failure

    def managed_identity_token(self, header: str | None, params: dict[str, str]) -> dict[str, Any]:
        """App Service / Functions managed identity endpoint (api-version 2019-08-01)."""
        if header != self.managed_identity_header:
            raise EntraError(401, "unauthorized", 0, "X-IDENTITY-HEADER is missing or wrong.")
        identity = params.get("client_id") or "system"
        if identity not in self.managed_identities:
            raise EntraError(400, "invalid_request", 0, f"No managed identity with client id {identity} is assigned to this app.")
        if params.get("resource", "").rstrip("/") != self.resource:
            raise EntraError(
                400, "invalid_resource", 500011, f"The resource principal named {params.get('resource')} was not found."
            )
        issued = self._issue(f"mi-{identity}", self.tenant_id)
        return {
            "access_token": issued["access_token"],
            "expires_on": str(int(self.clock()) + self.token_lifetime_s),
            "resource": self.resource,
            "token_type": "Bearer",
            "client_id": identity,
        }

    def expire_issued_tokens(self) -> int:
        """Every token issued so far expires now (as at the end of its lifetime): F&O answers 401."""
        with self._lock:
            fresh = self._issued - self._expired
            self._expired |= fresh
            return len(fresh)

    def check_bearer(self, authorization: str | None) -> tuple[bool, str]:
        """What F&O does with the Authorization header: (allowed, reason when not)."""
        if not authorization or not authorization.startswith("Bearer "):
            return False, "No bearer token"
        try:
            claims = jwt.decode(
                authorization[7:],
                self._signing_key,
                algorithms=["HS256"],
                audience=self.resource,
                options={"verify_exp": False, "require": ["exp"]},
            )
        except jwt.InvalidAudienceError:
            return False, "The token was issued for another resource"
        except jwt.PyJWTError:
            return False, "The token is not valid for this environment"
        if int(claims["exp"]) <= self.clock():
            return False, "The token is expired"
        with self._lock:
            if claims.get("jti") in self._expired:
                return False, "The token is expired"
        client = str(claims.get("appid", ""))
        app = self.apps.get(client)
        if client.startswith("mi-"):
            return True, ""
        if app is None or not app.registered_in_fo:
            return False, f"Client {client} is not registered in Microsoft Entra ID applications"
        return True, ""


def load_certificate_pem(path: Path) -> bytes:
    """The public certificate out of a PEM file that holds a key and a certificate."""
    data = path.read_bytes()
    load_pem_private_key(data, password=None)  # fail early on a broken file
    return x509.load_pem_x509_certificate(data).public_bytes(Encoding.PEM)
