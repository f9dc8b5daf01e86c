"""The MES message contents F&O accepts (docs/reference/fo-contracts.md §1.3), as validation rules."""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

YES_NO = frozenset({"Yes", "No"})
ENUMS: dict[str, frozenset[str]] = {
    "AutomaticBOMConsumptionRule": frozenset({"FlushingPrincip", "Always", "Never"}),
    "AutomaticRouteConsumptionRule": frozenset({"RouteDependent", "Always", "Never"}),
    "ProductionType": frozenset({"MainItem", "Formula", "BOM", "Co_Product", "By_Product", "None"}),
    "ErrorCause": frozenset({"None", "Material", "Machine", "OperatingStaff"}),
    "OperationPriority": frozenset({"Primary", *(f"Secondary{n}" for n in range(1, 21))}),
    "TaskType": frozenset({"QueueBefore", "Setup", "Process", "Overlap", "Transport", "QueueAfter", "Burden"}),
}

S, R, INT, D, DT, YN = "str", "real", "int", "date", "datetime", "yesno"


def _journal_fields(version: str) -> dict[str, str]:
    if version == "2022":
        return {"ProductionJournalNameId": S, "PickingListProductionJournalNameId": S, "RouteCardProductionJournalNameId": S}
    return {"JournalNameId": S, "PickingListJournalNameId": S, "RouteCardJournalNameId": S}


def schemas(journal_version: str = "2024", picking_batch_field: str = "") -> dict[str, dict[str, Any]]:
    raf_line = {
        "LineNumber": R,
        "ReportedErrorQuantity": R,
        "ReportedGoodQuantity": R,
        "ReportedErrorCatchWeightQuantity": R,
        "ReportedGoodCatchWeightQuantity": R,
        "FromOperationNumber": INT,
        "ToOperationNumber": INT,
        "ReportAsFinishedDate": D,
        "ExecutedDateTime": DT,
        "AcceptError": YN,
        "RespectFlushingPrincipleDuringOverproduction": YN,
        "EndJob": YN,
        "EndPickingList": YN,
        "EndRouteCard": YN,
        "PostNow": YN,
        "AutoUpdate": YN,
        "ProductionType": "enum:ProductionType",
        "ErrorCause": "enum:ErrorCause",
        "AutomaticBOMConsumptionRule": "enum:AutomaticBOMConsumptionRule",
        "AutomaticRouteConsumptionRule": "enum:AutomaticRouteConsumptionRule",
        "ItemNumber": S,
        "InventoryLotId": S,
        "BaseValue": S,
        "ProductColorId": S,
        "ProductConfigurationId": S,
        "ProductSizeId": S,
        "ProductStyleId": S,
        "ProductVersionId": S,
        "ItemBatchNumber": S,
        "ProductSerialNumber": S,
        "LicensePlateNumber": S,
        "InventoryStatusId": S,
        "ProductionWarehouseId": S,
        "ProductionSiteId": S,
        "ProductionWarehouseLocationId": S,
        **{f"InventoryDimension{n}": S for n in range(1, 13)},
        **_journal_fields(journal_version),
    }
    journal = "ProductionJournalNameId" if journal_version == "2022" else "JournalNameId"
    picking_line = {
        "ItemNumber": S,
        "ConsumptionBOMQuantity": R,
        "ProposalBOMQuantity": R,
        "ScrapBOMQuantity": R,
        "BOMUnitSymbol": S,
        "ConsumptionInventoryQuantity": R,
        "ProposalInventoryQuantity": R,
        "ConsumptionCatchWeightQuantity": R,
        "ProposalCatchWeightQuantity": R,
        "ConsumptionDate": D,
        "OperationNumber": INT,
        "LineNumber": R,
        "PositionNumber": S,
        "IsConsumptionEnded": YN,
        "ErrorCause": "enum:ErrorCause",
        "InventoryLotId": S,
    }
    if picking_batch_field:
        picking_line[picking_batch_field] = S
    route_line = {
        "OperationNumber": INT,
        "OperationPriority": "enum:OperationPriority",
        "OperationId": S,
        "OperationsResourceId": S,
        "Worker": S,
        "HoursRouteCostCategoryId": S,
        "QuantityRouteCostCategoryId": S,
        "HourlyRate": R,
        "Hours": R,
        "GoodQuantity": R,
        "ErrorQuantity": R,
        "CatchWeightGoodQuantity": R,
        "CatchWeightErrorQuantity": R,
        "QuantityPrice": R,
        "ProcessingPercentage": R,
        "ConsumptionDate": D,
        "TaskType": "enum:TaskType",
        "ErrorCause": "enum:ErrorCause",
        "OperationCompleted": YN,
        "BOMConsumption": YN,
        "ReportAsFinished": YN,
    }
    return {
        "ProdProductionOrderStart": {
            "fields": {
                "ProductionOrderNumber": S,
                "StartedQuantity": R,
                "StartedDate": D,
                "AutomaticBOMConsumptionRule": "enum:AutomaticBOMConsumptionRule",
            },
            "mandatory": {"ProductionOrderNumber"},
        },
        "ProdProductionOrderReportFinished": {
            "fields": {"ProductionOrderNumber": S, "ReportFinishedLines": ("lines", raf_line, set())},
            "mandatory": {"ProductionOrderNumber", "ReportFinishedLines"},
        },
        "ProdProductionOrderPickingList": {
            "fields": {"ProductionOrderNumber": S, journal: S, "PickingListLines": ("lines", picking_line, {"ItemNumber"})},
            "mandatory": {"ProductionOrderNumber", "PickingListLines"},
        },
        "ProdProductionOrderRouteCard": {
            "fields": {"ProductionOrderNumber": S, journal: S, "RouteCardLines": ("lines", route_line, {"OperationNumber"})},
            "mandatory": {"ProductionOrderNumber", "RouteCardLines"},
        },
        "ProdProductionOrderEnd": {
            "fields": {
                "ProductionOrderNumber": S,
                "ExecutedDateTime": DT,
                "EndedDate": D,
                "UseTimeAndAttendanceCost": YN,
                "AutoReportAsFinished": YN,
                "AutoUpdate": YN,
            },
            "mandatory": {"ProductionOrderNumber"},
        },
    }


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?$")


