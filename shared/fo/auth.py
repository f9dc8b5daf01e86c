"""Access tokens for F&O through msal: client secret, certificate, or managed identity.

One msal application per process, because msal's token cache lives in the application object:
a new object per call would ask Entra for a token every time.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import msal
import requests

from shared.errors import AuthError, ConfigError, Transient
from shared.settings import AuthMode, Settings

_AADSTS = re.compile(r"AADSTS\d+")
_MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


class TokenProvider(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...


def _aadsts_code(result: dict[str, Any]) -> str:
    codes = result.get("error_codes") or []
    if codes:
        return f"AADSTS{codes[0]}"
    match = _AADSTS.search(str(result.get("error_description", "")))
    return match.group(0) if match else ""


def _entra_error(result: dict[str, Any], who: str) -> AuthError:
    code = _aadsts_code(result)
    description = str(result.get("error_description") or result.get("error") or "no reason given")
    first_line = description.splitlines()[0] if description else ""
    return AuthError(
        f"Entra refused a token for {who}: {result.get('error', 'error')}: {first_line}",
        aadsts=code,
    )


class MsalTokenProvider:
    """Tokens for `<FO_BASE_URL>/.default`, cached by msal, refreshed before they expire."""

    def __init__(self, settings: Settings, http_client: requests.Session) -> None:
        self._settings = settings
        self._http = http_client
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | msal.ManagedIdentityClient | None = None
        self.identity_provider_calls = 0
        self.cache_hits = 0
        # The last token and until when (monotonic) it is handed out without asking msal: msal's own
        # cache lookup costs about 0.08 CPU ms per F&O call. Half the token's life, so that msal still
        # decides on every refresh (it refreshes from half-life on, `refresh_in`).
        self._memo: tuple[str, float] | None = None
        self._clock = time.monotonic

    def _credential(self) -> str | dict[str, Any]:
        s = self._settings
        if s.fo_auth_mode is AuthMode.client_secret:
            assert s.fo_client_secret is not None  # the settings model guarantees it
            return s.fo_client_secret.get_secret_value()
        assert s.fo_certificate_path is not None
        password = s.fo_certificate_password.get_secret_value() if s.fo_certificate_password else None
        path = s.fo_certificate_path
        if path.suffix.lower() in {".pfx", ".p12"}:
            credential: dict[str, Any] = {"private_key_pfx_path": str(path)}
            if password:
                credential["passphrase"] = password
            return credential
        pem = path.read_text()
        if "PRIVATE KEY" not in pem or "CERTIFICATE" not in pem:
            raise ConfigError(f"FO_CERTIFICATE_PATH: {path} must hold the private key and the certificate (PEM)")
        credential = {"private_key": pem, "public_certificate": pem}
        if password:
            credential["passphrase"] = password
        return credential

    def _build(self) -> msal.ConfidentialClientApplication | msal.ManagedIdentityClient:
        s = self._settings
        if s.fo_auth_mode is AuthMode.managed_identity:
            identity: Any = (
                msal.UserAssignedManagedIdentity(client_id=s.fo_managed_identity_client_id)
                if s.fo_managed_identity_client_id
                else msal.SystemAssignedManagedIdentity()
            )
            return msal.ManagedIdentityClient(identity, http_client=self._http)
        host = urlsplit(s.fo_authority_host).hostname or ""
        try:
            return msal.ConfidentialClientApplication(
                s.fo_client_id,
                authority=f"{s.fo_authority_host}/{s.fo_tenant_id}",
                client_credential=self._credential(),
                http_client=self._http,
                # Instance discovery asks login.microsoftonline.com about the host; for other
                # hosts (the emulator, private authorities) the OpenID document is the authority.
                instance_discovery=host in _MICROSOFT_AUTHORITY_HOSTS,
            )
        except requests.RequestException as exc:
            raise Transient(f"Entra authority {s.fo_authority_host} unreachable: {type(exc).__name__}") from None
        except ValueError as exc:
            raise AuthError(f"FO_AUTHORITY_HOST / FO_TENANT_ID: {exc}") from None

    def _application(
        self,
    ) -> msal.ConfidentialClientApplication | msal.ManagedIdentityClient:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    def token(self) -> str:
        memo = self._memo
        if memo is not None and self._clock() < memo[1]:
            self.cache_hits += 1
            return memo[0]
        app = self._application()
        try:
            if isinstance(app, msal.ManagedIdentityClient):
                result = app.acquire_token_for_client(resource=self._settings.fo_base_url)
            else:
                result = app.acquire_token_for_client(scopes=[self._settings.fo_scope])
        except requests.RequestException as exc:
            raise Transient(f"Entra token endpoint unreachable: {type(exc).__name__}") from None
        if "access_token" not in result:
            error = _entra_error(result, f"client {self._settings.fo_client_id or 'managed identity'}")
            if str(result.get("error")) in {"temporarily_unavailable", "server_error"}:
                raise Transient(error.message)
            raise error
        if result.get("token_source") == "cache":
            self.cache_hits += 1
        else:
            self.identity_provider_calls += 1
        token = str(result["access_token"])
        lifetime = result.get("expires_in")
        if isinstance(lifetime, int | float) and lifetime > 600:
            self._memo = (token, self._clock() + min(lifetime / 2, lifetime - 300))
        return token

    def invalidate(self) -> None:
        """Forget cached tokens after F&O refused one (revoked, or the clock was off)."""
        self._memo = None
        with self._lock:
            app = self._app
            if isinstance(app, msal.ConfidentialClientApplication):
                app.remove_tokens_for_client()
            elif app is not None:
                self._app = None
