"""The MES event contract: what a MES sends to the bridge, one typed body per flow.

These pydantic models are the source of truth; `schemas/mes/*.json` is generated from them
(`python -m devtools.schemas`) and a test fails when the published files are stale.

Identifiers follow F&O's field lengths (ProdId, ItemId and InventBatchId 20, InventLocationId 10)
and may not hold `*` (F&O reads it as a wildcard), quotes or control characters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION: Literal["1.0"] = "1.0"


def _printable(value: str) -> str:
    # The ledger keys a message by this id, and even a refused message is named by it when it is
    # printable (decode._identity): the same rule here keeps the two from ever disagreeing.
    if not value.isprintable():
        raise ValueError("must be printable text (no control, format, private-use, unassigned or surrogate characters)")
    return value


MessageId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_printable)
]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.\-/]*$"
OrderNumber = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=ID_PATTERN)]
ItemNumber = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=ID_PATTERN)]
BatchNumber = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=ID_PATTERN)]
SerialNumber = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=ID_PATTERN)]
WarehouseId = Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=ID_PATTERN)]
LocationId = Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=ID_PATTERN)]
SiteId = Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=ID_PATTERN)]
CompanyId = Annotated[str, StringConstraints(min_length=1, max_length=4, pattern=r"^[A-Za-z0-9]+$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=30, pattern=ID_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
Quantity = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Hours = Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
OperationNumber = Annotated[int, Field(ge=1, le=99_999)]

#: The largest MES sequence number: the largest integer every JSON parser keeps exact (2^53 - 1,
#: JavaScript's MAX_SAFE_INTEGER) and well inside Table Storage's Int64. A sequence outside
#: 1..MAX_SEQUENCE is parked `sequence_out_of_range`.
MAX_SEQUENCE = 2**53 - 1
Sequence = Annotated[int, Field(ge=1, le=MAX_SEQUENCE)]


def _plausible_time(value: datetime) -> datetime:
    if not datetime(2000, 1, 1, tzinfo=UTC) <= value <= datetime(2100, 1, 1, tzinfo=UTC):
        raise ValueError("must lie between 2000 and 2100")
    return value


def _plausible_date(value: date) -> date:
    if not date(2000, 1, 1) <= value <= date(2100, 1, 1):
        raise ValueError("must lie between 2000 and 2100")
    return value


Timestamp = Annotated[AwareDatetime, Field(description="ISO 8601 with a UTC offset"), AfterValidator(_plausible_time)]
Day = Annotated[date, AfterValidator(_plausible_date)]


class ClosedModel(BaseModel):
    """Unknown fields are refused (a misspelt MES field must not vanish) and bodies are frozen; types
    coerce as JSON needs (strict=False: a date arrives as text)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, str_strip_whitespace=False)


# --- bodies ---------------------------------------------------------------------------------


class ProductionStartedBody(ClosedModel):
    started_quantity: Quantity | None = Field(None, description="defaults to the order's quantity in F&O")
    bom_consumption: Literal["flushing_principle", "always", "never"] | None = None


class ConsumedLine(ClosedModel):
    item_number: ItemNumber
    batch_number: BatchNumber | None = Field(None, description="the raw material batch consumed (traceability)")
    quantity: Quantity
    unit: Annotated[str, StringConstraints(max_length=10, pattern=ID_PATTERN)] | None = None
    operation_number: OperationNumber | None = None
    bom_line_number: Annotated[float, Field(ge=0, le=99_999)] | None = None
    scrap_quantity: Quantity | None = None
    consumption_ended: bool = False


class MaterialConsumedBody(ClosedModel):
    lines: list[ConsumedLine] = Field(min_length=1, max_length=500)


class OperationLine(ClosedModel):
    operation_number: OperationNumber
    hours: Hours = 0.0
    good_quantity: Quantity = 0.0
    error_quantity: Quantity = 0.0
    operation_completed: bool = False
    worker: Code | None = None
    resource: Code | None = None
    task: Literal["setup", "process"] = "process"


class OperationReportedBody(ClosedModel):
    lines: list[OperationLine] = Field(min_length=1, max_length=100)


class OutputReportedBody(ClosedModel):
    item_number: ItemNumber = Field(description="the item produced: the order's item, or a co-/by-product")
    batch_number: BatchNumber | None = Field(None, description="the finished batch produced (traceability)")
    serial_numbers: list[SerialNumber] = Field(default_factory=list, max_length=1000)
    good_quantity: Quantity
    scrap_quantity: Quantity = 0.0
    scrap_cause: Literal["none", "material", "machine", "operating_staff"] = "none"
    end_job: bool = False
    warehouse: WarehouseId | None = None
    location: LocationId | None = None
    product_type: Literal["main_item", "co_product", "by_product"] = "main_item"

    @model_validator(mode="after")
    def _one_unit_per_serial(self) -> OutputReportedBody:
        if self.serial_numbers and self.good_quantity != len(self.serial_numbers):
            raise ValueError(f"good_quantity must equal the number of serial_numbers ({len(self.serial_numbers)})")
        if len(set(self.serial_numbers)) != len(self.serial_numbers):
            raise ValueError("serial_numbers must not repeat")
        return self


