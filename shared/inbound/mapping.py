"""Each flow's mapping from a MES event to the F&O call that carries it (docs/reference/fo-contracts.md §1.3).

Pure functions: no I/O, so every mapping is checked against a golden F&O message in unit tests.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from shared.fo.client import BatchOperation
from shared.inbound.messages import (
    MES_EVENTS,
    InventoryAdjusted,
    InventoryMoved,
    MaterialConsumed,
    MesEvent,
    OperationReported,
    OutputReported,
    ProductionEnded,
    ProductionStarted,
    QualityResult,
)
from shared.settings import Settings
from shared.store.lineage import Direction, Edge


@dataclass(frozen=True)
class SendMessage:
    """A message for F&O's MES message service (SysMessageService.SendMessage)."""

    company: str
    message_type: str
    content: dict[str, Any]


@dataclass(frozen=True)
class ServiceCall:
    path: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Changeset:
    """OData writes applied atomically; `natural_key` names the record whose existence proves it was applied."""

    operations: tuple[BatchOperation, ...]
    natural_key: str


FoCall = SendMessage | ServiceCall | Changeset


@dataclass(frozen=True)
class MappingOptions:
    journal_field_names: str = "2024"
    picking_batch_field: str = ""
    quality_service_path: str = "MesBridgeServices/MesQualityService/reportQualityResult"
    transfer_journal_name: str = "ITrf"
    transfer_quantity_sign: float = 1.0
    movement_journal_name: str = "IMov"
    adjustment_offset_account: str = ""
    picking_list_journal: str = ""
    route_card_journal: str = ""
    report_finished_journal: str = ""
    #: The plant's IANA time zone (PLANT_TIME_ZONE), and per site overrides (PLANT_TIME_ZONES).
    time_zone: str = "UTC"
    plant_time_zones: tuple[tuple[str, str], ...] = ()

    def zone(self, plant: str) -> ZoneInfo:
        """The time zone whose calendar dates the plant's transactions in F&O."""
        for site, name in self.plant_time_zones:
            if site == plant.upper():
                return ZoneInfo(name)
        return ZoneInfo(self.time_zone)

    def journal_field(self, kind: str) -> str:
        """The journal-name field for `kind` (production, picking list, route card) in the F&O version in use."""
        if self.journal_field_names == "2022":
            return {
                "production": "ProductionJournalNameId",
                "picking": "PickingListProductionJournalNameId",
                "route": "RouteCardProductionJournalNameId",
            }[kind]
        return {"production": "JournalNameId", "picking": "PickingListJournalNameId", "route": "RouteCardJournalNameId"}[kind]

    @classmethod
    def from_settings(cls, settings: Settings) -> MappingOptions:
        return cls(
            journal_field_names=settings.fo_journal_field_names,
            picking_batch_field=settings.fo_picking_batch_field,
            quality_service_path=settings.fo_quality_service_path,
            transfer_journal_name=settings.fo_transfer_journal_name,
            transfer_quantity_sign=-1.0 if settings.fo_transfer_quantity_sign == "negative" else 1.0,
            movement_journal_name=settings.fo_movement_journal_name,
            adjustment_offset_account=settings.fo_adjustment_offset_account,
            picking_list_journal=settings.fo_picking_list_journal_name,
            route_card_journal=settings.fo_route_card_journal_name,
            report_finished_journal=settings.fo_report_finished_journal_name,
            time_zone=settings.plant_time_zone,
            plant_time_zones=settings.plant_zones,
        )


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def _day(event: MesEvent, options: MappingOptions) -> str:
    # The plant's calendar decides the business day, not the offset the sender chose: the same
    # instant is one date whether the MES writes it in UTC, local time or anything else.
    return event.occurred_at.astimezone(options.zone(event.plant)).date().isoformat()


def _utc(event: MesEvent) -> str:
    return event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def production_started(event: ProductionStarted, options: MappingOptions) -> SendMessage:
    rule = {"flushing_principle": "FlushingPrincip", "always": "Always", "never": "Never"}
    content = _drop_none(
        {
            "ProductionOrderNumber": event.production_order,
            "StartedQuantity": event.body.started_quantity,
            "StartedDate": _day(event, options),
            "AutomaticBOMConsumptionRule": rule[event.body.bom_consumption] if event.body.bom_consumption else None,
        }
    )
    return SendMessage(event.company.upper(), "ProdProductionOrderStart", content)


