"""The emulator checked against docs/reference/fo-contracts.md: it must refuse what F&O refuses."""

import concurrent.futures
import json
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from devtools.fo_emulator import EmulatorConfig, FoEmulator
from devtools.fo_emulator.contracts import schemas, validate_content
from devtools.fo_emulator.plant import DOCUMENTED_FIELDS
from shared.fo.http import PinnedTrustSession
from shared.fo.production_order import READS
from tests.conftest import small_plant

pytestmark = pytest.mark.integration

SCHEMA = schemas("2024", "ItemBatchNumber")


@pytest.fixture
def http(emulator):
    session = PinnedTrustSession(str(emulator.ca_path))
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.config.client_id,
        "client_secret": emulator.client_secret,
        "scope": emulator.base_url + "/.default",
    }
    token = session.post(f"{emulator.base_url}/{emulator.config.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def send(http, emulator, message_type, content, company="USMF"):
    body = {
        "_companyId": company,
        "_messageQueue": "JmgMES3P",
        "_messageType": message_type,
        "_messageContent": json.dumps(content),
    }
    return http.post(emulator.base_url + "/api/services/SysMessageServices/SysMessageService/SendMessage", json=body)


@pytest.mark.parametrize(
    ("message_type", "content", "problem"),
    [
        ("ProdProductionOrderStart", {}, "Field ProductionOrderNumber must be filled in."),
        ("ProdProductionOrderReportFinished", {"ProductionOrderNumber": "P1"}, "Field ReportFinishedLines must be filled in."),
        (
            "ProdProductionOrderReportFinished",
            {"ProductionOrderNumber": "P1", "ReportFinishedLines": []},
            "ReportFinishedLines must be filled in",
        ),
        (
            "ProdProductionOrderPickingList",
            {"ProductionOrderNumber": "P1", "PickingListLines": [{"ConsumptionBOMQuantity": 1}]},
            "Field ItemNumber must be filled in.",
        ),
        (
            "ProdProductionOrderRouteCard",
            {"ProductionOrderNumber": "P1", "RouteCardLines": [{"Hours": 1}]},
            "Field OperationNumber must be filled in.",
        ),
        ("ProdProductionOrderEnd", {"ProductionOrderNumber": ""}, "Field ProductionOrderNumber must be filled in."),
        (
            "ProdProductionOrderStart",
            {"ProductionOrderNumber": "P1", "AutomaticBOMConsumptionRule": "Sometimes"},
            "not a symbol of enum",
        ),
        ("ProdProductionOrderEnd", {"ProductionOrderNumber": "P1", "AutoUpdate": "true"}, "not a NoYes symbol"),
        ("ProdProductionOrderStart", {"ProductionOrderNumber": "P1", "StartedDate": "22/11/2026"}, "expected a date yyyy-MM-dd"),
        ("ProdProductionOrderStart", {"ProductionOrderNumber": "P1", "StartedDate": "2026-02-30"}, "not a calendar date"),
        ("ProdProductionOrderEnd", {"ProductionOrderNumber": "P1", "ExecutedDateTime": "2026-11-22"}, "expected a date and time"),
        ("ProdProductionOrderStart", {"ProductionOrderNumber": "P1", "StartedQuantity": "5"}, "expected a number"),
        (
            "ProdProductionOrderRouteCard",
            {"ProductionOrderNumber": "P1", "RouteCardLines": [{"OperationNumber": 10.5}]},
            "expected an integer",
        ),
        ("ProdProductionOrderStart", {"ProductionOrderNumber": "P1", "Colour": "red"}, "Unknown field Colour"),
        (
            "ProdProductionOrderReportFinished",
            {"ProductionOrderNumber": "P1", "ReportFinishedLines": [{"ProductionJournalNameId": "x"}]},
            "Unknown field ProductionJournalNameId",
        ),
        ("ProdProductionOrderNope", {"ProductionOrderNumber": "P1"}, "is not registered"),
    ],
)
def test_content_rules(message_type, content, problem):
    assert any(problem in p for p in validate_content(message_type, content, SCHEMA))


def test_the_2022_journal_field_names_are_accepted_when_configured():
    old = schemas("2022")
    content = {"ProductionOrderNumber": "P1", "ReportFinishedLines": [{"ProductionJournalNameId": "x"}]}
    assert validate_content("ProdProductionOrderReportFinished", content, old) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"_messageQueue": "Other"}, "Message queue Other does not exist"),
        ({"_companyId": "QQQQ"}, "Company QQQQ does not exist"),
        ({"_messageContent": {"ProductionOrderNumber": "P000001"}}, "must be a string"),
        ({"_messageContent": "{not json"}, "not valid JSON"),
        ({"_messageContent": '{"ProductionOrderNumber": "P000001", "StartedQuantity": NaN}'}, "not valid JSON"),
        ({"_extra": 1}, "unexpected ['_extra']"),
    ],
)
def test_send_message_refuses_a_bad_envelope(http, emulator, change, problem):
    body = {
        "_companyId": "USMF",
        "_messageQueue": "JmgMES3P",
        "_messageType": "ProdProductionOrderStart",
        "_messageContent": json.dumps({"ProductionOrderNumber": "P000001"}),
    }
    body.update(change)
    answer = http.post(emulator.base_url + "/api/services/SysMessageServices/SysMessageService/SendMessage", json=body)
    assert answer.status_code == 400
    assert problem in answer.json()["Message"]


