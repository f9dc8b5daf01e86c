import threading
import time

import pytest

from devtools.fo_emulator.entra import AppRegistration
from devtools.fo_emulator.tls import make_client_certificate
from shared.errors import AuthError, BusinessRejection, InDoubt, NotFound, Throttled, Transient
from shared.fo import odata
from shared.fo.client import BatchOperation
from shared.settings import load_settings
from tests.conftest import bridge_env, make_client

pytestmark = pytest.mark.integration


def test_token_comes_through_msal_discovery_and_is_reused_from_cache(settings, emulator):
    fo, tokens = make_client(settings)
    for _ in range(5):
        list(fo.query("Warehouses", company="USMF"))
    assert tokens.identity_provider_calls == 1 and tokens.cache_hits == 4
    assert emulator.stats.token_requests == 1
    assert emulator.stats.by_route[emulator.config.tenant_id] == 2  # OpenID discovery + token


def test_wrong_secret_surfaces_the_aadsts_code(emulator, azurite, table_prefix):
    settings = load_settings(bridge_env(emulator, azurite, table_prefix, FO_CLIENT_SECRET="wrong"))
    fo, _ = make_client(settings)
    with pytest.raises(AuthError) as caught:
        fo.send_message("USMF", "ProdProductionOrderStart", {"ProductionOrderNumber": "P000001"})
    assert caught.value.aadsts == "AADSTS7000215"
    assert "wrong" not in str(caught.value)


def test_unknown_client_surfaces_aadsts700016(emulator, azurite, table_prefix):
    settings = load_settings(bridge_env(emulator, azurite, table_prefix, FO_CLIENT_ID="nobody"))
    with pytest.raises(AuthError) as caught:
        list(make_client(settings)[0].query("Warehouses", company="USMF"))
    assert caught.value.aadsts == "AADSTS700016"


def test_app_not_registered_in_fo_gets_the_registration_hint(settings, emulator):
    emulator.entra.apps[settings.fo_client_id].registered_in_fo = False
    with pytest.raises(AuthError) as caught:
        list(make_client(settings)[0].query("Warehouses", company="USMF"))
    assert "Microsoft Entra ID applications" in str(caught.value) and caught.value.status == 401


def test_certificate_credentials_sign_a_client_assertion(emulator, azurite, table_prefix, tmp_path):
    path = tmp_path / "client.pem"
    make_client_certificate(path)
    from devtools.fo_emulator.entra import load_certificate_pem

    emulator.entra.apps["cert-app"] = AppRegistration("cert-app", certificate_pem=load_certificate_pem(path))
    env = bridge_env(
        emulator, azurite, table_prefix, FO_AUTH_MODE="certificate", FO_CLIENT_ID="cert-app", FO_CERTIFICATE_PATH=str(path)
    )
    env.pop("FO_CLIENT_SECRET")
    rows = list(make_client(load_settings(env))[0].query("Warehouses", company="USMF"))
    assert len(rows) == 5


def test_certificate_not_registered_for_the_app_is_refused(emulator, azurite, table_prefix, tmp_path):
    registered, other = tmp_path / "a.pem", tmp_path / "b.pem"
    make_client_certificate(registered)
    make_client_certificate(other)
    from devtools.fo_emulator.entra import load_certificate_pem

    emulator.entra.apps["cert-app"] = AppRegistration("cert-app", certificate_pem=load_certificate_pem(registered))
    env = bridge_env(
        emulator, azurite, table_prefix, FO_AUTH_MODE="certificate", FO_CLIENT_ID="cert-app", FO_CERTIFICATE_PATH=str(other)
    )
    with pytest.raises(AuthError) as caught:
        list(make_client(load_settings(env))[0].query("Warehouses", company="USMF"))
    assert caught.value.aadsts == "AADSTS700027"