def material_consumed(event: MaterialConsumed, options: MappingOptions) -> SendMessage:
    lines = []
    for line in event.body.lines:
        mapped = {
            "ItemNumber": line.item_number,
            "ConsumptionBOMQuantity": line.quantity,
            "ScrapBOMQuantity": line.scrap_quantity,
            "BOMUnitSymbol": line.unit,
            "OperationNumber": line.operation_number,
            "LineNumber": line.bom_line_number,
            "ConsumptionDate": _day(event, options),
            "IsConsumptionEnded": _yes(line.consumption_ended),
        }
        if options.picking_batch_field and line.batch_number:
            mapped[options.picking_batch_field] = line.batch_number
        lines.append(_drop_none(mapped))
    content: dict[str, Any] = {"ProductionOrderNumber": event.production_order, "PickingListLines": lines}
    if options.picking_list_journal:
        # On the picking list message the header field is the production journal name field.
        content[options.journal_field("production")] = options.picking_list_journal
    return SendMessage(event.company.upper(), "ProdProductionOrderPickingList", content)


def operation_reported(event: OperationReported, options: MappingOptions) -> SendMessage:
    lines = [
        _drop_none(
            {
                "OperationNumber": line.operation_number,
                "OperationPriority": "Primary",
                "Hours": line.hours,
                "GoodQuantity": line.good_quantity,
                "ErrorQuantity": line.error_quantity,
                "OperationCompleted": _yes(line.operation_completed),
                "Worker": line.worker,
                "OperationsResourceId": line.resource,
                "TaskType": "Setup" if line.task == "setup" else "Process",
                "ConsumptionDate": _day(event, options),
            }
        )
        for line in event.body.lines
    ]
    content: dict[str, Any] = {"ProductionOrderNumber": event.production_order, "RouteCardLines": lines}
    if options.route_card_journal:
        content[options.journal_field("production")] = options.route_card_journal
    return SendMessage(event.company.upper(), "ProdProductionOrderRouteCard", content)


def output_reported(event: OutputReported, options: MappingOptions) -> SendMessage:
    body = event.body
    cause = {"none": "None", "material": "Material", "machine": "Machine", "operating_staff": "OperatingStaff"}[body.scrap_cause]
    product_type = {"main_item": "MainItem", "co_product": "Co_Product", "by_product": "By_Product"}[body.product_type]
    base = _drop_none(
        {
            "ItemNumber": body.item_number,
            "ProductionType": product_type,
            "ItemBatchNumber": body.batch_number,
            "ProductionWarehouseId": body.warehouse,
            "ProductionWarehouseLocationId": body.location,
            "ReportAsFinishedDate": _day(event, options),
            "ErrorCause": cause,
            options.journal_field("production"): options.report_finished_journal or None,
            options.journal_field("picking"): options.picking_list_journal or None,
            options.journal_field("route"): options.route_card_journal or None,
        }
    )
    if body.serial_numbers:
        # F&O takes one serial number per line: one line per unit, scrap on the last.
        lines = [
            {**base, "ProductSerialNumber": serial, "ReportedGoodQuantity": 1.0, "ReportedErrorQuantity": 0.0, "EndJob": "No"}
            for serial in body.serial_numbers
        ]
        lines[-1]["ReportedErrorQuantity"] = body.scrap_quantity
        lines[-1]["EndJob"] = _yes(body.end_job)
    else:
        lines = [
            {
                **base,
                "ReportedGoodQuantity": body.good_quantity,
                "ReportedErrorQuantity": body.scrap_quantity,
                "EndJob": _yes(body.end_job),
            }
        ]
    content = {"ProductionOrderNumber": event.production_order, "ReportFinishedLines": lines}
    return SendMessage(event.company.upper(), "ProdProductionOrderReportFinished", content)


def production_ended(event: ProductionEnded, options: MappingOptions) -> SendMessage:
    content = {
        "ProductionOrderNumber": event.production_order,
        "ExecutedDateTime": _utc(event),
        "EndedDate": _day(event, options),
        "AutoReportAsFinished": _yes(event.body.auto_report_as_finished),
    }
    return SendMessage(event.company.upper(), "ProdProductionOrderEnd", content)


