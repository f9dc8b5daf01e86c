"""Secrets and tokens never reach a log line: every logger is captured during auth, a refused
secret, a failed call, and a message parked with F&O's infolog."""

import logging

import pytest

from shared.errors import AuthError, BusinessRejection
from shared.settings import load_settings
from tests.conftest import bridge_env, make_client

pytestmark = pytest.mark.integration


def test_no_secret_or_token_appears_in_any_log(emulator, azurite, table_prefix, caplog):
    caplog.set_level(logging.DEBUG)  # everything: msal, urllib3, azure-core, the bridge
    known_secret = emulator.client_secret
    fo, tokens = make_client(load_settings(bridge_env(emulator, azurite, table_prefix)))
    list(fo.query("Warehouses", company="USMF"))
    with pytest.raises(BusinessRejection):
        fo.send_message("USMF", "ProdProductionOrderPickingList", {"ProductionOrderNumber": "P000001", "PickingListLines": [{}]})
    issued = list(tokens._application().token_cache.search("AccessToken"))
    access_tokens = [entry["secret"] for entry in issued]
    wrong = "Wr0ng-" + known_secret[::-1]
    bad, _ = make_client(load_settings(bridge_env(emulator, azurite, table_prefix, FO_CLIENT_SECRET=wrong)))
    with pytest.raises(AuthError) as refused:
        list(bad.query("Warehouses", company="USMF"))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert len(caplog.records) > 10  # the capture saw the traffic
    for secret in [known_secret, wrong, *access_tokens]:
        assert secret not in logged
        assert secret not in str(refused.value)
    assert access_tokens and all(len(t) > 40 for t in access_tokens)
