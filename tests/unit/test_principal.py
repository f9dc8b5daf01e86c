"""The operator's identity comes from App Service authentication's principal, and only when it is on."""

from __future__ import annotations

import base64
import json

from shared.ops.principal import OPERATOR_ROLE, decode_principal, encode_principal, operator_of

ON = {"WEBSITE_AUTH_ENABLED": "True"}


def test_the_principal_app_service_writes_is_read_with_its_name_and_roles():
    # The shape App Service documents for X-MS-CLIENT-PRINCIPAL (Entra ID: name_typ and role_typ as claim URIs).
    document = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "val": "ada@contoso.com"},
            {"typ": "roles", "val": OPERATOR_ROLE},
            {"typ": "roles", "val": "Reader"},
        ],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }
    operator = operator_of({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(document).encode()).decode()}, ON)
    assert operator is not None and operator.name == "ada@contoso.com" and operator.may_operate
    assert operator.roles == {OPERATOR_ROLE, "Reader"} and operator.provider == "aad"


def test_without_app_service_authentication_the_header_is_ignored():
    header = {"x-ms-client-principal": encode_principal("mallory", [OPERATOR_ROLE])}
    assert operator_of(header, {}) is None
    assert operator_of(header, {"WEBSITE_AUTH_ENABLED": "false"}) is None
    assert operator_of(header, ON) is not None


def test_an_unreadable_principal_is_nobody():
    for value in ("not base64 !!", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'{"claims": []}').decode(), ""):
        assert decode_principal(value) is None
    without_role = decode_principal(encode_principal("eve", []))
    assert without_role is not None and not without_role.may_operate