def quality_result(event: QualityResult, options: MappingOptions) -> ServiceCall:
    body = event.body
    result = _drop_none(
        {
            "MesMessageId": event.message_id,
            "ProductionOrderNumber": event.production_order,
            "ItemNumber": body.item_number,
            "BatchNumber": body.batch_number,
            "TestGroupId": body.test_group,
            "Outcome": body.outcome.capitalize(),
            "SampleId": body.sample_id,
            "Note": body.note,
            "TestedAt": _utc(event),
            "Tests": [
                _drop_none(
                    {
                        "TestId": t.test_id,
                        "Value": t.value,
                        "Unit": t.unit,
                        "Outcome": t.outcome.capitalize() if t.outcome else None,
                    }
                )
                for t in body.tests
            ],
        }
    )
    return ServiceCall(options.quality_service_path, {"_companyId": event.company.upper(), "_result": result})


# --- inventory journals over OData -------------------------------------------------------------
#
# Which journal: Microsoft Learn, "Inventory journals"
# (https://learn.microsoft.com/en-us/dynamics365/supply-chain/inventory/inventory-journals): transfer
# journals move items "between stocking locations, batches, or product variants without associating
# any cost implications", with both the "from" and "to" dimensions on the line; a movement journal
# posts against a general ledger offset account. So a MES move is a transfer journal, never a
# movement journal with a minus and a plus line.
#
# Entity sets, keys and field names: the CDM definition of InventInventoryTransferJournalEntryCDSEntity
# (microsoft/CDM, schemaDocuments/core/operationsCommon/Entities/SupplyChain/InventoryAndWarehouseManagement/;
# Source*/Destination* site, warehouse and product dimension fields) and OData clients generated from
# an F&O `/data/$metadata` (SAP Cloud SDK, service "d365_metadata": InventoryTransferJournalHeaders key
# dataAreaId + JournalNumber; InventoryTransferJournalEntries key dataAreaId + JournalNumber + LineNumber,
# with SourceWarehouseLocationId, SourceItemBatchNumber, DestinationWarehouseLocationId,
# DestinationItemBatchNumber). Types, from that $metadata: TransactionDate Edm.DateTimeOffset (not
# nullable), LineNumber and InventoryQuantity Edm.Decimal, strings Edm.String, IsPosted the NoYes enum.
# UNCONFIRMED against Microsoft's own entity reference (the CDM lists every attribute as a string):
# verify in the environment's $metadata. The standard transfer journal name is "ITrf" in Microsoft's
# demo data (UNCONFIRMED as a product default; FO_TRANSFER_JOURNAL_NAME sets it).
#
# A date-only F&O field (TransDate) is exposed as Edm.DateTimeOffset; we send the MES's calendar day at
# midnight UTC so F&O stores that day (UNCONFIRMED: how F&O truncates an offset other than Z).
# The line's quantity is the moved quantity, positive by default; whether F&O wants the issue sign
# on a transfer line is UNCONFIRMED, so FO_TRANSFER_QUANTITY_SIGN can flip it.


def journal_number(prefix: str, company: str, message_id: str) -> str:
    """A journal number derived from the MES message id (F&O JournalId holds 10 characters); the prefix
    keeps transfer (T) and movement (M) journals of one message apart."""
    digest = hashlib.sha256(f"{company.upper()}|{message_id}".encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:9]


def transfer_journal_number(company: str, message_id: str) -> str:
    return journal_number("T", company, message_id)


def movement_journal_number(company: str, message_id: str) -> str:
    return journal_number("M", company, message_id)


def edm_date_time_offset(day: str) -> str:
    """A calendar day (yyyy-mm-dd) as Edm.DateTimeOffset: midnight UTC of that day."""
    return f"{day}T00:00:00Z"


def inventory_moved(event: InventoryMoved, options: MappingOptions) -> Changeset:
    body = event.body
    company = event.company.lower()
    journal = transfer_journal_number(event.company, event.message_id)
    day = body.moved_on.isoformat() if body.moved_on else _day(event, options)
    header = {
        "dataAreaId": company,
        "JournalNumber": journal,
        "JournalNameId": options.transfer_journal_name,
        "Description": f"MES {event.message_id}"[:60],
    }
    line = _drop_none(
        {
            "dataAreaId": company,
            "JournalNumber": journal,
            "LineNumber": 1.0,
            "ItemNumber": body.item_number,
            "InventoryQuantity": options.transfer_quantity_sign * body.quantity,
            "TransactionDate": edm_date_time_offset(day),
            "SourceInventorySiteId": body.from_site,
            "SourceWarehouseId": body.from_warehouse,
            "SourceWarehouseLocationId": body.from_location,
            "SourceItemBatchNumber": body.batch_number,
            "DestinationInventorySiteId": body.to_site,
            "DestinationWarehouseId": body.to_warehouse,
            "DestinationWarehouseLocationId": body.to_location,
            "DestinationItemBatchNumber": body.to_batch_number or body.batch_number,
        }
    )
    operations = (
        BatchOperation("POST", "InventoryTransferJournalHeaders", header),
        BatchOperation("POST", "InventoryTransferJournalEntries", line),
    )
    return Changeset(operations, natural_key=journal)


