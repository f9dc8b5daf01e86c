"""Each mapping against a golden F&O message built from docs/reference/fo-contracts.md §1.3."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devtools import mes
from devtools.fo_emulator.contracts import schemas, validate_content
from shared.fo.client import BatchOperation
from shared.inbound import mapping
from shared.inbound.dispatch import content_hash, execute
from shared.inbound.messages import MES_EVENTS, InventoryMoved, ProductionEnded, ProductionStarted

# The plant's business day comes from its time zone (PLANT_TIME_ZONE), never from the sender's offset.
OPTIONS = mapping.MappingOptions(time_zone="America/Chicago")
AT = datetime(2026, 11, 23, 23, 30, tzinfo=timezone(timedelta(hours=-6)))  # 05:30 UTC on the 24th


def parse(kind, order, body, **kw):
    return MES_EVENTS[kind].model_validate(mes.event(kind, order, body, occurred_at=AT, message_id="m-1", **kw))


def test_production_started():
    call = mapping.production_started(
        parse("production_started", "P000123", {"started_quantity": 40, "bom_consumption": "never"}), OPTIONS
    )
    assert call == mapping.SendMessage(
        "USMF",
        "ProdProductionOrderStart",
        {
            "ProductionOrderNumber": "P000123",
            "StartedQuantity": 40.0,
            "StartedDate": "2026-11-23",
            "AutomaticBOMConsumptionRule": "Never",
        },
    )


def test_material_consumed_with_and_without_the_batch_field():
    event = parse(
        "material_consumed",
        "P000123",
        {
            "lines": [
                {
                    "item_number": "RM-0001",
                    "batch_number": "B1",
                    "quantity": 2.5,
                    "unit": "kg",
                    "operation_number": 10,
                    "consumption_ended": True,
                }
            ]
        },
    )
    golden_line = {
        "ItemNumber": "RM-0001",
        "ConsumptionBOMQuantity": 2.5,
        "BOMUnitSymbol": "kg",
        "OperationNumber": 10,
        "ConsumptionDate": "2026-11-23",
        "IsConsumptionEnded": "Yes",
    }
    assert mapping.material_consumed(event, OPTIONS).content == {
        "ProductionOrderNumber": "P000123",
        "PickingListLines": [golden_line],
    }
    with_batch = mapping.material_consumed(event, mapping.MappingOptions(picking_batch_field="ItemBatchNumber"))
    assert with_batch.content["PickingListLines"][0]["ItemBatchNumber"] == "B1"
    assert with_batch.message_type == "ProdProductionOrderPickingList"


def test_operation_reported():
    event = parse(
        "operation_reported",
        "P000123",
        {
            "lines": [
                {
                    "operation_number": 20,
                    "hours": 1.75,
                    "good_quantity": 40,
                    "error_quantity": 1,
                    "operation_completed": True,
                    "worker": "000123",
                    "resource": "WLD-01",
                    "task": "setup",
                }
            ]
        },
    )
    assert mapping.operation_reported(event, OPTIONS).content == {
        "ProductionOrderNumber": "P000123",
        "RouteCardLines": [
            {
                "OperationNumber": 20,
                "OperationPriority": "Primary",
                "Hours": 1.75,
                "GoodQuantity": 40.0,
                "ErrorQuantity": 1.0,
                "OperationCompleted": "Yes",
                "Worker": "000123",
                "OperationsResourceId": "WLD-01",
                "TaskType": "Setup",
                "ConsumptionDate": "2026-11-23",
            }
        ],
    }


def test_output_reported_with_a_batch():
    event = parse(
        "output_reported",
        "P000123",
        {
            "item_number": "FG-1",
            "batch_number": "FGB-1",
            "good_quantity": 38,
            "scrap_quantity": 2,
            "scrap_cause": "machine",
            "end_job": True,
            "warehouse": "11",
        },
    )
    assert mapping.output_reported(event, OPTIONS).content == {
        "ProductionOrderNumber": "P000123",
        "ReportFinishedLines": [
            {
                "ItemNumber": "FG-1",
                "ProductionType": "MainItem",
                "ItemBatchNumber": "FGB-1",
                "ProductionWarehouseId": "11",
                "ReportAsFinishedDate": "2026-11-23",
                "ErrorCause": "Machine",
                "ReportedGoodQuantity": 38.0,
                "ReportedErrorQuantity": 2.0,
                "EndJob": "Yes",
            }
        ],
    }


def test_output_reported_with_serial_numbers_has_one_line_per_unit():
    event = parse(
        "output_reported",
        "P000123",
        {"item_number": "FG-1", "serial_numbers": ["S1", "S2"], "good_quantity": 2, "scrap_quantity": 1},
    )
    lines = mapping.output_reported(event, OPTIONS).content["ReportFinishedLines"]
    assert [(line["ProductSerialNumber"], line["ReportedGoodQuantity"], line["ReportedErrorQuantity"]) for line in lines] == [
        ("S1", 1.0, 0.0),
        ("S2", 1.0, 1.0),
    ]


def test_serial_numbers_must_match_the_good_quantity():
    with pytest.raises(ValueError, match="number of serial_numbers"):
        parse("output_reported", "P1", {"item_number": "FG-1", "serial_numbers": ["S1"], "good_quantity": 2})


def test_production_ended_uses_utc_for_the_time_and_the_plant_day_for_the_date():
    call = mapping.production_ended(parse("production_ended", "P000123", {}), OPTIONS)
    assert call.content == {
        "ProductionOrderNumber": "P000123",
        "ExecutedDateTime": "2026-11-24T05:30:00Z",
        "EndedDate": "2026-11-23",
        "AutoReportAsFinished": "No",
    }


def test_quality_result_goes_to_the_configured_service():
    event = parse(
        "quality_result",
        None,
        {
            "item_number": "FG-1",
            "batch_number": "FGB-1",
            "test_group": "FINAL",
            "outcome": "fail",
            "tests": [{"test_id": "WEIGHT", "value": 12.5, "unit": "kg", "outcome": "fail"}],
        },
    )
    call = mapping.quality_result(event, mapping.MappingOptions(quality_service_path="G/S/op"))
    assert call.path == "G/S/op"
    assert call.payload == {
        "_companyId": "USMF",
        "_result": {
            "MesMessageId": "m-1",
            "ItemNumber": "FG-1",
            "BatchNumber": "FGB-1",
            "TestGroupId": "FINAL",
            "Outcome": "Fail",
            "TestedAt": "2026-11-24T05:30:00Z",
            "Tests": [{"TestId": "WEIGHT", "Value": 12.5, "Unit": "kg", "Outcome": "Fail"}],
        },
    }


def test_inventory_moved_is_one_transfer_journal_line_keyed_by_the_message_id():
    event = parse(
        "inventory_moved",
        None,
        {
            "item_number": "RM-1",
            "batch_number": "B1",
            "quantity": 5,
            "from_site": "1",
            "from_warehouse": "11",
            "from_location": "L1",
            "to_site": "2",
            "to_warehouse": "21",
        },
    )
    call = mapping.inventory_moved(event, OPTIONS)
    journal = mapping.transfer_journal_number("USMF", "m-1")
    assert len(journal) == 10 and journal == call.natural_key == mapping.transfer_journal_number("usmf", "m-1")
    assert journal != mapping.movement_journal_number("USMF", "m-1")
    assert call.operations == (
        BatchOperation(
            "POST",
            "InventoryTransferJournalHeaders",
            {"dataAreaId": "usmf", "JournalNumber": journal, "JournalNameId": "ITrf", "Description": "MES m-1"},
        ),
        BatchOperation(
            "POST",
            "InventoryTransferJournalEntries",
            {
                "dataAreaId": "usmf",
                "JournalNumber": journal,
                "LineNumber": 1.0,
                "ItemNumber": "RM-1",
                "InventoryQuantity": 5.0,
                # The plant's day (the 23rd in Chicago) as Edm.DateTimeOffset, not a bare date.
                "TransactionDate": "2026-11-23T00:00:00Z",
                "SourceInventorySiteId": "1",
                "SourceWarehouseId": "11",
                "SourceWarehouseLocationId": "L1",
                "SourceItemBatchNumber": "B1",
                "DestinationInventorySiteId": "2",
                "DestinationWarehouseId": "21",
                "DestinationItemBatchNumber": "B1",
            },
        ),
    )


def test_a_batch_to_batch_move_names_both_batches_and_the_journal_name_and_sign_are_settings():
    body = {"item_number": "RM-1", "batch_number": "B1", "to_batch_number": "B2", "quantity": 2}
    body |= {"from_site": "1", "from_warehouse": "11", "to_site": "1", "to_warehouse": "11", "moved_on": "2026-11-20"}
    options = mapping.MappingOptions(transfer_journal_name="TRF", transfer_quantity_sign=-1.0)
    header, line = (
        dict(op.body or {}) for op in mapping.inventory_moved(parse("inventory_moved", None, body), options).operations
    )
    assert header["JournalNameId"] == "TRF"
    assert (line["SourceItemBatchNumber"], line["DestinationItemBatchNumber"]) == ("B1", "B2")
    assert line["InventoryQuantity"] == -2.0 and line["TransactionDate"] == "2026-11-20T00:00:00Z"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, "the move changes nothing"),
        ({"to_location": "l1", "from_location": "L1"}, "the move changes nothing"),  # F&O ids ignore case
        ({"batch_number": None, "to_batch_number": "B2", "to_warehouse": "12"}, "to_batch_number needs batch_number"),
    ],
)
def test_a_move_that_moves_nothing_is_refused(change, problem):
    body = {"item_number": "RM-1", "batch_number": "B1", "quantity": 2}
    body |= {"from_site": "1", "from_warehouse": "11", "to_site": "1", "to_warehouse": "11", **change}
    with pytest.raises(ValueError, match=problem):
        parse("inventory_moved", None, {k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize(
    "kind", ["production_started", "material_consumed", "operation_reported", "output_reported", "production_ended"]
)
def test_every_published_example_maps_to_content_fo_accepts(kind):
    from devtools.schemas import example

    for version in ("2024", "2022"):
        options = mapping.MappingOptions(
            journal_field_names=version,
            picking_batch_field="ItemBatchNumber",
            picking_list_journal="PickJ",
            route_card_journal="RouteJ",
            report_finished_journal="RafJ",
        )
        call = getattr(mapping, kind)(MES_EVENTS[kind].model_validate(example(kind)), options)
        assert validate_content(call.message_type, call.content, schemas(version, "ItemBatchNumber")) == []


def test_journal_names_use_the_field_names_of_the_configured_version():
    event = parse("output_reported", "P1", {"item_number": "FG-1", "good_quantity": 3})
    old = mapping.output_reported(event, mapping.MappingOptions(journal_field_names="2022", report_finished_journal="RafJ"))
    new = mapping.output_reported(event, mapping.MappingOptions(journal_field_names="2024", report_finished_journal="RafJ"))
    assert old.content["ReportFinishedLines"][0]["ProductionJournalNameId"] == "RafJ"
    assert new.content["ReportFinishedLines"][0]["JournalNameId"] == "RafJ"
    assert "JournalNameId" not in mapping.output_reported(event, OPTIONS).content["ReportFinishedLines"][0]


def test_lineage_edges():
    consumed = parse(
        "material_consumed",
        "P1",
        {"lines": [{"item_number": "RM-1", "batch_number": "B1", "quantity": 2}, {"item_number": "RM-2", "quantity": 1}]},
    )
    assert [(e.direction, e.item, e.batch, e.quantity) for e in mapping.consumed_edges(consumed)] == [
        ("consumed", "RM-1", "B1", 2.0)
    ]
    produced = parse("output_reported", "P1", {"item_number": "FG-1", "batch_number": "FB", "good_quantity": 3})
    assert [(e.direction, e.item, e.batch) for e in mapping.produced_edges(produced)] == [("produced", "FG-1", "FB")]


def test_the_content_hash_is_of_the_exact_message_content_sent():
    class Recorder:
        def send_message(self, company, message_type, content):
            self.sent = (company, message_type, content)

    recorder = Recorder()
    call = mapping.SendMessage("USMF", "ProdProductionOrderEnd", {"ProductionOrderNumber": "P1", "Ünï": "✓"})
    assert execute(recorder, call) == ""  # type: ignore[arg-type]
    import hashlib

    assert (
        content_hash(call)
        == hashlib.sha256(json.dumps(call.content, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    )
    assert recorder.sent == ("USMF", "ProdProductionOrderEnd", call.content)


def test_occurred_at_must_have_an_offset_and_a_plausible_year():
    naive = {**mes.event("production_ended", "P1", {}), "occurred_at": datetime(2026, 1, 1).isoformat()}
    ancient = {**mes.event("production_ended", "P1", {}), "occurred_at": "1999-12-31T23:00:00+00:00"}
    for document in (naive, ancient):
        with pytest.raises(ValueError):
            MES_EVENTS["production_ended"].model_validate(document)
    assert parse("production_ended", "P1", {}).occurred_at.astimezone(UTC).day == 24


@pytest.mark.parametrize("offset_hours", [-6, 0, 1, 9, 14, -11])
def test_the_plant_day_does_not_depend_on_the_offset_the_sender_chose(offset_hours):
    instant = AT.astimezone(timezone(timedelta(hours=offset_hours)))  # the same instant, written differently
    event = ProductionEnded.model_validate(mes.event("production_ended", "P1", {}, occurred_at=instant))
    assert mapping.production_ended(event, OPTIONS).content["EndedDate"] == "2026-11-23"  # Chicago's day
    berlin = mapping.MappingOptions(time_zone="America/Chicago", plant_time_zones=(("1", "Europe/Berlin"),))
    assert mapping.production_ended(event, berlin).content["EndedDate"] == "2026-11-24"  # plant 1 is in Berlin


def test_a_plant_of_its_own_zone_and_the_default_zone_for_the_others():
    options = mapping.MappingOptions(time_zone="Asia/Tokyo", plant_time_zones=(("CHI", "America/Chicago"),))
    other = ProductionStarted.model_validate(mes.event("production_started", "P1", {}, plant="2", occurred_at=AT))
    chicago = ProductionStarted.model_validate(mes.event("production_started", "P1", {}, plant="chi", occurred_at=AT))
    assert mapping.production_started(other, options).content["StartedDate"] == "2026-11-24"  # 14:30 in Tokyo
    assert mapping.production_started(chicago, options).content["StartedDate"] == "2026-11-23"  # site ids ignore case


def test_a_movement_without_its_own_day_is_dated_in_the_plant_zone():
    body = {
        "item_number": "RM-1",
        "quantity": 1.0,
        "from_site": "1",
        "from_warehouse": "11",
        "to_site": "1",
        "to_warehouse": "12",
    }
    event = InventoryMoved.model_validate(
        mes.event("inventory_moved", None, body, occurred_at=AT.astimezone(UTC), message_id="m-2")
    )
    lines = [op.body or {} for op in mapping.inventory_moved(event, OPTIONS).operations[1:]]
    assert {line["TransactionDate"] for line in lines} == {"2026-11-23T00:00:00Z"}  # the plant's day, as Edm.DateTimeOffset


def test_an_adjustment_is_one_movement_journal_line_against_its_offset_account():
    body = {"item_number": "RM-1", "batch_number": "B1", "quantity": -2.5, "site": "1", "warehouse": "11"}
    body |= {"offset_account": "600140", "reason": "spilled"}
    event = parse("inventory_adjusted", None, body)
    call = mapping.inventory_adjusted(event, OPTIONS)
    journal = mapping.movement_journal_number("USMF", "m-1")
    assert call.natural_key == journal and journal.startswith("M")
    assert call.operations == (
        BatchOperation(
            "POST",
            "InventoryMovementJournalHeaders",
            {"dataAreaId": "usmf", "JournalNumber": journal, "JournalNameId": "IMov", "Description": "MES m-1: spilled"},
        ),
        BatchOperation(
            "POST",
            "InventoryMovementJournalEntries",
            {
                "dataAreaId": "usmf",
                "JournalNumber": journal,
                "LineNumber": 1.0,
                "ItemNumber": "RM-1",
                "InventoryQuantity": -2.5,
                "TransactionDate": "2026-11-23T00:00:00Z",
                "InventorySiteId": "1",
                "InventoryWarehouseId": "11",
                "ItemBatchNumber": "B1",
                "OffsetMainAccountIdDisplayValue": "600140",
            },
        ),
    )
    del body["offset_account"]
    bare = parse("inventory_adjusted", None, body)
    [line] = [dict(op.body or {}) for op in mapping.inventory_adjusted(bare, OPTIONS).operations[1:]]
    assert "OffsetMainAccountIdDisplayValue" not in line  # F&O refuses it; the message is parked with the infolog
    configured = mapping.MappingOptions(adjustment_offset_account="600150")
    [line] = [dict(op.body or {}) for op in mapping.inventory_adjusted(bare, configured).operations[1:]]
    assert line["OffsetMainAccountIdDisplayValue"] == "600150"


def test_an_adjustment_of_nothing_is_refused():
    with pytest.raises(ValueError, match="quantity must not be zero"):
        parse("inventory_adjusted", None, {"item_number": "RM-1", "quantity": 0, "site": "1", "warehouse": "11"})
