"""Inventory moved: the MES moves material between warehouses, locations or batches; F&O receives a
transfer journal, header and line in one `$batch` changeset, and the genealogy records the batch's
move. The journal number derives from the MES message id, so a repeat finds the journal already
there instead of doubling it."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("inventory_moved")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["inventory_moved"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def inventory_moved(message: func.ServiceBusMessage) -> None:
    on_message("inventory_moved", message)
