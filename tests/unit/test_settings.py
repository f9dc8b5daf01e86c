import pytest

from shared.errors import ConfigError
from shared.settings import AuthMode, load_settings

BASE = {
    "FO_BASE_URL": "https://contoso.operations.dynamics.com/",
    "FO_TENANT_ID": "tenant",
    "FO_CLIENT_ID": "client",
    "FO_CLIENT_SECRET": "s3cret-value",
    "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
}


def test_valid_settings_normalise_the_base_url_and_scope():
    settings = load_settings(BASE)
    assert settings.fo_base_url == "https://contoso.operations.dynamics.com"
    assert settings.fo_scope == "https://contoso.operations.dynamics.com/.default"
    assert settings.companies == frozenset({"USMF"})
    assert "s3cret-value" not in repr(settings)


def test_names_are_case_insensitive_like_app_settings():
    settings = load_settings({k.lower(): v for k, v in BASE.items()})
    assert settings.fo_client_id == "client"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"FO_BASE_URL": None}, "FO_BASE_URL"),
        ({"FO_BASE_URL": "http://contoso.operations.dynamics.com"}, "FO_BASE_URL"),
        ({"FO_BASE_URL": "https://x.com/?a=1"}, "FO_BASE_URL"),
        ({"FO_TENANT_ID": None}, "FO_TENANT_ID"),
        ({"FO_CLIENT_SECRET": None}, "FO_CLIENT_SECRET"),
        ({"FO_AUTH_MODE": "password"}, "FO_AUTH_MODE"),
        ({"FO_AUTH_MODE": "certificate"}, "FO_CERTIFICATE_PATH"),
        ({"FO_CERTIFICATE_PATH": "/nowhere/cert.pem"}, "FO_CERTIFICATE_PATH"),
        ({"FO_CA_BUNDLE": "/nowhere/ca.pem"}, "FO_CA_BUNDLE"),
        ({"FO_READ_TIMEOUT_S": "soon"}, "FO_READ_TIMEOUT_S"),
        ({"FO_READ_TIMEOUT_S": "-1"}, "FO_READ_TIMEOUT_S"),
        ({"FO_MAX_CONCURRENCY": "100"}, "FO_MAX_CONCURRENCY"),
        ({"FO_CALL_DEADLINE_S": "600"}, "FO_CALL_DEADLINE_S"),
        ({"TABLES_CONNECTION_STRING": None}, "TABLES_CONNECTION_STRING or TABLES_ENDPOINT"),
        ({"TABLES_PREFIX": "bad-prefix"}, "TABLES_PREFIX"),
        ({"FO_QUALITY_SERVICE_PATH": "justone"}, "FO_QUALITY_SERVICE_PATH"),
        ({"FO_COMPANIES": "DEMF"}, "FO_COMPANIES"),
        ({"FO_JOURNAL_FIELD_NAMES": "2019"}, "FO_JOURNAL_FIELD_NAMES"),
    ],
)
def test_a_wrong_setting_is_named(change, named):
    env = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert named + ":" in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_managed_identity_needs_no_tenant_or_secret():
    env = {
        "FO_BASE_URL": BASE["FO_BASE_URL"],
        "FO_AUTH_MODE": "managed_identity",
        "TABLES_ENDPOINT": "https://a.table.core.windows.net",
    }
    assert load_settings(env).fo_auth_mode is AuthMode.managed_identity


def test_companies_are_upper_cased_and_include_the_default():
    settings = load_settings({**BASE, "FO_COMPANIES": "usmf, demf"})
    assert settings.companies == frozenset({"USMF", "DEMF"})