def _check(kind: Any, value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if kind == S:
        return [] if isinstance(value, str) else [f"{where}: expected a string"]
    if kind == R:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{where}: expected a number"]
        return [] if math.isfinite(value) else [f"{where}: not a finite number"]
    if kind == INT:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an integer"]
    if kind == D:
        if not isinstance(value, str) or not _DATE.match(value):
            return [f"{where}: expected a date yyyy-MM-dd"]
        try:
            date.fromisoformat(value)
        except ValueError:
            return [f"{where}: {value} is not a calendar date"]
        return []
    if kind == DT:
        if not isinstance(value, str) or not _DATETIME.match(value):
            return [f"{where}: expected a date and time yyyy-MM-ddTHH:mm:ss"]
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return [f"{where}: {value} is not a valid date and time"]
        return []
    if kind == YN:
        return [] if value in YES_NO else [f"{where}: '{value}' is not a NoYes symbol (Yes, No)"]
    if isinstance(kind, str) and kind.startswith("enum:"):
        enum = kind[5:]
        return [] if value in ENUMS[enum] else [f"{where}: '{value}' is not a symbol of enum {enum}"]
    raise AssertionError(kind)


def validate_content(message_type: str, content: Any, schema: dict[str, dict[str, Any]]) -> list[str]:
    """Every problem with one `_messageContent`, in F&O's words where we know them."""
    spec = schema.get(message_type)
    if spec is None:
        return [f"Message type {message_type} is not registered for the message queue."]
    if not isinstance(content, dict):
        return ["Message content must be a JSON object."]
    problems: list[str] = []
    for name in sorted(spec["mandatory"]):
        if content.get(name) in (None, "", []):
            problems.append(f"Field {name} must be filled in.")
    for name, value in content.items():
        kind = spec["fields"].get(name)
        if kind is None:
            problems.append(f"Unknown field {name} for message type {message_type}.")
        elif isinstance(kind, tuple):
            _, line_fields, line_mandatory = kind
            if not isinstance(value, list):
                problems.append(f"{name}: expected a list")
                continue
            for number, line in enumerate(value, start=1):
                if not isinstance(line, dict):
                    problems.append(f"{name}[{number}]: expected an object")
                    continue
                for field_name in sorted(line_mandatory):
                    if line.get(field_name) in (None, ""):
                        problems.append(f"{name}[{number}]: Field {field_name} must be filled in.")
                for field_name, field_value in line.items():
                    field_kind = line_fields.get(field_name)
                    if field_kind is None:
                        problems.append(f"{name}[{number}]: Unknown field {field_name}.")
                    else:
                        problems += _check(field_kind, field_value, f"{name}[{number}].{field_name}")
        else:
            problems += _check(kind, value, name)
    return problems


# --- OData entities the bridge writes: each field with its Edm type as F&O's $metadata declares it -----
#
# Source: OData clients generated from an F&O `/data/$metadata` (SAP Cloud SDK, service "d365_metadata",
# entities InventoryTransferJournalHeaders/Entries and InventoryMovementJournalHeaders/Entries);
# field names also in the CDM (microsoft/CDM, InventInventoryTransferJournalEntryCDSEntity,
# InventInventoryMovementJournalHeaderEntity). Not every field of each entity: the ones an integration
# writes. A field not listed is refused as unknown, as F&O refuses a property its entity type lacks.
EDM_STRING, EDM_DECIMAL, EDM_DATE_TIME_OFFSET, EDM_DATE = "Edm.String", "Edm.Decimal", "Edm.DateTimeOffset", "Edm.Date"
NO_YES = "Microsoft.Dynamics.DataEntities.NoYes"
_EDM_ENUMS = {NO_YES: YES_NO}


_DIMENSIONS = (
    "ProductColorId",
    "ProductConfigurationId",
    "ProductSizeId",
    "ProductStyleId",
    "ProductVersionId",
    "InventoryStatusId",
    "LicensePlateNumber",
    "InventoryOwnerId",
    "InventoryProfileId",
    "InventoryGtdId",
    "ItemSerialNumber",
)


def _dims(prefix: str) -> dict[str, str]:
    return {prefix + name: EDM_STRING for name in _DIMENSIONS}


_JOURNAL_HEADER = {
    "dataAreaId": EDM_STRING,
    "JournalNumber": EDM_STRING,
    "JournalNameId": EDM_STRING,
    "Description": EDM_STRING,
    "DefaultInventorySiteId": EDM_STRING,
    "DefaultWarehouseId": EDM_STRING,
    "IsPosted": NO_YES,
    "AreLinesDeletedAfterPosting": NO_YES,
    "PostedDateTime": EDM_DATE_TIME_OFFSET,
    "PostedUserId": EDM_STRING,
}
ENTITY_TYPES: dict[str, dict[str, str]] = {
    "InventoryTransferJournalHeaders": dict(_JOURNAL_HEADER),
    "InventoryTransferJournalEntries": {
        "dataAreaId": EDM_STRING,
        "JournalNumber": EDM_STRING,
        "LineNumber": EDM_DECIMAL,
        "JournalNameId": EDM_STRING,
        "ItemNumber": EDM_STRING,
        "InventoryQuantity": EDM_DECIMAL,
        "CatchWeightQuantity": EDM_DECIMAL,
        "UnitCostQuantity": EDM_DECIMAL,
        "TransactionDate": EDM_DATE_TIME_OFFSET,
        "DefaultLedgerDimensionDisplayValue": EDM_STRING,
        "SourceInventorySiteId": EDM_STRING,
        "SourceWarehouseId": EDM_STRING,
        "SourceWarehouseLocationId": EDM_STRING,
        "SourceItemBatchNumber": EDM_STRING,
        "DestinationInventorySiteId": EDM_STRING,
        "DestinationWarehouseId": EDM_STRING,
        "DestinationWarehouseLocationId": EDM_STRING,
        "DestinationItemBatchNumber": EDM_STRING,
        **_dims("Source"),
        **_dims("Destination"),
    },
    "InventoryMovementJournalHeaders": dict(_JOURNAL_HEADER),
    "InventoryMovementJournalEntries": {
        "dataAreaId": EDM_STRING,
        "JournalNumber": EDM_STRING,
        "LineNumber": EDM_DECIMAL,
        "JournalNameId": EDM_STRING,
        "ItemNumber": EDM_STRING,
        "InventoryQuantity": EDM_DECIMAL,
        "CatchWeightQuantity": EDM_DECIMAL,
        "UnitCost": EDM_DECIMAL,
        "UnitCostQuantity": EDM_DECIMAL,
        "CostAmount": EDM_DECIMAL,
        "FixedCostCharges": EDM_DECIMAL,
        "TransactionDate": EDM_DATE_TIME_OFFSET,
        "OffsetMainAccountIdDisplayValue": EDM_STRING,
        "DefaultLedgerDimensionDisplayValue": EDM_STRING,
        "InventorySiteId": EDM_STRING,
        "InventoryWarehouseId": EDM_STRING,
        "WarehouseLocationId": EDM_STRING,
        "ItemBatchNumber": EDM_STRING,
        **dict.fromkeys(
            (
                "ProductColorId",
                "ProductConfigurationId",
                "ProductSizeId",
                "ProductStyleId",
                "InventoryStatusId",
                "LicensePlateNumber",
                "ItemSerialNumber",
            ),
            EDM_STRING,
        ),
    },
}
# Declared `Nullable="false"` in that $metadata: a JSON null is refused.
NOT_NULLABLE: dict[str, frozenset[str]] = {
    "InventoryTransferJournalEntries": frozenset({"LineNumber", "InventoryQuantity", "TransactionDate"}),
    "InventoryMovementJournalEntries": frozenset({"LineNumber", "InventoryQuantity", "TransactionDate"}),
}

# OData JSON format 4.0 §7.1: Edm.Decimal is a JSON number (a string only when the client asked for
# IEEE754Compatible=true, which the bridge does not); Edm.DateTimeOffset is `dateTimeOffsetValue`
# of the ABNF, so the offset (Z or ±hh:mm) is required; Edm.Date is `yyyy-mm-dd`.
_EDM_DATE_TIME_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,12})?)?(Z|[+-]\d{2}:\d{2})$")