class ProductionEndedBody(ClosedModel):
    auto_report_as_finished: bool = False


class QualityTest(ClosedModel):
    test_id: Code
    value: Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)] | None = None
    unit: Annotated[str, StringConstraints(max_length=10, pattern=ID_PATTERN)] | None = None
    outcome: Literal["pass", "fail"] | None = None


class QualityResultBody(ClosedModel):
    item_number: ItemNumber
    batch_number: BatchNumber
    test_group: Code
    outcome: Literal["pass", "fail"]
    tests: list[QualityTest] = Field(min_length=1, max_length=200)
    sample_id: Code | None = None
    note: Text | None = None


class InventoryMovedBody(ClosedModel):
    item_number: ItemNumber
    batch_number: BatchNumber | None = None
    quantity: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
    from_site: SiteId
    from_warehouse: WarehouseId
    from_location: LocationId | None = None
    to_site: SiteId
    to_warehouse: WarehouseId
    to_location: LocationId | None = None
    to_batch_number: BatchNumber | None = Field(
        None, description="the batch the quantity becomes (a batch-to-batch transfer); defaults to batch_number"
    )
    moved_on: Day | None = Field(None, description="defaults to the day of occurred_at")

    @model_validator(mode="after")
    def _moves_something(self) -> InventoryMovedBody:
        if self.to_batch_number and not self.batch_number:
            raise ValueError("to_batch_number needs batch_number, the batch the quantity leaves")

        def place(*parts: str | None) -> tuple[str, ...]:
            return tuple((part or "").casefold() for part in parts)  # F&O ids ignore case

        source = place(self.from_site, self.from_warehouse, self.from_location, self.batch_number)
        target = place(self.to_site, self.to_warehouse, self.to_location, self.to_batch_number or self.batch_number)
        if source == target:
            raise ValueError("the move changes nothing: from and to site, warehouse, location and batch are the same")
        return self


class InventoryAdjustedBody(ClosedModel):
    """A quantity found or lost in one place (a count difference, a spill, a sample taken): F&O posts
    it against a general ledger offset account in a movement journal."""

    item_number: ItemNumber
    batch_number: BatchNumber | None = None
    quantity: Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)] = Field(
        description="positive: found (a receipt); negative: lost (an issue); never zero"
    )
    site: SiteId
    warehouse: WarehouseId
    location: LocationId | None = None
    offset_account: (
        Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")] | None
    ) = Field(None, description="the main account the difference posts against; defaults to FO_ADJUSTMENT_OFFSET_ACCOUNT")
    reason: Text | None = None
    adjusted_on: Day | None = Field(None, description="defaults to the plant's day of occurred_at")

    @model_validator(mode="after")
    def _changes_something(self) -> InventoryAdjustedBody:
        if self.quantity == 0:
            raise ValueError("quantity must not be zero: an adjustment adds or removes stock")
        return self


# --- envelope -------------------------------------------------------------------------------


class MesEvent(ClosedModel):
    """What every MES event carries. `message_id` is the idempotency key: a resend keeps it."""

    message_id: MessageId
    type: str
    schema_version: Literal["1.0"] = SCHEMA_VERSION
    company: CompanyId
    plant: SiteId
    production_order: OrderNumber | None = None
    sequence: Sequence | None = Field(
        None,
        description=(
            "per production order, 1, 2, 3 ... across all flows; lets the bridge keep the MES order. "
            "At most 2^53 - 1; a number outside 1..2^53 - 1 is parked sequence_out_of_range"
        ),
    )
    occurred_at: Timestamp
    correlation_id: MessageId | None = None
    body: BaseModel


class ProductionStarted(MesEvent):
    type: Literal["production_started"]
    production_order: OrderNumber
    body: ProductionStartedBody = ProductionStartedBody()


class MaterialConsumed(MesEvent):
    type: Literal["material_consumed"]
    production_order: OrderNumber
    body: MaterialConsumedBody


class OperationReported(MesEvent):
    type: Literal["operation_reported"]
    production_order: OrderNumber
    body: OperationReportedBody


class OutputReported(MesEvent):
    type: Literal["output_reported"]
    production_order: OrderNumber
    body: OutputReportedBody


class ProductionEnded(MesEvent):
    type: Literal["production_ended"]
    production_order: OrderNumber
    body: ProductionEndedBody = ProductionEndedBody()


class QualityResult(MesEvent):
    type: Literal["quality_result"]
    body: QualityResultBody


class InventoryMoved(MesEvent):
    type: Literal["inventory_moved"]
    body: InventoryMovedBody


class InventoryAdjusted(MesEvent):
    type: Literal["inventory_adjusted"]
    body: InventoryAdjustedBody


MES_EVENTS: dict[str, type[MesEvent]] = {
    "production_started": ProductionStarted,
    "material_consumed": MaterialConsumed,
    "operation_reported": OperationReported,
    "output_reported": OutputReported,
    "production_ended": ProductionEnded,
    "quality_result": QualityResult,
    "inventory_moved": InventoryMoved,
    "inventory_adjusted": InventoryAdjusted,
}