def test_fo_endpoints_refuse_missing_foreign_and_expired_tokens(emulator, http, monkeypatch):
    url = emulator.base_url + "/data/Warehouses"
    assert requests.get(url, verify=str(emulator.ca_path)).status_code == 401
    forged = requests.get(url, verify=str(emulator.ca_path), headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"})
    assert forged.status_code == 401
    now = [time.time()]
    monkeypatch.setattr(emulator.entra, "clock", lambda: now[0])
    monkeypatch.setattr(emulator.entra, "token_lifetime_s", 60)
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.config.client_id,
        "client_secret": emulator.client_secret,
        "scope": emulator.base_url + "/.default",
    }
    short = requests.post(
        f"{emulator.base_url}/{emulator.config.tenant_id}/oauth2/v2.0/token", data=form, verify=str(emulator.ca_path)
    )
    token = short.json()["access_token"]
    assert requests.get(url, verify=str(emulator.ca_path), headers={"Authorization": f"Bearer {token}"}).status_code == 200
    now[0] += 60
    expired = requests.get(url, verify=str(emulator.ca_path), headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401 and "expired" in expired.json()["Message"]


def test_token_endpoint_answers_like_entra(emulator):
    url = f"{emulator.base_url}/{emulator.config.tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.config.client_id,
        "client_secret": emulator.client_secret,
        "scope": "https://elsewhere.example/.default",
    }
    answer = requests.post(url, data=form, verify=str(emulator.ca_path))
    assert answer.status_code == 400 and answer.json()["error_codes"] == [500011]
    unknown_tenant = requests.get(f"{emulator.base_url}/nope/v2.0/.well-known/openid-configuration", verify=str(emulator.ca_path))
    assert unknown_tenant.status_code == 400 and unknown_tenant.json()["error_description"].startswith("AADSTS90002")


def test_messages_of_an_order_are_processed_in_order_and_a_failure_blocks_the_order(http, emulator):
    assert send(
        http,
        emulator,
        "ProdProductionOrderPickingList",
        {"ProductionOrderNumber": "P000003", "PickingListLines": [{"ItemNumber": "RM-0001", "ConsumptionBOMQuantity": 1}]},
    ).ok
    assert send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000003"}).ok
    assert send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000004"}).ok
    emulator.wait_idle(5)
    picking, start, other = emulator.app.messages
    assert picking.state == "Failed" and picking.attempts == 3
    assert "must be started first" in picking.infolog[-1]
    assert start.state == "Queued"  # blocked behind the failed message of the same order
    assert other.state == "Processed"  # other orders go on
    emulator.app.cancel_message(picking.id)
    emulator.wait_idle(5)
    assert start.state == "Processed"


def test_report_as_finished_waits_for_its_start_message(http, emulator):
    emulator.config.processor_interval_s = 60  # process only when the test says so
    time.sleep(0.1)
    assert send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000005"}).ok
    assert send(
        http,
        emulator,
        "ProdProductionOrderReportFinished",
        {"ProductionOrderNumber": "P000005", "ReportFinishedLines": [{"ReportedGoodQuantity": 1}]},
    ).ok
    start, finished = emulator.app.messages
    assert finished.depends_on == start.id
    emulator.app.process_queue()
    assert start.state == finished.state == "Processed"


