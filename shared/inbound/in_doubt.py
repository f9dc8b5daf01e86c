"""In doubt, resolved by the bridge where F&O can tell.

A send that got no answer is parked `in_doubt` and indexed by its content, so F&O's processed event
settles it. The bridge also schedules a check of its own, `IN_DOUBT_CHECK_AFTER_S` later (the window
in which the processed event is expected). When the check comes and the row is still in doubt, the
bridge reads F&O's state where one read answers with certainty:

- a production start is applied once the order's `ProductionOrderStatus` is past Released
  (StartedUp, ReportedFinished or Completed): nothing but a start moves it there from Released;
- a production end is applied once the status is Completed.

A read that shows the effect confirms the message as an operator's confirm would (watermark,
genealogy, gap wake-up). A read that does not show it cannot tell "never arrived" from "still queued
in F&O's message processor", so the message stays parked for an operator, with what was read
recorded on the row (`Checked`). No other flow has a read that can tell: a consumption, a route card
or a report as finished leaves no record keyed by the MES message that OData can find.

Field and enum names: ProdProductionOrderHeaderEntity.ProductionOrderStatus (shared/fo/production_order.py)
and its enum ProdStatus (learn.microsoft.com, ProdStatus Enumeration: Created, CostEstimated, Scheduled,
Released, StartedUp, ReportedFinished, Completed), serialized by OData by member name.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.fo import odata
from shared.fo.client import FoApi
from shared.fo.production_order import HEADERS
from shared.inbound.order_gate import Step

#: The statuses that prove the message applied, by the flow's step in the order's life (only the
#: start and the end change the status; a status read cannot decide any other message).
APPLIED_AT: dict[Step, tuple[str, ...]] = {
    Step.START: ("StartedUp", "ReportedFinished", "Completed"),
    Step.END: ("Completed",),
}


@dataclass(frozen=True)
class Reading:
    applied: bool  # True: F&O shows the effect; False: the read cannot tell
    checked: str  # what was read, for the row and the operator


def decidable(step: Step) -> bool:
    return step in APPLIED_AT


def read(fo: FoApi, company: str, step: Step, order: str) -> Reading:
    """Read what F&O shows for `order`; transient faults propagate (the check is retried later)."""
    rows = list(
        fo.query(
            HEADERS,
            company=company,
            where=odata.eq("ProductionOrderNumber", order),
            select=("dataAreaId", "ProductionOrderNumber", "ProductionOrderStatus"),
        )
    )
    status = str(rows[0].get("ProductionOrderStatus") or "") if rows else ""
    checked = f"{HEADERS}({order}).ProductionOrderStatus = {status or 'no such order'}"
    return Reading(status in APPLIED_AT.get(step, ()), checked)
