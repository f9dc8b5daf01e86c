"""Production ended: the MES ends a production order; F&O receives `ProdProductionOrderEnd`.
The order gate makes sure it overtakes nothing still waiting for the order."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("production_ended")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["production_ended"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def production_ended(message: func.ServiceBusMessage) -> None:
    on_message("production_ended", message)
