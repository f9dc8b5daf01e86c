"""Reading a released production order from F&O for MES: header, BOM lines, route operations and
the unit of the quantity, with only the entity fields Microsoft documents.

Field names: the Common Data Model definitions of the F&O data entities (Microsoft,
github.com/MicrosoftDocs/common-data-model-and-service, common-data-model/schema/core/operationsCommon/
Entities/SupplyChain/…, published as learn.microsoft.com/common-data-model/schema/core/operationsCommon/…):

- ProductionControl/ProdProductionOrderHeaderEntity: ProductionOrderNumber, ItemNumber,
  ScheduledQuantity (the order's quantity, ProdTable.QtySched), ProductionOrderStatus,
  ProductionSiteId, ProductionWarehouseId, ScheduledStartDate, ScheduledEndDate. The header has no
  unit: the quantity is in the item's inventory unit.
- ProductionControl/ProdProductionOrderBillOfMaterialsLineEntity: ProductionOrderNumber,
  LineNumber, ItemNumber, BOMLineQuantity, BOMLineUnitSymbol, ConsumptionWarehouseId,
  FlushingPrinciple, RouteOperationNumber.
- ProductionControl/ProdProductionOrderRouteOperationEntity: ProductionOrderNumber,
  OperationNumber, OperationPriority, OperationId, CostingOperationResourceId (the resource the
  operation is costed on; the entity has no other resource field), SetupTime, ProcessTime.
- ProductInformationManagement/EcoResReleasedProductV2Entity: ItemNumber, InventoryUnitSymbol.

Entity set names (ProductionOrderHeaders, ProductionOrderBillOfMaterialLines,
ProductionOrderRouteOperations, ReleasedProductsV2): the public collection names in F&O's
/data/$metadata as community SDKs generated from it show them (docs/reference/fo-contracts.md §4.3); the
CDM definitions do not carry them. Check them in your environment's /data/$metadata.

Every read names its fields in `$select`: F&O answers 400 to a field its entity does not have, so a
wrong name fails loudly (in the emulator's tests too) instead of reading as a missing value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import Transient
from shared.fo import odata
from shared.fo.client import FoApi

HEADERS = "ProductionOrderHeaders"
BOM_LINES = "ProductionOrderBillOfMaterialLines"
ROUTE_OPERATIONS = "ProductionOrderRouteOperations"
RELEASED_PRODUCTS = "ReleasedProductsV2"

HEADER_FIELDS = (
    "dataAreaId",
    "ProductionOrderNumber",
    "ItemNumber",
    "ScheduledQuantity",
    "ProductionOrderStatus",
    "ProductionSiteId",
    "ProductionWarehouseId",
    "ScheduledStartDate",
    "ScheduledEndDate",
)
BOM_LINE_FIELDS = (
    "dataAreaId",
    "ProductionOrderNumber",
    "LineNumber",
    "ItemNumber",
    "BOMLineQuantity",
    "BOMLineUnitSymbol",
    "ConsumptionWarehouseId",
    "FlushingPrinciple",
    "RouteOperationNumber",
)
ROUTE_OPERATION_FIELDS = (
    "dataAreaId",
    "ProductionOrderNumber",
    "OperationNumber",
    "OperationPriority",
    "OperationId",
    "CostingOperationResourceId",
    "SetupTime",
    "ProcessTime",
)
RELEASED_PRODUCT_FIELDS = ("dataAreaId", "ItemNumber", "InventoryUnitSymbol")

#: Every entity set the work-order read touches and the fields it selects (checked against the emulator).
READS: dict[str, tuple[str, ...]] = {
    HEADERS: HEADER_FIELDS,
    BOM_LINES: BOM_LINE_FIELDS,
    ROUTE_OPERATIONS: ROUTE_OPERATION_FIELDS,
    RELEASED_PRODUCTS: RELEASED_PRODUCT_FIELDS,
}


@dataclass(frozen=True)
class ReleasedOrder:
    header: dict[str, Any]
    unit: str | None
    bom: list[dict[str, Any]]
    route: list[dict[str, Any]]


def read_released_order(fo: FoApi, company: str, order: str) -> ReleasedOrder:
    where = odata.eq("ProductionOrderNumber", order)
    headers = list(fo.query(HEADERS, company=company, where=where, select=HEADER_FIELDS))
    if not headers:
        raise Transient(f"production order {order} of {company} is not readable yet")
    header = headers[0]
    products = list(
        fo.query(
            RELEASED_PRODUCTS, company=company, where=odata.eq("ItemNumber", header["ItemNumber"]), select=RELEASED_PRODUCT_FIELDS
        )
    )
    bom = sorted(
        fo.query(BOM_LINES, company=company, where=where, select=BOM_LINE_FIELDS),
        key=lambda r: float(r.get("LineNumber") or 0),
    )
    route = sorted(
        fo.query(ROUTE_OPERATIONS, company=company, where=where, select=ROUTE_OPERATION_FIELDS),
        key=lambda r: int(r.get("OperationNumber") or 0),
    )
    unit = products[0].get("InventoryUnitSymbol") if products else None
    return ReleasedOrder(header=header, unit=unit or None, bom=bom, route=route)
