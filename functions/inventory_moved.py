"""Inventory moved: the MES moves material between warehouses, locations or batches; F&O receives a
transfer journal, header and line in one `$batch` changeset, and the genealogy records the batch's
move. The journal number derives from the MES message id, so a repeat finds the journal already
there instead of doubling it."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import InventoryMoved
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="inventory_moved",
    event=InventoryMoved,
    map=mapping.inventory_moved,
    lineage=mapping.transferred_edges,
    repeatable=True,
)

bp = func.Blueprint()


@bp.function_name("inventory_moved")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def inventory_moved(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
