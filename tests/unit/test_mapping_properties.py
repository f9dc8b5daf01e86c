"""Property-based tests of the mappings: any event the MES contract accepts becomes content F&O
accepts, carrying the same quantities, with the same content hash every time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from devtools import mes
from devtools.fo_emulator.contracts import check_entity, schemas, validate_content
from shared.inbound import mapping
from shared.inbound.dispatch import content_hash
from shared.inbound.messages import ID_PATTERN, MES_EVENTS

ids = st.from_regex(ID_PATTERN, fullmatch=True).map(str.strip).filter(lambda s: 0 < len(s) <= 20 and s[-1] not in " ")
quantities = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
hours = st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False)
moments = st.integers(0, 60 * 24 * 365).map(lambda minutes: datetime(2026, 11, 23, tzinfo=UTC) + timedelta(minutes=minutes))
zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
versions = st.sampled_from(["2024", "2022"])
PLANT_ZONE = "America/Chicago"


def _options(version: str) -> mapping.MappingOptions:
    return mapping.MappingOptions(journal_field_names=version, picking_batch_field="ItemBatchNumber", time_zone=PLANT_ZONE)


def _event(kind: str, body: dict[str, Any], at: datetime, zone: timezone, sequence: int | None = None):
    document = mes.event(kind, "P000001", body, occurred_at=at.astimezone(zone), message_id="m-1", sequence=sequence)
    return MES_EVENTS[kind].model_validate(document)


def _accepted(call, version: str) -> None:
    assert validate_content(call.message_type, call.content, schemas(version, "ItemBatchNumber")) == []
    # The content F&O echoes must hash the same however often the event is mapped.
    assert content_hash(call) == content_hash(call) and json.loads(mapping_content(call))


def mapping_content(call) -> str:
    from shared.fo.client import message_content

    return message_content(call.content)


consumed_lines = st.lists(
    st.fixed_dictionaries(
        {"item_number": ids, "quantity": quantities}, optional={"batch_number": ids, "scrap_quantity": quantities}
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(lines=consumed_lines, at=moments, zone=zones, version=versions)
def test_any_material_consumption_maps_to_a_picking_list_with_the_same_quantities(lines, at, zone, version):
    event = _event("material_consumed", {"lines": lines}, at, zone)
    call = mapping.material_consumed(event, _options(version))
    _accepted(call, version)
    mapped = call.content["PickingListLines"]
    assert [line["ConsumptionBOMQuantity"] for line in mapped] == [line["quantity"] for line in lines]
    assert [line.get("ItemBatchNumber") for line in mapped] == [line.get("batch_number") for line in lines]
    # Genealogy: one consumed edge per line that names its batch, with its quantity.
    edges = mapping.consumed_edges(event)
    assert [(e.item, e.batch, e.quantity) for e in edges] == [
        (line["item_number"], line["batch_number"], line["quantity"]) for line in lines if "batch_number" in line
    ]


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.fixed_dictionaries(
            {"operation_number": st.integers(1, 99_999), "hours": hours, "good_quantity": quantities},
            optional={"error_quantity": quantities, "resource": ids, "worker": ids},
        ),
        min_size=1,
        max_size=20,
    ),
    at=moments,
    zone=zones,
    version=versions,
)
def test_any_operation_report_maps_to_a_route_card_with_the_same_hours(lines, at, zone, version):
    call = mapping.operation_reported(_event("operation_reported", {"lines": lines}, at, zone), _options(version))
    _accepted(call, version)
    assert [line["Hours"] for line in call.content["RouteCardLines"]] == [line["hours"] for line in lines]


@settings(max_examples=150, deadline=None)
@given(
    item=ids,
    batch=st.none() | ids,
    good=quantities,
    scrap=quantities,
    end_job=st.booleans(),
    at=moments,
    zone=zones,
    version=versions,
)
def test_any_output_maps_to_a_report_as_finished_and_a_produced_edge(item, batch, good, scrap, end_job, at, zone, version):
    body = {"item_number": item, "good_quantity": good, "scrap_quantity": scrap, "end_job": end_job}
    if batch is not None:
        body["batch_number"] = batch
    event = _event("output_reported", body, at, zone)
    call = mapping.output_reported(event, _options(version))
    _accepted(call, version)
    lines = call.content["ReportFinishedLines"]
    assert sum(line["ReportedGoodQuantity"] for line in lines) == good
    edges = mapping.produced_edges(event)
    assert [(e.item, e.batch, e.quantity) for e in edges] == ([(item, batch, good)] if batch else [])


@settings(max_examples=100, deadline=None)
@given(started=st.none() | quantities, at=moments, zone=zones, version=versions)
def test_any_start_and_end_map_to_content_fo_accepts(started, at, zone, version):
    body = {} if started is None else {"started_quantity": started}
    _accepted(mapping.production_started(_event("production_started", body, at, zone), _options(version)), version)
    end = mapping.production_ended(_event("production_ended", {}, at, zone), _options(version))
    _accepted(end, version)
    # The date F&O books is the plant's day, whatever offset the MES wrote the instant in.
    assert end.content["EndedDate"] == at.astimezone(ZoneInfo(PLANT_ZONE)).date().isoformat()


warehouses = st.sampled_from(["11", "12", "21"])


@settings(max_examples=150, deadline=None)
@given(
    item=ids,
    batch=st.none() | ids,
    to_batch=st.none() | ids,
    quantity=st.floats(min_value=0.001, max_value=1e9, allow_nan=False, allow_infinity=False),
    source=warehouses,
    target=warehouses,
    location=st.none() | ids.filter(lambda s: len(s) <= 10),
    at=moments,
    zone=zones,
)
def test_any_move_maps_to_one_transfer_line_typed_as_fo_metadata_declares(
    item, batch, to_batch, quantity, source, target, location, at, zone
):
    body: dict[str, Any] = {"item_number": item, "quantity": quantity}
    body |= {"from_site": source[0], "from_warehouse": source, "to_site": target[0], "to_warehouse": target}
    body |= {k: v for k, v in (("batch_number", batch), ("to_location", location)) if v is not None}
    if to_batch is not None and batch is not None:
        body["to_batch_number"] = to_batch
    try:
        event = _event("inventory_moved", body, at, zone)
    except ValueError:
        assume(False)  # a move that changes nothing is refused by the contract
    call = mapping.inventory_moved(event, _options("2024"))
    header, line = call.operations
    assert check_entity(header.path, dict(header.body or {})) == []
    assert check_entity(line.path, dict(line.body or {})) == []
    assert line.path == "InventoryTransferJournalEntries" and (line.body or {})["InventoryQuantity"] == quantity
    # The date F&O books is the plant's day, as Edm.DateTimeOffset.
    assert (line.body or {})["TransactionDate"] == at.astimezone(ZoneInfo(PLANT_ZONE)).date().isoformat() + "T00:00:00Z"
    edges = mapping.transferred_edges(event)
    assert [(e.direction, e.batch, e.warehouse) for e in edges] == (
        [("consumed", batch, source), ("produced", to_batch or batch, target)] if batch else []
    )


@settings(max_examples=100, deadline=None)
@given(
    item=ids,
    batch=st.none() | ids,
    quantity=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False).filter(lambda q: q != 0),
    at=moments,
    zone=zones,
)
def test_any_adjustment_maps_to_one_movement_line_typed_as_fo_metadata_declares(item, batch, quantity, at, zone):
    body: dict[str, Any] = {"item_number": item, "quantity": quantity, "site": "1", "warehouse": "11", "offset_account": "600140"}
    if batch is not None:
        body["batch_number"] = batch
    call = mapping.inventory_adjusted(_event("inventory_adjusted", body, at, zone), _options("2024"))
    for operation in call.operations:
        assert check_entity(operation.path, dict(operation.body or {})) == []
    assert (call.operations[1].body or {})["InventoryQuantity"] == quantity
