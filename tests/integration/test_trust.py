"""Certificate trust is decided by the settings alone: REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE cannot change it."""

from __future__ import annotations

import pytest
import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from shared.errors import Transient
from shared.fo.auth import MsalTokenProvider
from shared.fo.http import PinnedTrustSession
from shared.settings import load_settings
from tests.conftest import bridge_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_without_fo_ca_bundle_an_environment_bundle_does_not_replace_the_trust(
    emulator, azurite, table_prefix, monkeypatch, variable
):
    env = bridge_env(emulator, azurite, table_prefix)
    del env["FO_CA_BUNDLE"]
    settings = load_settings(env)
    # The emulator's CA is in no public store: only an environment bundle could make it trusted.
    monkeypatch.setenv(variable, str(emulator.ca_path))
    session = PinnedTrustSession(settings.tls_verify)
    with pytest.raises(requests.exceptions.SSLError):
        session.get(emulator.base_url + "/data/ProductionOrderHeaders", timeout=5)
    # msal goes through the same session without a verify= of its own: refused the same way.
    with pytest.raises(Transient, match="SSLError"):
        MsalTokenProvider(settings, session).token()


def test_fo_ca_bundle_is_trusted_whatever_the_environment_says(emulator, azurite, table_prefix, monkeypatch):
    settings = load_settings(bridge_env(emulator, azurite, table_prefix))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", DEFAULT_CA_BUNDLE_PATH)
    session = PinnedTrustSession(settings.tls_verify)
    assert MsalTokenProvider(settings, session).token()


def test_the_system_store_is_a_pinned_bundle_not_a_flag_the_environment_can_override(emulator, azurite, table_prefix):
    env = bridge_env(emulator, azurite, table_prefix)
    del env["FO_CA_BUNDLE"]
    assert load_settings(env).tls_verify == DEFAULT_CA_BUNDLE_PATH
    assert PinnedTrustSession(True)._pinned_verify == DEFAULT_CA_BUNDLE_PATH


def test_the_environment_is_read_once_when_no_proxy_is_set(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert PinnedTrustSession(True).trust_env is False  # no per-call proxy and .netrc scan


def test_a_configured_proxy_is_still_honoured(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert PinnedTrustSession(True).trust_env is True
