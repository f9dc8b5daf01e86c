"""Seed data for one plant, generated from a seed: sites, warehouses, items with batches, and
production orders with their BOM lines and route operations."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

Row = dict[str, Any]

#: The production order entities' fields the emulator serves, each named as in Microsoft's Common
#: Data Model definitions of the F&O entities (github.com/MicrosoftDocs/common-data-model-and-service,
#: common-data-model/schema/core/operationsCommon/Entities/SupplyChain/ProductionControl/
#: ProdProductionOrderHeaderEntity.md, ProdProductionOrderBillOfMaterialsLineEntity.md,
#: ProdProductionOrderRouteOperationEntity.md, and ProductInformationManagement/
#: EcoResReleasedProductV2Entity.md for ReleasedProductsV2; dataAreaId is OData's company key). Nothing else:
#: a `$select` or `$filter` on another name is answered 400, as F&O does for a field its entity lacks.
DOCUMENTED_FIELDS: dict[str, frozenset[str]] = {
    "ProductionOrderHeaders": frozenset(
        {
            "dataAreaId",
            "ProductionOrderNumber",
            "ProductionOrderName",
            "ItemNumber",
            "ScheduledQuantity",
            "ProductionOrderStatus",
            "ProductionSiteId",
            "ProductionWarehouseId",
            "ScheduledStartDate",
            "ScheduledEndDate",
            "RemainingReportAsFinishedQuantity",
        }
    ),
    "ProductionOrderBillOfMaterialLines": frozenset(
        {
            "dataAreaId",
            "ProductionOrderNumber",
            "LineNumber",
            "ItemNumber",
            "BOMLineQuantity",
            "BOMLineUnitSymbol",
            "FlushingPrinciple",
            "ConsumptionWarehouseId",
            "RouteOperationNumber",
        }
    ),
    "ProductionOrderRouteOperations": frozenset(
        {
            "dataAreaId",
            "ProductionOrderNumber",
            "OperationNumber",
            "OperationPriority",
            "OperationId",
            "CostingOperationResourceId",
            "SetupTime",
            "ProcessTime",
            "ProcessQuantity",
        }
    ),
    "ReleasedProductsV2": frozenset(
        {"dataAreaId", "ItemNumber", "SearchName", "InventoryUnitSymbol", "TrackingDimensionGroupName", "ProductType"}
    ),
}

OPERATIONS = [("Cut", "CUT-01"), ("Weld", "WLD-01"), ("Assemble", "ASM-01"), ("Paint", "PNT-01"), ("Pack", "PCK-01")]


@dataclass(frozen=True)
class PlantSpec:
    seed: int = 7
    company: str = "usmf"
    other_company: str = "demf"  # a second legal entity, so cross-company filters are tested
    orders: int = 300
    finished_items: int = 12
    raw_items: int = 30
    batches_per_item: int = 6
    components_per_order: tuple[int, int] = (2, 5)
    operations_per_order: tuple[int, int] = (2, 4)
    released: bool = True


def seed_plant(spec: PlantSpec) -> dict[str, list[Row]]:
    rng = random.Random(spec.seed)
    today = date(2026, 11, 23)
    tables: dict[str, list[Row]] = {
        "OperationalSites": [],
        "Warehouses": [],
        "ReleasedProductsV2": [],
        "ItemBatches": [],
        "ProductionOrderHeaders": [],
        "ProductionOrderBillOfMaterialLines": [],
        "ProductionOrderRouteOperations": [],
        "InventoryTransferJournalHeaders": [],
        "InventoryTransferJournalEntries": [],
        "InventoryMovementJournalHeaders": [],
        "InventoryMovementJournalEntries": [],
        "InventoryJournalNames": [],
    }
    for company in (spec.company, spec.other_company):
        # The journal names of Microsoft's demo data (Inventory management > Setup > Journal names > Inventory).
        for name, journal_type in (("IMov", "Movement"), ("ITrf", "Transfer")):
            tables["InventoryJournalNames"].append(
                {
                    "dataAreaId": company,
                    "JournalNameId": name,
                    "JournalType": journal_type,
                    "NumberingMode": "Manual",
                    "Description": journal_type,
                }
            )
        for site, warehouses in (("1", ("11", "12", "13")), ("2", ("21", "22"))):
            tables["OperationalSites"].append({"dataAreaId": company, "SiteId": site, "SiteName": f"Site {site}"})
            for wh in warehouses:
                tables["Warehouses"].append(
                    {"dataAreaId": company, "WarehouseId": wh, "OperationalSiteId": site, "WarehouseName": f"Warehouse {wh}"}
                )
    finished = [f"FG-{n:04d}" for n in range(1, spec.finished_items + 1)]
    raw = [f"RM-{n:04d}" for n in range(1, spec.raw_items + 1)]
    for company in (spec.company, spec.other_company):
        for item in finished + raw:
            tables["ReleasedProductsV2"].append(
                {
                    "dataAreaId": company,
                    "ItemNumber": item,
                    "SearchName": ("Finished " if item.startswith("FG") else "Raw ") + item,
                    "InventoryUnitSymbol": "ea" if item.startswith("FG") else "kg",
                    "TrackingDimensionGroupName": "Batch",
                    "ProductType": "Item",
                }
            )
    for item in raw:
        for n in range(1, spec.batches_per_item + 1):
            tables["ItemBatches"].append(
                {
                    "dataAreaId": spec.company,
                    "ItemNumber": item,
                    "BatchNumber": f"B{item[3:]}-{n:03d}",
                    "ManufacturingDate": (today - timedelta(days=60 - n)).isoformat(),
                    "BatchExpirationDate": (today + timedelta(days=300 + n)).isoformat(),
                    "BatchDispositionCode": "Available",
                }
            )
    for n in range(1, spec.orders + 1):
        number = f"P{n:06d}"
        item = rng.choice(finished)
        site = rng.choice(["1", "2"])
        warehouse = "11" if site == "1" else "21"
        quantity = float(rng.choice([10, 20, 25, 40, 50, 100]))
        start = today + timedelta(days=rng.randint(0, 5))
        tables["ProductionOrderHeaders"].append(
            {
                "dataAreaId": spec.company,
                "ProductionOrderNumber": number,
                "ProductionOrderName": f"{item} x {quantity:g}",
                "ItemNumber": item,
                "ScheduledQuantity": quantity,
                "ProductionOrderStatus": "Released" if spec.released else "Scheduled",
                "ProductionSiteId": site,
                "ProductionWarehouseId": warehouse,
                "ScheduledStartDate": start.isoformat(),
                "ScheduledEndDate": (start + timedelta(days=1)).isoformat(),
                "RemainingReportAsFinishedQuantity": quantity,
            }
        )
        for line, component in enumerate(rng.sample(raw, rng.randint(*spec.components_per_order)), start=1):
            tables["ProductionOrderBillOfMaterialLines"].append(
                {
                    "dataAreaId": spec.company,
                    "ProductionOrderNumber": number,
                    "LineNumber": float(line),
                    "ItemNumber": component,
                    "BOMLineQuantity": round(rng.uniform(0.2, 3.0), 2),
                    "BOMLineUnitSymbol": "kg",
                    "FlushingPrinciple": "Manual",
                    "ConsumptionWarehouseId": warehouse,
                    "RouteOperationNumber": 10,
                }
            )
        for index, (operation, resource) in enumerate(OPERATIONS[: rng.randint(*spec.operations_per_order)], start=1):
            tables["ProductionOrderRouteOperations"].append(
                {
                    "dataAreaId": spec.company,
                    "ProductionOrderNumber": number,
                    "OperationNumber": index * 10,
                    "OperationPriority": "Primary",
                    "OperationId": operation,
                    "CostingOperationResourceId": resource,
                    "SetupTime": 0.25,
                    "ProcessTime": round(rng.uniform(0.5, 4.0), 2),
                    "ProcessQuantity": 1.0,
                }
            )
    # A few orders of the other company share numbers with ours: a query that forgets dataAreaId shows it.
    for row in list(tables["ProductionOrderHeaders"][:3]):
        tables["ProductionOrderHeaders"].append({**row, "dataAreaId": spec.other_company, "ProductionOrderName": "other company"})
    return tables