def _wrong(value: Any, edm: str) -> str:
    return f"Cannot convert the literal '{value}' to the expected type '{edm}'."


def check_entity(entity_set: str, body: dict[str, Any]) -> list[str]:
    """Every property of `body` that F&O's OData layer would refuse before any X++ runs."""
    types = ENTITY_TYPES[entity_set]
    problems = [f"The property '{name}' does not exist on type '{entity_set}'." for name in sorted(set(body) - set(types))]
    for name, value in body.items():
        edm = types.get(name)
        if edm is None:
            continue
        if value is None:
            if name in NOT_NULLABLE.get(entity_set, ()):
                problems.append(
                    f"A null value was found for the property named '{name}', which has the expected type '{edm}[Nullable=False]'."
                )
            continue
        if edm == EDM_STRING:
            if not isinstance(value, str):
                problems.append(_wrong(value, edm))
        elif edm == EDM_DECIMAL:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                problems.append(_wrong(value, edm))
        elif edm == EDM_DATE_TIME_OFFSET:
            if not isinstance(value, str) or not _EDM_DATE_TIME_OFFSET.match(value):
                problems.append(_wrong(value, edm))
            else:
                try:
                    datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    problems.append(_wrong(value, edm))
        elif edm == EDM_DATE:
            if not isinstance(value, str) or not _DATE.match(value):
                problems.append(_wrong(value, edm))
            else:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    problems.append(_wrong(value, edm))
        elif edm in _EDM_ENUMS:
            if value not in _EDM_ENUMS[edm]:
                problems.append(f"The value '{value}' is not a valid member of enum type '{edm}'.")
        else:
            raise AssertionError(edm)
    return problems
