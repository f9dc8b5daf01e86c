"""Operation reported: the MES reports time and quantities per route operation;
F&O receives a route card (`ProdProductionOrderRouteCard`)."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("operation_reported")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["operation_reported"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def operation_reported(message: func.ServiceBusMessage) -> None:
    on_message("operation_reported", message)
