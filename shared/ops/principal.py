"""Who is operating: the caller App Service authentication validated, never a header the caller sets.

With App Service authentication (Easy Auth) on, the platform validates the Entra sign-in and
passes the caller's claims to the app as `X-MS-CLIENT-PRINCIPAL` (base64 JSON); external requests
cannot set that header, so it is present only when App Service set it ("Work with user identities
in Azure App Service authentication", learn.microsoft.com). The platform signals that the module
is on with the `WEBSITE_AUTH_ENABLED` app setting (the check Microsoft.Identity.Web makes in
AppServicesAuthenticationInformation). Without it the header proves nothing and is ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

#: The Entra app role an operator needs (declared on the console's app registration, see README).
OPERATOR_ROLE = "MesBridge.Operator"
PRINCIPAL_HEADER = "x-ms-client-principal"
_NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


@dataclass(frozen=True)
class Operator:
    name: str
    roles: frozenset[str]
    provider: str

    @property
    def may_operate(self) -> bool:
        return OPERATOR_ROLE in self.roles


def platform_auth_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when App Service authentication runs in front of the app (it then owns the principal headers)."""
    return (environ if environ is not None else os.environ).get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"


def decode_principal(value: str) -> Operator | None:
    """The `X-MS-CLIENT-PRINCIPAL` value as an operator; None when it is not a readable principal."""
    try:
        document = json.loads(base64.b64decode(value, validate=False))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        return None
    name_type = str(document.get("name_typ") or "")
    role_type = str(document.get("role_typ") or "")
    names: list[str] = []
    roles: set[str] = set()
    for claim in document["claims"]:
        if not isinstance(claim, dict):
            continue
        kind, text = str(claim.get("typ", "")), str(claim.get("val", ""))
        if kind in (name_type, *_NAME_CLAIMS) and text:
            names.append(text)
        if kind in (role_type, *_ROLE_CLAIMS) and text:
            roles.add(text)
    if not names:
        return None
    return Operator(name=names[0][:200], roles=frozenset(roles), provider=str(document.get("auth_typ") or "")[:40])


def operator_of(headers: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Operator | None:
    """The validated operator of a request, or None (no platform authentication, or no sign-in)."""
    if not platform_auth_enabled(environ):
        return None
    value = next((v for k, v in headers.items() if k.lower() == PRINCIPAL_HEADER), "")
    return decode_principal(value) if value else None


def encode_principal(name: str, roles: list[str], provider: str = "aad") -> str:
    """A principal header as App Service writes it (for the local stand-in of App Service authentication)."""
    claims = [{"typ": "name", "val": name}, *({"typ": "roles", "val": role} for role in roles)]
    document = {"auth_typ": provider, "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()
