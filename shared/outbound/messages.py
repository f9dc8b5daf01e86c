"""What the bridge publishes to MES on the MES topic: work orders, status changes, and the
acknowledgement (or rejection) of each MES message F&O processed. Published as JSON Schema in
schemas/mes-out/."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OUTBOUND_SCHEMA_VERSION: Literal["1.0"] = "1.0"


class Outbound(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    schema_version: Literal["1.0"] = OUTBOUND_SCHEMA_VERSION
    company: str
    production_order: str | None = None
    fo_event_id: str = Field(description="the F&O business event this message comes from")
    fo_control_number: int
    occurred_at: datetime | None = None


class BomLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    line_number: float
    item_number: str = Field(min_length=1)
    quantity: float = Field(ge=0, description="BOMLineQuantity, in `unit`")
    unit: str = Field(min_length=1, description="BOMLineUnitSymbol")
    warehouse: str | None = None
    operation_number: int | None = None
    flushing_principle: str | None = None


class RouteOperation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    operation_number: int
    priority: str
    operation_id: str
    resource: str | None = None
    setup_hours: float | None = None
    process_hours: float | None = None


class WorkOrder(Outbound):
    type: Literal["work_order"] = "work_order"
    production_order: str
    item_number: str = Field(min_length=1)
    quantity: float = Field(gt=0, description="the order's ScheduledQuantity, in `unit`")
    unit: str = Field(min_length=1, description="the item's inventory unit (InventoryUnitSymbol)")
    site: str | None = None
    warehouse: str | None = None
    scheduled_start: str | None = None
    scheduled_end: str | None = None
    status: str
    bom: list[BomLine]
    route: list[RouteOperation]


class OrderStatusChanged(Outbound):
    type: Literal["order_status_changed"] = "order_status_changed"
    production_order: str
    status: str
    previous_status: str | None = None


class MessageOutcome(Outbound):
    """F&O's verdict on one MES message: `accepted` after processing, `rejected` with the infolog.
    The final verdict is the last one: an `accepted` with `supersedes: rejected` follows a rejection
    when an operator re-processed the message in F&O."""

    type: Literal["message_outcome"] = "message_outcome"
    mes_message_id: str
    outcome: Literal["accepted", "rejected"]
    supersedes: Literal["rejected"] | None = Field(
        None, description="set when F&O processed a message it had failed: this outcome replaces the rejection"
    )
    fo_message_type: str
    infolog: str = ""
    correlation_id: str | None = None


OUTBOUND_MODELS: dict[str, type[Outbound]] = {
    "work_order": WorkOrder,
    "order_status_changed": OrderStatusChanged,
    "message_outcome": MessageOutcome,
}