def test_managed_identity_through_the_app_service_endpoint(emulator, azurite, table_prefix, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.base_url + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", emulator.entra.managed_identity_header)
    env = bridge_env(emulator, azurite, table_prefix, FO_AUTH_MODE="managed_identity")
    fo, tokens = make_client(load_settings(env))
    assert len(list(fo.query("Warehouses", company="USMF"))) == 5
    list(fo.query("Warehouses", company="USMF"))
    assert tokens.identity_provider_calls == 1


def test_an_expired_token_is_refreshed(emulator, azurite, table_prefix, monkeypatch):
    monkeypatch.setattr(emulator.entra, "token_lifetime_s", 2)
    fo, tokens = make_client(load_settings(bridge_env(emulator, azurite, table_prefix)))
    list(fo.query("Warehouses", company="USMF"))
    before = tokens.identity_provider_calls
    time.sleep(2.5)
    assert len(list(fo.query("Warehouses", company="USMF"))) == 5
    assert tokens.identity_provider_calls > before  # a new token, not the expired one


def test_429_with_retry_after_2_makes_every_thread_wait_then_succeeds(settings, emulator):
    fo, _ = make_client(settings)
    list(fo.query("Warehouses", company="USMF"))  # token and discovery first, outside the budget
    emulator.set_throttle(rate_per_s=0.5, burst=1)
    list(fo.query("Warehouses", company="USMF"))  # spends the one token the bucket holds
    started = time.monotonic()
    finished = {}

    def call(name):
        list(fo.query("Warehouses", company="USMF"))
        finished[name] = time.monotonic() - started

    first = threading.Thread(target=call, args=("first",))
    first.start()
    time.sleep(0.5)
    throttled_before_second = emulator.stats.throttled
    second = threading.Thread(target=call, args=("second",))
    second.start()
    time.sleep(1.0)
    assert emulator.stats.throttled == throttled_before_second == 1  # the second thread waited instead of calling
    first.join()
    second.join()
    assert min(finished.values()) >= 2.0
    assert fo.pacer.pauses >= 1


def test_throttling_beyond_the_deadline_raises_throttled(emulator, azurite, table_prefix):
    fo, _ = make_client(load_settings(bridge_env(emulator, azurite, table_prefix, FO_CALL_DEADLINE_S="1")))
    list(fo.query("Warehouses", company="USMF"))
    emulator.set_throttle(rate_per_s=0.1, burst=1)
    list(fo.query("Warehouses", company="USMF"))
    with pytest.raises(Throttled) as caught:
        list(fo.query("Warehouses", company="USMF"))
    assert caught.value.retry_after >= 5


def test_a_400_with_an_infolog_becomes_a_business_rejection(fo):
    with pytest.raises(BusinessRejection) as caught:
        fo.send_message("USMF", "ProdProductionOrderPickingList", {"ProductionOrderNumber": "P000001", "PickingListLines": [{}]})
    assert "ItemNumber must be filled in" in caught.value.infolog
    assert caught.value.status == 400


def test_paging_collects_every_page(settings, emulator):
    emulator.config.page_size = 7
    fo, _ = make_client(settings)
    rows = list(fo.query("ProductionOrderHeaders", company="USMF"))
    assert len(rows) == 40 and len({r["ProductionOrderNumber"] for r in rows}) == 40
    assert emulator.stats.by_route["data"] == 6


def test_queries_stay_inside_the_company(fo):
    rows = list(fo.query("ProductionOrderHeaders", company="DEMF"))
    assert len(rows) == 3 and {r["dataAreaId"] for r in rows} == {"demf"}


def test_injection_shaped_ids_do_not_widen_a_query(fo):
    for hostile in ["' or 1 eq 1", "P00000*", "*", "P000001' or ProductionOrderNumber ne '", "%27", "P/0", "P000001)"]:
        assert list(fo.query("ProductionOrderHeaders", company="USMF", where=odata.eq("ProductionOrderNumber", hostile))) == []
    assert len(list(fo.query("ProductionOrderHeaders", company="USMF", where=odata.eq("ProductionOrderNumber", "P000001")))) == 1


def test_get_by_key_and_not_found(fo):
    assert fo.get("ProductionOrderHeaders", {"dataAreaId": "usmf", "ProductionOrderNumber": "P000002"})["ItemNumber"]
    with pytest.raises(NotFound):
        fo.get("ProductionOrderHeaders", {"dataAreaId": "usmf", "ProductionOrderNumber": "P0'9*"})


def test_5xx_is_retried_until_it_succeeds(settings, emulator):
    fo, _ = make_client(settings)
    list(fo.query("Warehouses", company="USMF"))
    emulator.set_faults(error_5xx_rate=0.6)
    for _ in range(10):
        assert len(list(fo.query("Warehouses", company="USMF"))) == 5
    assert fo.stats.retries > 0


def test_a_dropped_connection_after_a_send_is_in_doubt(settings, emulator):
    fo, _ = make_client(settings)
    list(fo.query("Warehouses", company="USMF"))
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(Transient) as caught:
        fo.send_message("USMF", "ProdProductionOrderStart", {"ProductionOrderNumber": "P000001"})
    assert isinstance(caught.value, InDoubt)


def test_a_slow_answer_beyond_the_read_timeout_is_in_doubt_for_a_send(emulator, azurite, table_prefix):
    fo, _ = make_client(load_settings(bridge_env(emulator, azurite, table_prefix, FO_READ_TIMEOUT_S="0.5")))
    list(fo.query("Warehouses", company="USMF"))
    emulator.set_faults(slow_rate=1.0, slow_s=1.5)
    with pytest.raises(InDoubt):
        fo.send_message("USMF", "ProdProductionOrderStart", {"ProductionOrderNumber": "P000001"})
    assert emulator.app.send_message_calls == 1  # it did arrive: exactly why a blind retry is unsafe


def test_batch_changeset_is_atomic_and_reports_the_failing_operation(fo, emulator):
    header = {"dataAreaId": "usmf", "JournalNumber": "MES-T1", "JournalNameId": "ITrf"}
    bad_line = {
        "dataAreaId": "usmf",
        "JournalNumber": "MES-T1",
        "LineNumber": 1,
        "ItemNumber": "NOPE",
        "InventoryQuantity": 1,
        "TransactionDate": "2026-11-23T00:00:00Z",
        "SourceInventorySiteId": "1",
        "SourceWarehouseId": "11",
        "DestinationInventorySiteId": "1",
        "DestinationWarehouseId": "12",
    }
    with pytest.raises(BusinessRejection) as caught:
        fo.batch(
            [
                BatchOperation("POST", "InventoryTransferJournalHeaders", header),
                BatchOperation("POST", "InventoryTransferJournalEntries", bad_line),
            ]
        )
    assert "operation 2" in str(caught.value) and "NOPE does not exist" in caught.value.infolog
    assert emulator.app.tables["InventoryTransferJournalHeaders"] == []
    good_line = {**bad_line, "ItemNumber": "RM-0001"}
    results = fo.batch(
        [
            BatchOperation("POST", "InventoryTransferJournalHeaders", header),
            BatchOperation("POST", "InventoryTransferJournalEntries", good_line),
        ]
    )
    assert [r.status for r in results] == [201, 201]
    with pytest.raises(BusinessRejection) as again:
        fo.batch([BatchOperation("POST", "InventoryTransferJournalHeaders", header)])
    assert "already exists" in again.value.infolog


def test_custom_service_call(fo, settings):
    result = {
        "MesMessageId": "q-1",
        "ItemNumber": "RM-0001",
        "BatchNumber": "B0001-001",
        "TestGroupId": "VISUAL",
        "Outcome": "Pass",
        "Tests": [{"TestId": "WEIGHT", "Value": 1.5}],
    }
    answer = fo.call_service(settings.fo_quality_service_path, {"_companyId": "USMF", "_result": result})
    assert answer == {"QualityOrderNumber": "QO-000001", "Created": True}
    with pytest.raises(NotFound):
        fo.call_service("Nope/Nope/nope", {})
