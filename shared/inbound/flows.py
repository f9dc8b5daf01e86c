"""The inbound flows: each MES event type's message model, its F&O mapping, and what a repeat of
its call would do. The functions look a flow up by name on their first message, so registering
the triggers at start-up needs none of this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.inbound import mapping
from shared.inbound.mapping import FoCall, MappingOptions
from shared.inbound.messages import (
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
from shared.inbound.order_gate import Step
from shared.store.lineage import Edge
from shared.topology import INBOUND_QUEUES


@dataclass(frozen=True)
class Flow:
    """A flow is its message model, its F&O mapping, and what a repeat of its call would do."""

    name: str
    event: type[MesEvent]
    map: Callable[[Any, MappingOptions], FoCall]
    #: True when F&O makes a repeat of the call harmless (a service that dedupes on the MES message
    #: id, a record keyed by it). A SendMessage has no such key: it is never re-sent blindly.
    repeatable: bool
    lineage: Callable[[Any], list[Edge]] = lambda event: []
    #: What the order gate knows of the flow: whether its messages open or close a production order.
    step: Step = Step.DURING

    @property
    def queue(self) -> str:
        return INBOUND_QUEUES[self.name]


_FLOWS = [
    Flow(
        name="production_started",
        event=ProductionStarted,
        map=mapping.production_started,
        repeatable=False,
        step=Step.START,
    ),
    Flow(
        name="material_consumed",
        event=MaterialConsumed,
        map=mapping.material_consumed,
        repeatable=False,
        lineage=mapping.consumed_edges,
    ),
    Flow(name="operation_reported", event=OperationReported, map=mapping.operation_reported, repeatable=False),
    Flow(
        name="output_reported",
        event=OutputReported,
        map=mapping.output_reported,
        repeatable=False,
        lineage=mapping.produced_edges,
    ),
    Flow(name="production_ended", event=ProductionEnded, map=mapping.production_ended, repeatable=False, step=Step.END),
    # A quality result goes to a custom service that dedupes on the MES message id.
    Flow(name="quality_result", event=QualityResult, map=mapping.quality_result, repeatable=True),
    # A transfer journal is keyed by the MES message id: a repeat finds its own journal.
    Flow(
        name="inventory_moved",
        event=InventoryMoved,
        map=mapping.inventory_moved,
        lineage=mapping.transferred_edges,
        repeatable=True,
    ),
    # So is a movement journal.
    Flow(name="inventory_adjusted", event=InventoryAdjusted, map=mapping.inventory_adjusted, repeatable=True),
]

INBOUND_FLOWS: Final[dict[str, Flow]] = {flow.name: flow for flow in _FLOWS}


def step_of(flow: str) -> Step:
    """The gate's step of a flow named on a ledger row (a row of a flow this version no longer has: during)."""
    known = INBOUND_FLOWS.get(flow)
    return known.step if known is not None else Step.DURING
