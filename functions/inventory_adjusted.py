"""Inventory adjusted: the MES reports stock found or lost in one place; F&O receives a movement
journal (header and one line with the general ledger offset account) in one `$batch` changeset.
The journal number derives from the MES message id, so a repeat finds it already there."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import InventoryAdjusted
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="inventory_adjusted",
    event=InventoryAdjusted,
    map=mapping.inventory_adjusted,
    repeatable=True,
)

bp = func.Blueprint()


@bp.function_name("inventory_adjusted")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def inventory_adjusted(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