# A movement journal line (InventoryMovementJournalEntries, same $metadata source as above): one
# InventorySiteId/InventoryWarehouseId/WarehouseLocationId/ItemBatchNumber, a signed InventoryQuantity
# (Edm.Decimal), TransactionDate (Edm.DateTimeOffset) and OffsetMainAccountIdDisplayValue (Edm.String),
# the general ledger offset account Microsoft Learn says a movement journal needs.


def inventory_adjusted(event: InventoryAdjusted, options: MappingOptions) -> Changeset:
    body = event.body
    company = event.company.lower()
    journal = movement_journal_number(event.company, event.message_id)
    day = body.adjusted_on.isoformat() if body.adjusted_on else _day(event, options)
    description = f"MES {event.message_id}" + (f": {body.reason}" if body.reason else "")
    header = {
        "dataAreaId": company,
        "JournalNumber": journal,
        "JournalNameId": options.movement_journal_name,
        "Description": description[:60],
    }
    line = _drop_none(
        {
            "dataAreaId": company,
            "JournalNumber": journal,
            "LineNumber": 1.0,
            "ItemNumber": body.item_number,
            "InventoryQuantity": body.quantity,
            "TransactionDate": edm_date_time_offset(day),
            "InventorySiteId": body.site,
            "InventoryWarehouseId": body.warehouse,
            "WarehouseLocationId": body.location,
            "ItemBatchNumber": body.batch_number,
            # Without an account from the MES or the setting the line goes without one, and F&O's
            # refusal parks the message with its infolog.
            "OffsetMainAccountIdDisplayValue": body.offset_account or options.adjustment_offset_account or None,
        }
    )
    operations = (
        BatchOperation("POST", "InventoryMovementJournalHeaders", header),
        BatchOperation("POST", "InventoryMovementJournalEntries", line),
    )
    return Changeset(operations, natural_key=journal)


Mapping = Callable[[Any, MappingOptions], FoCall]


# --- lineage: what each event says about batch genealogy ----------------------------------------


def consumed_edges(event: MaterialConsumed) -> list[Edge]:
    assert event.production_order
    return [
        Edge(
            event.company,
            event.production_order,
            "consumed",
            line.item_number,
            line.batch_number,
            line.quantity,
            event.message_id,
        )
        for line in event.body.lines
        if line.batch_number
    ]


def produced_edges(event: OutputReported) -> list[Edge]:
    body = event.body
    if not body.batch_number or not event.production_order:
        return []
    return [
        Edge(
            event.company,
            event.production_order,
            "produced",
            body.item_number,
            body.batch_number,
            body.good_quantity,
            event.message_id,
        )
    ]


def transferred_edges(event: InventoryMoved) -> list[Edge]:
    """A batch transfer in the genealogy: the transfer journal takes the batch from one warehouse and
    puts it (or the batch it becomes) in another, so lineage queries follow the batch across the move."""
    body = event.body
    if not body.batch_number:
        return []
    journal = transfer_journal_number(event.company, event.message_id)

    def edge(direction: Direction, batch: str, warehouse: str) -> Edge:
        return Edge(
            event.company, journal, direction, body.item_number, batch, body.quantity, event.message_id, "transfer", warehouse
        )

    return [
        edge("consumed", body.batch_number, body.from_warehouse),
        edge("produced", body.to_batch_number or body.batch_number, body.to_warehouse),
    ]


#: What each flow's events say about genealogy, by flow name (the flows name the same functions).
LINEAGE: dict[str, Callable[[Any], list[Edge]]] = {
    "material_consumed": consumed_edges,
    "output_reported": produced_edges,
    "inventory_moved": transferred_edges,
}


def lineage_of_payload(flow: str, payload: bytes) -> list[Edge]:
    """The genealogy a stored payload states (for a row whose kept genealogy cannot be read);
    `ValueError` when the payload is not a valid event of the flow."""
    edges = LINEAGE.get(flow)
    model = MES_EVENTS.get(flow)
    if edges is None or model is None:
        return []
    return edges(model.model_validate_json(payload))
