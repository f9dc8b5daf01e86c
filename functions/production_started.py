"""Production started: the MES starts a production order on the line;
F&O receives `ProdProductionOrderStart`. A second start would start the quantity again (and
consume what flushes at start), so a start in doubt is parked until F&O says it was processed."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("production_started")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["production_started"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def production_started(message: func.ServiceBusMessage) -> None:
    on_message("production_started", message)