def test_status_moves_released_started_reported_finished_ended(http, emulator):
    order = emulator.app.find("ProductionOrderHeaders", dataAreaId="usmf", ProductionOrderNumber="P000006")
    quantity = order["ScheduledQuantity"]
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000006"})
    send(
        http,
        emulator,
        "ProdProductionOrderReportFinished",
        {
            "ProductionOrderNumber": "P000006",
            "ReportFinishedLines": [{"ReportedGoodQuantity": quantity, "ItemBatchNumber": "FGB-1"}],
        },
    )
    send(http, emulator, "ProdProductionOrderEnd", {"ProductionOrderNumber": "P000006"})
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000006"})
    emulator.wait_idle(5)
    assert order["ProductionOrderStatus"] == "Completed"
    assert [m.state for m in emulator.app.messages] == ["Processed", "Processed", "Processed", "Failed"]
    assert emulator.app.find("ItemBatches", dataAreaId="usmf", ItemNumber=order["ItemNumber"], BatchNumber="FGB-1")


def test_domain_rules_fail_with_an_infolog(http, emulator):
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P999999"})
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000007", "StartedQuantity": -1})
    send(http, emulator, "ProdProductionOrderEnd", {"ProductionOrderNumber": "P000008"})
    emulator.wait_idle(5)
    infologs = [m.infolog[-1] for m in emulator.app.messages]
    assert "P999999 does not exist" in infologs[0]
    assert "not negative" in infologs[1]
    assert "cannot be started" not in infologs[2] and "must be started first" in infologs[2]


def test_each_processed_or_failed_message_raises_a_business_event(http, emulator):
    received: list[dict[str, Any]] = []
    emulator.subscribe(received.extend)
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P000009"})
    send(http, emulator, "ProdProductionOrderStart", {"ProductionOrderNumber": "P999999"})
    assert emulator.wait_idle(5)
    data = [json.loads(e["data"]) for e in received]
    assert data[0]["BusinessEventId"] == "BusinessEventsTestEndpointEvent"
    processed = [d for d in data if d["BusinessEventId"] == "SysMessageProcessorMessageProcessedBusinessEvent"]
    assert sorted(d["MessageState"] for d in processed) == ["Failed", "Processed"]
    assert all(d["MessageContent"] in {m.content for m in emulator.app.messages} for d in processed)
    numbers = [d["ControlNumber"] for d in data]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert any(d["BusinessEventId"] == "ProductionOrderStatusChangedBusinessEvent" for d in data)


def test_events_can_be_doubled_and_reordered(emulator):
    emulator.app.events.duplicate_rate = 1.0
    received: list[dict[str, Any]] = []
    emulator.subscribe(received.extend, test_event=False)
    for n in range(10, 15):
        emulator.app.change_status("usmf", f"P{n:06d}", "Stopped")
    assert emulator.wait_idle(5)
    ids = [e["id"] for e in received]
    assert len(ids) == 10 and len(set(ids)) == 5


def test_paging_follows_next_links_to_every_row(http, emulator):
    emulator.config.page_size = 6
    url = (
        emulator.base_url + "/data/ProductionOrderBillOfMaterialLines?cross-company=true&$filter=dataAreaId eq 'usmf'&$count=true"
    )
    rows, pages, total = [], 0, None
    while url:
        body = http.get(url).json()
        total = body.get("@odata.count", total)
        rows += body["value"]
        pages += 1
        url = body.get("@odata.nextLink")
    assert len(rows) == total == len(emulator.app.tables["ProductionOrderBillOfMaterialLines"]) and pages > 1


def test_queries_refuse_what_fo_refuses(http, emulator):
    base = emulator.base_url + "/data/ProductionOrderHeaders?cross-company=true&$filter="
    assert "not supported" in http.get(base + "ItemNumber in ('a')").json()["error"]["message"]
    assert "not supported" in http.get(base + "contains(ItemNumber, 'a')").json()["error"]["message"]
    assert http.get(base + "Nope eq 1").status_code == 400
    assert http.get(emulator.base_url + "/data/Nope").status_code == 404
    only_default = http.get(emulator.base_url + "/data/ProductionOrderHeaders").json()["value"]
    assert {r["dataAreaId"] for r in only_default} == {"usmf"}


@pytest.mark.parametrize(
    ("entity_set", "invented"),
    [
        ("ProductionOrderHeaders", "ProductionQuantity"),
        ("ProductionOrderBillOfMaterialLines", "BOMUnitSymbol"),
        ("ProductionOrderBillOfMaterialLines", "OperationNumber"),
        ("ProductionOrderRouteOperations", "OperationResourceId"),
        ("ReleasedProductsV2", "UnitSymbol"),
    ],
)
def test_production_entities_serve_only_documented_fields(http, emulator, entity_set, invented):
    assert all(set(row) == DOCUMENTED_FIELDS[entity_set] for row in emulator.app.tables[entity_set])
    base = f"{emulator.base_url}/data/{entity_set}?cross-company=true"
    assert http.get(f"{base}&$select={invented}").status_code == 400
    assert http.get(f"{base}&$filter={invented} eq 'x'").status_code == 400
    # What the bridge reads for a work order is served, field by field.
    fields = READS[entity_set]
    answer = http.get(f"{base}&$top=1&$select={','.join(fields)}")
    assert answer.status_code == 200 and set(answer.json()["value"][0]) == set(fields)


