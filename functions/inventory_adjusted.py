"""Inventory adjusted: the MES reports stock found or lost in one place; F&O receives a movement
journal (header and one line with the general ledger offset account) in one `$batch` changeset.
The journal number derives from the MES message id, so a repeat finds it already there."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("inventory_adjusted")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["inventory_adjusted"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def inventory_adjusted(message: func.ServiceBusMessage) -> None:
    on_message("inventory_adjusted", message)
