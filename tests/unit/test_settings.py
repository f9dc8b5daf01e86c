import json
import os
from pathlib import Path

import pytest
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from shared.errors import ConfigError
from shared.settings import AuthMode, Settings, load_settings, setting_name

ROOT = Path(__file__).resolve().parents[2]

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
        ({"FO_INSTANCE_BUDGET_RPS": "0"}, "FO_INSTANCE_BUDGET_RPS"),
        ({"FO_CALL_DEADLINE_S": "600"}, "FO_CALL_DEADLINE_S"),
        ({"TABLES_CONNECTION_STRING": None}, "TABLES_CONNECTION_STRING or TABLES_ENDPOINT"),
        ({"TABLES_PREFIX": "bad-prefix"}, "TABLES_PREFIX"),
        ({"FO_QUALITY_SERVICE_PATH": "justone"}, "FO_QUALITY_SERVICE_PATH"),
        ({"FO_COMPANIES": "DEMF"}, "FO_COMPANIES"),
        ({"FO_JOURNAL_FIELD_NAMES": "2019"}, "FO_JOURNAL_FIELD_NAMES"),
        ({"PLANT_TIME_ZONE": "Chicago"}, "PLANT_TIME_ZONE"),
        ({"PLANT_TIME_ZONE": "../../etc/passwd"}, "PLANT_TIME_ZONE"),
        ({"PLANT_TIME_ZONE": "-06:00"}, "PLANT_TIME_ZONE"),
        ({"PLANT_TIME_ZONES": "1=Europe/Berlin,2=Mars/Olympus"}, "PLANT_TIME_ZONES"),
        ({"PLANT_TIME_ZONES": "Europe/Berlin"}, "PLANT_TIME_ZONES"),
        ({"PLANT_TIME_ZONES": "1=Europe/Berlin,1=Asia/Tokyo"}, "PLANT_TIME_ZONES"),
        ({"MES_MAX_CLOCK_SKEW_S": "-5"}, "MES_MAX_CLOCK_SKEW_S"),
        ({"MES_MAX_CLOCK_SKEW_S": "86401"}, "MES_MAX_CLOCK_SKEW_S"),
        ({"FO_MERGE_MAX_MESSAGES": "0"}, "FO_MERGE_MAX_MESSAGES"),
        ({"FO_MERGE_MAX_MESSAGES": "34"}, "FO_MERGE_MAX_MESSAGES"),
        ({"FO_MERGE_MAX_CONTENT_BYTES": "300000"}, "FO_MERGE_MAX_CONTENT_BYTES"),
        ({"FO_MERGE_MAX_CONTENT_BYTES": "70000", "MAX_MESSAGE_BYTES": "65536"}, "FO_MERGE_MAX_CONTENT_BYTES"),
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


def test_an_empty_setting_counts_as_unset():
    # Core Tools passes local.settings.json's "" through; "" must not become Path(".").
    settings = load_settings({**BASE, "FO_CERTIFICATE_PATH": "", "FO_CA_BUNDLE": "", "FO_MAX_CONCURRENCY": ""})
    assert settings.fo_certificate_path is None and settings.fo_ca_bundle is None
    assert settings.tls_verify == DEFAULT_CA_BUNDLE_PATH  # requests' own bundle, pinned
    assert settings.fo_max_concurrency == Settings.model_fields["fo_max_concurrency"].default
    with pytest.raises(ConfigError, match="FO_CLIENT_SECRET: required"):
        load_settings({**BASE, "FO_CLIENT_SECRET": ""})


def test_the_process_environment_is_read_by_pydantic_settings(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith(("FO_", "TABLES_", "SERVICEBUSCONNECTION")):
            monkeypatch.delenv(name)
    for name, value in {
        **BASE,
        "FO_CA_BUNDLE": "",
        "servicebusconnection__fullyqualifiednamespace": "ns.servicebus.windows.net",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.fo_client_id == "client" and settings.fo_ca_bundle is None
    assert settings.servicebus_namespace == "ns.servicebus.windows.net"


def test_the_sample_local_settings_load_as_they_are():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = load_settings(values)
    assert settings.fo_certificate_path is None and settings.fo_ca_bundle is None


def test_every_setting_is_in_the_sample_local_settings_by_its_app_setting_name():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    names = {setting_name(field) for field in Settings.model_fields}
    assert names <= set(values), f"missing from local.settings.sample.json: {names - set(values)}"
    assert {"FO_BASE_URL", "ServiceBusConnection", "ServiceBusConnection__fullyQualifiedNamespace"} <= names


@pytest.mark.parametrize(
    "name", ["FO_CLIENT_SECRET", "FO_CERTIFICATE_PASSWORD", "TABLES_CONNECTION_STRING", "ServiceBusConnection"]
)
def test_an_unresolved_key_vault_reference_is_refused_at_start_up(name):
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/fo-client-secret/)"
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, name: reference})
    assert f"{name}: is still a Key Vault reference" in str(caught.value)
    assert "kv-x" not in str(caught.value)


def test_plant_time_zones_are_iana_names_per_site():
    settings = load_settings(
        {**BASE, "PLANT_TIME_ZONE": "America/Chicago", "PLANT_TIME_ZONES": " 1 = Europe/Berlin ; chi=America/Chicago"}
    )
    assert settings.plant_time_zone == "America/Chicago"
    assert settings.plant_zones == (("1", "Europe/Berlin"), ("CHI", "America/Chicago"))
    defaults = load_settings(BASE)
    assert defaults.plant_time_zone == "UTC" and defaults.plant_zones == () and defaults.mes_max_clock_skew_s == 300