TRANSFER_LINE = {
    "dataAreaId": "usmf",
    "JournalNumber": "T-TYPES",
    "LineNumber": 1,
    "ItemNumber": "RM-0001",
    "InventoryQuantity": 4.5,
    "TransactionDate": "2026-11-23T00:00:00Z",
    "SourceInventorySiteId": "1",
    "SourceWarehouseId": "11",
    "SourceItemBatchNumber": "B0001-001",
    "DestinationInventorySiteId": "1",
    "DestinationWarehouseId": "12",
    "DestinationItemBatchNumber": "B0001-001",
}


def post(http, emulator, entity_set, body):
    return http.post(f"{emulator.base_url}/data/{entity_set}", json=body)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # F&O's $metadata declares TransactionDate Edm.DateTimeOffset: a bare date or a missing offset is refused.
        ({"TransactionDate": "2026-11-23"}, "expected type 'Edm.DateTimeOffset'"),
        ({"TransactionDate": "2026-11-23T00:00:00"}, "expected type 'Edm.DateTimeOffset'"),
        ({"TransactionDate": "2026-02-30T00:00:00Z"}, "expected type 'Edm.DateTimeOffset'"),
        ({"TransactionDate": None}, "Nullable=False"),
        ({"InventoryQuantity": "4.5"}, "expected type 'Edm.Decimal'"),
        ({"LineNumber": True}, "expected type 'Edm.Decimal'"),
        ({"SourceWarehouseId": 11}, "expected type 'Edm.String'"),
        ({"InventoryWarehouseId": "11"}, "does not exist on type 'InventoryTransferJournalEntries'"),
    ],
)
def test_odata_writes_are_typed_as_fo_metadata_declares(http, emulator, change, problem):
    assert (
        post(
            http,
            emulator,
            "InventoryTransferJournalHeaders",
            {"dataAreaId": "usmf", "JournalNumber": "T-TYPES", "JournalNameId": "ITrf"},
        ).status_code
        == 201
    )
    answer = post(http, emulator, "InventoryTransferJournalEntries", {**TRANSFER_LINE, **change})
    assert answer.status_code == 400 and problem in answer.json()["error"]["message"], answer.text
    good = post(
        http, emulator, "InventoryTransferJournalEntries", {**TRANSFER_LINE, "TransactionDate": "2026-11-23T00:00:00+01:00"}
    )
    assert good.status_code == 201, good.text
    header = {"dataAreaId": "usmf", "JournalNumber": "T-ENUM", "JournalNameId": "ITrf", "IsPosted": "true"}
    assert "NoYes" in post(http, emulator, "InventoryTransferJournalHeaders", header).json()["error"]["message"]


def test_journal_rules_fail_with_an_infolog(http, emulator):
    def infolog(entity_set, body):
        answer = post(http, emulator, entity_set, body)
        assert answer.status_code >= 400, answer.text
        return answer.json()["error"]["innererror"]["message"]

    # Each header entity takes journal names of its own type only.
    wrong = {"dataAreaId": "usmf", "JournalNumber": "T-1", "JournalNameId": "IMov"}
    assert "is a Movement journal, not a Transfer journal" in infolog("InventoryTransferJournalHeaders", wrong)
    post(http, emulator, "InventoryTransferJournalHeaders", {**wrong, "JournalNameId": "ITrf"})
    same = {**TRANSFER_LINE, "JournalNumber": "T-1", "DestinationWarehouseId": "11"}
    assert "nothing is transferred" in infolog("InventoryTransferJournalEntries", same)
    unknown_batch = {**TRANSFER_LINE, "JournalNumber": "T-1", "DestinationItemBatchNumber": "NEW-1"}
    assert "Batch number NEW-1 does not exist" in infolog("InventoryTransferJournalEntries", unknown_batch)
    elsewhere = {**TRANSFER_LINE, "JournalNumber": "T-1", "DestinationInventorySiteId": "2"}
    assert "Warehouse 12 does not belong to site 2" in infolog("InventoryTransferJournalEntries", elsewhere)
    # A movement journal line posts against an offset account: without one it is refused.
    post(
        http, emulator, "InventoryMovementJournalHeaders", {"dataAreaId": "usmf", "JournalNumber": "M-1", "JournalNameId": "IMov"}
    )
    movement = {
        "dataAreaId": "usmf",
        "JournalNumber": "M-1",
        "LineNumber": 1,
        "ItemNumber": "RM-0001",
        "InventoryQuantity": -2,
        "TransactionDate": "2026-11-23T00:00:00Z",
        "InventorySiteId": "1",
        "InventoryWarehouseId": "11",
    }
    assert "OffsetMainAccountIdDisplayValue" in infolog("InventoryMovementJournalEntries", movement)
    with_offset = post(
        http, emulator, "InventoryMovementJournalEntries", {**movement, "OffsetMainAccountIdDisplayValue": "600140"}
    )
    assert with_offset.status_code == 201, with_offset.text


def test_star_in_an_eq_literal_is_a_wildcard_like_fo(http, emulator):
    url = (
        emulator.base_url
        + "/data/ProductionOrderHeaders?cross-company=true&$filter=ProductionOrderNumber eq 'P00000*' and dataAreaId eq 'usmf'"
    )
    assert len(http.get(url).json()["value"]) == 9


def test_throttling_answers_429_with_retry_after_in_seconds(http, emulator):
    emulator.set_throttle(rate_per_s=1, burst=3)
    statuses = [http.get(emulator.base_url + "/data/Warehouses").status_code for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    refused = http.get(emulator.base_url + "/data/Warehouses")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_concurrency_cap_answers_429(http, emulator):
    emulator.set_throttle(max_concurrent=0)
    answer = http.get(emulator.base_url + "/data/Warehouses")
    assert answer.status_code == 429 and "concurrent requests exceeded the limit of 0" in answer.json()["Message"]


def test_quality_service_contract_and_idempotency(http, emulator):
    url = emulator.base_url + "/api/services/" + emulator.config.quality_service_path
    result = {
        "MesMessageId": "qa-1",
        "ItemNumber": "RM-0002",
        "BatchNumber": "B0002-001",
        "TestGroupId": "CHEM",
        "Outcome": "Fail",
        "Tests": [{"TestId": "PH", "Value": 9.1}],
    }
    first = http.post(url, json={"_companyId": "USMF", "_result": result}).json()
    again = http.post(url, json={"_companyId": "USMF", "_result": result}).json()
    assert first["Created"] and not again["Created"] and first["QualityOrderNumber"] == again["QualityOrderNumber"]
    batch = emulator.app.find("ItemBatches", dataAreaId="usmf", ItemNumber="RM-0002", BatchNumber="B0002-001")
    assert batch["BatchDispositionCode"] == "Blocked"
    missing = http.post(url, json={"_companyId": "USMF", "_result": {**result, "MesMessageId": "qa-2", "Outcome": "Maybe"}})
    assert missing.status_code == 400


def test_standalone_run_prints_its_urls(tmp_path):
    settings = tmp_path / "s.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.fo_emulator", "--port", "0", "--orders", "5", "--settings-out", str(settings)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("F&O emulator    https://127.0.0.1:")
        values = json.loads(settings.read_text())["Values"]
        assert requests.get(values["FO_BASE_URL"] + "/data/Warehouses", verify=values["FO_CA_BUNDLE"]).status_code == 401
    finally:
        process.terminate()
        process.wait(10)


def test_fifty_ms_latency_is_not_limited_by_the_emulator():
    """The added latency is served concurrently, as F&O's is: 16 callers get many calls in progress at
    once, not one after another. Counted by the emulator (no timed assertion): a latency served under
    a lock, or a server that handles one request at a time, keeps the overlap at 1."""
    config = EmulatorConfig(plant=small_plant(orders=5))
    config.faults.latency_ms = 50
    with FoEmulator(config) as emulator:
        session = PinnedTrustSession(str(emulator.ca_path))
        form = {
            "grant_type": "client_credentials",
            "client_id": config.client_id,
            "client_secret": emulator.client_secret,
            "scope": emulator.base_url + "/.default",
        }
        token = session.post(f"{emulator.base_url}/{config.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(
                pool.map(lambda _: session.get(emulator.base_url + "/data/Warehouses", headers=headers).status_code, range(160))
            )
        assert statuses == [200] * 160 and emulator.stats.accepted == 160
        # 160 calls of at least 50 ms from 16 threads: far above 4 overlap unless the emulator serialises them.
        assert emulator.stats.peak_overlap >= 4, emulator.stats
